"""A local Neo4j 5.26 server for people without Docker: build the launcher, start, stop, status.

The launcher is the small Maven project in ``server/`` (one Java class running an embedded
Neo4j with Bolt, HTTP and Neo4j Browser). ``start`` runs it in the background with its PID file,
state file and log in a state directory, and returns once Bolt answers. ``stop`` stops it by the
PID it recorded, never by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cnngraph.errors import ConfigError, ServerError

LAUNCHER_CLASS = "org.cnngraph.server.Launcher"
READY_MARK = "cnngraph-server: ready"
JVM_FLAGS = (
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
)


def default_state_dir() -> Path:
    """``CNNGRAPH_STATE_DIR``, else ``~/.local/state/cnngraph``."""
    env = os.environ.get("CNNGRAPH_STATE_DIR")
    return Path(env) if env else Path.home() / ".local" / "state" / "cnngraph"


def default_launcher_dir() -> Path:
    """``CNNGRAPH_SERVER_DIR``, else the ``server/`` folder beside the package in a checkout."""
    env = os.environ.get("CNNGRAPH_SERVER_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "server"


@dataclass(frozen=True)
class ServerConfig:
    """How to run the local server. The password (auth on) travels in the environment only."""

    state_dir: Path
    host: str = "127.0.0.1"
    bolt_port: int = 7687
    http_port: int = 7474
    password: str | None = None
    heap: str = "1g"
    pagecache: str = "512m"
    launcher_dir: Path | None = None

    @property
    def auth(self) -> bool:
        return self.password is not None

    @property
    def store_dir(self) -> Path:
        return self.state_dir / "store"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "neo4j.pid"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "neo4j.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "neo4j.log"

    @property
    def bolt_uri(self) -> str:
        return f"bolt://{self.host}:{self.bolt_port}"

    @property
    def browser_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/browser/"


@dataclass(frozen=True)
class ServerInfo:
    """A running server as recorded in its state file."""

    pid: int
    bolt_uri: str
    browser_url: str
    store: str
    auth: bool
    started: float
    startup_seconds: float = 0.0


# ------------------------------------------------------------------------------------------ build
def launcher_classpath(launcher_dir: Path | None = None, rebuild: bool = False) -> str:
    """The class path to run the launcher, building it with Maven when sources are newer."""
    root = launcher_dir or default_launcher_dir()
    pom = root / "pom.xml"
    if not pom.is_file():
        raise ConfigError(
            f"no launcher project at '{root}'; run from a cnngraph checkout or set CNNGRAPH_SERVER_DIR"
        )
    classes = root / "target" / "classes"
    cp_file = root / "target" / "classpath.txt"
    sources = [pom, *(root / "src").rglob("*.java")]
    built = cp_file.is_file() and classes.is_dir()
    if rebuild or not built or max(s.stat().st_mtime for s in sources) > cp_file.stat().st_mtime:
        _maven_build(root)
    return f"{classes}{os.pathsep}{cp_file.read_text().strip()}"


def _maven_build(root: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(
            "Maven ('mvn') is not installed; install Maven 3.8+ or give NEO4J_URI of a running Neo4j"
        )
    _require_java()
    proc = subprocess.run(
        [mvn, "-B", "-q", "package", "-DskipTests"], cwd=root, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = _last_lines(proc.stdout + proc.stderr, 8)
        raise ServerError(f"building the Neo4j launcher with Maven failed (in {root}): {tail}")


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ConfigError("Java is not installed; install OpenJDK 17 or give NEO4J_URI of a running Neo4j")
    return java


# ------------------------------------------------------------------------------------------ start
def start(config: ServerConfig, timeout: float = 180.0) -> ServerInfo:
    """Start the server in the background and wait until Bolt answers."""
    running = status(config)
    if running is not None:
        raise ServerError(
            f"a cnngraph Neo4j already runs from '{config.state_dir}' (pid {running.pid}) at "
            f"{running.bolt_uri}; stop it with 'cnngraph server stop'"
        )
    for port in (config.bolt_port, config.http_port):
        if not port_is_free(config.host, port):
            raise ServerError(
                f"port {port} on {config.host} is already in use (another Neo4j?); "
                "stop that process or choose other ports with --bolt-port/--http-port"
            )
    java = _require_java()
    classpath = launcher_classpath(config.launcher_dir)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("NEO4J_PASSWORD", None)
    if config.password is not None:
        env["NEO4J_PASSWORD"] = config.password
    cmd = [
        java,
        f"-Xms{config.heap}",
        f"-Xmx{config.heap}",
        *JVM_FLAGS,
        "-cp",
        classpath,
        LAUNCHER_CLASS,
        "--home", str(config.store_dir),
        "--host", config.host,
        "--bolt-port", str(config.bolt_port),
        "--http-port", str(config.http_port),
        "--auth", "true" if config.auth else "false",
        "--pagecache", config.pagecache,
    ]  # fmt: skip
    began = time.time()
    log_offset = config.log_file.stat().st_size if config.log_file.exists() else 0
    with open(config.log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    config.pid_file.write_text(f"{proc.pid}\n")
    try:
        _wait_for_bolt(config, proc, log_offset, timeout)
    except BaseException:
        _terminate(proc.pid, 20.0)
        config.pid_file.unlink(missing_ok=True)
        raise
    info = ServerInfo(
        pid=proc.pid,
        bolt_uri=config.bolt_uri,
        browser_url=config.browser_url,
        store=str(config.store_dir),
        auth=config.auth,
        started=began,
        startup_seconds=round(time.time() - began, 2),
    )
    config.state_file.write_text(json.dumps(asdict(info), indent=2))
    return info


def _wait_for_bolt(
    config: ServerConfig, proc: subprocess.Popen[bytes], log_offset: int, timeout: float
) -> None:
    """Wait for the launcher's ready line (printed after the password is set), then for Bolt."""
    from neo4j import GraphDatabase
    from neo4j import exceptions as neo4j_exc

    auth = ("neo4j", config.password) if config.password else None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(
                f"Neo4j exited during start (code {proc.returncode}); log {config.log_file}: "
                f"{_last_lines(_read_log(config, log_offset), 6)}"
            )
        if READY_MARK in _read_log(config, log_offset):
            try:
                with GraphDatabase.driver(config.bolt_uri, auth=auth) as driver:
                    driver.verify_connectivity()
                return
            except (neo4j_exc.ServiceUnavailable, OSError):
                pass
        time.sleep(0.3)
    raise ServerError(
        f"Neo4j did not answer on {config.bolt_uri} within {timeout:.0f} s; log {config.log_file}: "
        f"{_last_lines(_read_log(config, log_offset), 6)}"
    )


# ------------------------------------------------------------------------------------ stop/status
def status(config: ServerConfig) -> ServerInfo | None:
    """The running server of this state directory, or None. Clears a stale PID file."""
    pid = _recorded_pid(config)
    if pid is None:
        return None
    if not _is_our_launcher(pid):
        config.pid_file.unlink(missing_ok=True)
        return None
    try:
        data = json.loads(config.state_file.read_text())
        return ServerInfo(**data)
    except (OSError, ValueError, TypeError):
        return ServerInfo(pid, config.bolt_uri, config.browser_url, str(config.store_dir), config.auth, 0.0)


def stop(config: ServerConfig, timeout: float = 60.0) -> int | None:
    """Stop the server by its recorded PID; returns that PID, or None if none was running."""
    info = status(config)
    if info is None:
        return None
    _terminate(info.pid, timeout)
    config.pid_file.unlink(missing_ok=True)
    config.state_file.unlink(missing_ok=True)
    return info.pid


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process_alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while process_alive(pid):
        time.sleep(0.1)


def process_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recorded_pid(config: ServerConfig) -> int | None:
    try:
        return int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_launcher(pid: int) -> bool:
    if not process_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return LAUNCHER_CLASS.encode() in cmdline.read_bytes()
        except OSError:
            return False
    return True


def server_version(bolt_uri: str, password: str | None) -> str:
    """The Neo4j version string that the running server at ``bolt_uri`` reports."""
    from neo4j import GraphDatabase

    auth = ("neo4j", password) if password else None
    with GraphDatabase.driver(bolt_uri, auth=auth) as driver:
        records, _, _ = driver.execute_query("CALL dbms.components() YIELD name, versions, edition RETURN *")
    row = records[0]
    return f"{row['name']} {row['versions'][0]} {row['edition']}"


# ------------------------------------------------------------------------------------------ utils
def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _read_log(config: ServerConfig, offset: int = 0) -> str:
    try:
        with open(config.log_file, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _last_lines(text: str, n: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "(empty)"
