"""A local Neo4j 5.26 server for people without Docker: start, stop, status.

The launcher is the small Maven project in ``server/`` (one Java class running an embedded
Neo4j with Bolt, HTTP and Neo4j Browser), found and built by :mod:`cnngraph.server.launcher`
(in a checkout's ``server/target``, or once into a per-user cache for an installed package).
``start`` runs it in the background with its PID file, state file, log and password in a state
directory, and returns once it is ready.

Safe by default: auth is on with a password generated at the first start and kept in the state
directory (``neo4j.password``, mode 0600, made so again at every start; the directory and the
store are 0700), so that neither
another user nor a web page open in a browser on this machine can run Cypher; cross-origin HTTP is
limited to the server's own origin. Auth goes off only when asked (``auth=False``).

One server per state directory: starts on one state directory are serialised by a file lock;
readiness is read from a pipe of the child itself, never from a log that another start may share;
``stop`` and ``status`` act only on a process whose command line names this state directory's
store, never on a PID that now belongs to something else. A store that another process holds open
is refused in one line; a store left by a server that did not stop cleanly is said to be recovering.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from cnngraph.errors import ConfigError, ServerError
from cnngraph.processes import process_alive
from cnngraph.server.launcher import (
    StageFn,
    default_launcher_dir,
    last_lines,
    launcher_classpath,
    require_java,
)
from cnngraph.settings import PASSWORD_FILE, SERVER_START_TIMEOUT, STATE_FILE, default_state_dir

LAUNCHER_CLASS = "org.cnngraph.server.Launcher"
READY_MARK = "cnngraph-server: ready"
JVM_FLAGS = (
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
)
DEFAULT_TIMEOUT = SERVER_START_TIMEOUT
STORE_LOCKED_MARKS = ("FileLockException", "has been locked by another process")
"""What the launcher's log says when another process holds the store."""
RECOVERY_START = re.compile(r"[Rr]ecovery (is )?required")
RECOVERY_PROGRESS = re.compile(r"\[o\.n\.k\.r\.Recovery\].*?(\d+)% completed")

__all__ = [
    "ServerConfig",
    "ServerInfo",
    "StageFn",
    "default_launcher_dir",
    "default_state_dir",
    "free_port",
    "launcher_classpath",
    "process_alive",
    "start",
    "status",
    "stop",
    "stored_password",
]


@dataclass(frozen=True)
class ServerConfig:
    """How to run the local server. The password travels in the environment only, never in argv.

    With ``auth`` on and no ``password``, the stored one is used (generated at the first start).
    """

    state_dir: Path
    host: str = "127.0.0.1"
    bolt_port: int = 7687
    http_port: int = 7474
    password: str | None = None
    heap: str = "1g"
    pagecache: str = "512m"
    launcher_dir: Path | None = None
    auth: bool = True

    @property
    def store_dir(self) -> Path:
        return self.state_dir / "store"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "neo4j.pid"

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.state_dir / "neo4j.log"

    @property
    def password_file(self) -> Path:
        return self.state_dir / PASSWORD_FILE

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "server.lock"

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
    ready: bool = True
    recovered: bool = False
    """Neo4j recovered the store at this start (the server before it did not stop cleanly)."""


# ------------------------------------------------------------------------------------------ start
def start(
    config: ServerConfig, timeout: float = DEFAULT_TIMEOUT, on_stage: StageFn | None = None
) -> ServerInfo:
    """Start the server in the background and wait until it is ready and Bolt answers.

    When it is not ready within ``timeout`` (a large store recovering after a crash), it is left
    running and a :class:`ServerError` says so; Ctrl-C during the wait stops it. ``on_stage`` is
    told ``(stage, message)`` as the start goes on: ``build`` and ``wait-build`` (the launcher),
    ``unclean`` (the last server of this store did not stop cleanly), ``start``, ``recovery`` (Neo4j
    recovers the store) and ``recovery-progress``.
    """
    if timeout <= 0:
        raise ConfigError(f"the start timeout must be positive, got {timeout}")
    _private_dir(config.state_dir)
    with _start_lock(config):
        return _start_locked(config, timeout, on_stage)


def _start_locked(config: ServerConfig, timeout: float, on_stage: StageFn | None) -> ServerInfo:
    say: StageFn = on_stage or (lambda stage, message: None)
    previous = _recorded_pid(config)
    running = status(config)
    if running is not None:
        raise ServerError(
            f"a cnngraph Neo4j already runs from '{config.state_dir}' (pid {running.pid}) at "
            f"{running.bolt_uri}; stop it with 'cnngraph server stop'"
        )
    _refuse_a_store_in_use(config)
    for port in (config.bolt_port, config.http_port):
        if not port_is_free(config.host, port):
            raise ServerError(
                f"port {port} on {config.host} is already in use (another Neo4j?); "
                "stop that process or choose other ports with --bolt-port/--http-port"
            )
    java = require_java()
    classpath = launcher_classpath(config.launcher_dir, on_stage=on_stage)
    _owner_only(config.state_dir)
    password = _password_for(config)
    _private_dir(config.store_dir)
    if previous is not None:  # its PID file is still there, its process is gone: killed or crashed
        say(
            "unclean",
            f"the last Neo4j of this store (pid {previous}) did not stop cleanly: Neo4j checks the store "
            "and recovers it if needed (minutes for a large store)",
        )
    say("start", "starting Neo4j")
    env = dict(os.environ)
    env.pop("NEO4J_PASSWORD", None)
    if password is not None:
        env["NEO4J_PASSWORD"] = password
    ready_read, ready_write = os.pipe()
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
        "--ready-fd", str(ready_write),
    ]  # fmt: skip
    began = time.time()
    log_offset = config.log_file.stat().st_size if config.log_file.exists() else 0
    debug = _DebugLog(config.store_dir / "logs" / "debug.log")
    try:
        log_fd = os.open(config.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(config.log_file, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=(ready_write,),
                start_new_session=True,
            )
    finally:
        os.close(ready_write)
    info = ServerInfo(
        pid=proc.pid,
        bolt_uri=config.bolt_uri,
        browser_url=config.browser_url,
        store=str(config.store_dir),
        auth=config.auth,
        started=began,
        ready=False,
    )
    _write_private(config.pid_file, f"{proc.pid}\n")
    _write_private(config.state_file, json.dumps(asdict(info), indent=2))
    watch = _RecoveryWatch(debug, say)
    try:
        with os.fdopen(ready_read, "rb") as ready:
            _wait_until_ready(config, proc, ready, timeout, password, log_offset, watch.poll)
        watch.poll()
    except _StillStarting:
        raise ServerError(
            f"Neo4j (pid {proc.pid}) is not ready after {timeout:.0f} s and keeps running: a large store "
            f"can take minutes to recover after a crash ({_recovery_hint(config)}). 'cnngraph server "
            f"status' says when it answers, 'cnngraph server stop' stops it; log {config.log_file}"
        ) from None
    except BaseException:
        _terminate(proc.pid, 20.0)
        config.pid_file.unlink(missing_ok=True)
        config.state_file.unlink(missing_ok=True)
        raise
    info = ServerInfo(
        **{
            **asdict(info),
            "ready": True,
            "startup_seconds": round(time.time() - began, 2),
            "recovered": watch.recovered,
        }
    )
    _write_private(config.state_file, json.dumps(asdict(info), indent=2))
    return info


class _StillStarting(Exception):
    """The child runs but did not say it is ready in time."""


def _wait_until_ready(
    config: ServerConfig,
    proc: subprocess.Popen[bytes],
    ready: BinaryIO,
    timeout: float,
    password: str | None,
    log_offset: int,
    tick: Callable[[], None],
) -> None:
    """Read the child's ready pipe until its ready line (printed after the password is set), then
    wait for Bolt to answer; ``tick`` runs on every turn. A child that exits first is an error:
    one line for a store another process holds, else the log's tail."""
    from neo4j import GraphDatabase
    from neo4j import exceptions as neo4j_exc

    fd = ready.fileno()
    auth = ("neo4j", password) if password else None
    deadline = time.time() + timeout
    seen = b""
    said_ready = False
    while time.time() < deadline:
        tick()
        if not said_ready:
            readable, _, _ = select.select([fd], [], [], 0.3)
            if readable:
                chunk = os.read(fd, 4096)
                seen += chunk
                said_ready = READY_MARK.encode() in seen
                if not chunk and not said_ready:  # the child closed its end: it exited or is exiting
                    proc.wait(timeout=30)
        if proc.poll() is not None:
            log = _read_log(config, log_offset)
            if any(mark in log for mark in STORE_LOCKED_MARKS):
                raise ServerError(_store_in_use_message(config, _store_lock_holder(config)))
            raise ServerError(
                f"Neo4j exited during start (code {proc.returncode}); log {config.log_file}: "
                f"{last_lines(log, 6)}"
            )
        if said_ready:
            try:
                with GraphDatabase.driver(config.bolt_uri, auth=auth) as driver:
                    driver.verify_connectivity()
                return
            except (neo4j_exc.ServiceUnavailable, OSError):
                time.sleep(0.3)
    raise _StillStarting


class _DebugLog:
    """New lines of Neo4j's ``debug.log`` since this object was made (a rotated log starts over)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.partial = b""

    def new_lines(self) -> list[str]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:
                self.offset, self.partial = 0, b""
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(4 << 20)
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines]


class _RecoveryWatch:
    """Says when Neo4j recovers the store (its debug log: "Recovery required", "NN% completed")."""

    def __init__(self, debug: _DebugLog, say: StageFn) -> None:
        self.debug = debug
        self.say = say
        self.recovered = False

    def poll(self) -> None:
        for line in self.debug.new_lines():
            if RECOVERY_START.search(line):
                if not self.recovered:
                    self.say(
                        "recovery",
                        "Neo4j is recovering the store from its transaction logs (the last server was "
                        "killed or crashed); this takes minutes for a large store",
                    )
                self.recovered = True
            elif self.recovered and (done := RECOVERY_PROGRESS.search(line)):
                self.say("recovery-progress", f"recovering the store: {done[1]}% of the transaction logs")


def _recovery_hint(config: ServerConfig) -> str:
    """What the store's debug log says about recovery, when it says anything."""
    debug = config.store_dir / "logs" / "debug.log"
    try:
        with open(debug, "rb") as fh:
            fh.seek(max(0, debug.stat().st_size - 65536))
            lines = [line for line in fh.read().decode(errors="replace").splitlines() if "ecovery" in line]
    except OSError:
        return "no recovery noted yet"
    return f"its log says: {lines[-1].strip()[-160:]}" if lines else "no recovery noted yet"


# ------------------------------------------------------------------------- a store held elsewhere
def _store_lock_file(config: ServerConfig) -> Path:
    return config.store_dir / "data" / "databases" / "store_lock"


def _refuse_a_store_in_use(config: ServerConfig) -> None:
    """One line when another process holds the store's lock (Neo4j takes it with a POSIX record lock,
    as ``lockf`` does): probed before a JVM is started; a start that races one still reads the lock
    failure from the launcher's log."""
    path = _store_lock_file(config)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # no store yet, or not ours to probe: Neo4j will say
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            raise ServerError(_store_in_use_message(config, _store_lock_holder(config))) from None
        return
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _store_in_use_message(config: ServerConfig, holder: int | None) -> str:
    who = f"another process (pid {holder})" if holder is not None else "another process"
    return (
        f"the store '{config.store_dir}' is open in {who}, and one store can be used by one Neo4j at a "
        f"time: stop that server (a cnngraph one with 'cnngraph server stop --state-dir' naming its state "
        f"directory, else by its pid), or start with another --state-dir"
    )


def _store_lock_holder(config: ServerConfig) -> int | None:
    """The PID that holds the store's lock, from ``/proc/locks`` (Linux), or None."""
    try:
        st = os.stat(_store_lock_file(config))
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return int(fields[4])
        except ValueError:
            continue
    return None


# ------------------------------------------------------------------------------------- password
def _password_for(config: ServerConfig) -> str | None:
    """The password to start with: given, else stored, else generated; stored owner-only either way."""
    if not config.auth:
        return None
    password = config.password or stored_password(config)
    if password is None:
        password = secrets.token_urlsafe(18)
    if len(password) < 8:
        raise ConfigError("the Neo4j password must have at least 8 characters")
    if stored_password(config) != password:
        _write_private(config.password_file, password + "\n")
    return password


def stored_password(config: ServerConfig) -> str | None:
    """The password kept in the state directory, or None."""
    try:
        return config.password_file.read_text().strip() or None
    except OSError:
        return None


@contextmanager
def _start_lock(config: ServerConfig) -> Iterator[None]:
    """An exclusive lock on the state directory: one start at a time (a second waits for the first)."""
    fd = os.open(config.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it owner-only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _owner_only(state_dir: Path) -> None:
    """Make the files a start keeps in ``state_dir`` (the password first) owner-only again: one that
    was copied, restored from a backup or edited with a looser mode becomes 0600."""
    for name in (PASSWORD_FILE, STATE_FILE, "neo4j.pid", "neo4j.log", "server.lock"):
        path = state_dir / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISREG(mode) and mode & 0o077:
            try:
                os.chmod(path, 0o600)
            except OSError as e:
                raise ServerError(
                    f"'{path}' is readable by others (mode {stat.S_IMODE(mode):04o}) and cannot be made "
                    f"owner-only ({e.strerror}); fix its owner or mode (chmod 600)"
                ) from None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to an owner-only file, atomically (a reader sees the old or the new text)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ stop/status
def status(config: ServerConfig) -> ServerInfo | None:
    """The running server of this state directory, or None. Clears a stale PID file."""
    pid = _recorded_pid(config)
    if pid is None:
        return None
    if not is_our_launcher(pid, config):
        config.pid_file.unlink(missing_ok=True)
        return None
    try:
        data = json.loads(config.state_file.read_text())
        info = ServerInfo(**data)
        if info.pid == pid:
            return info
    except (OSError, ValueError, TypeError):
        pass
    return ServerInfo(pid, config.bolt_uri, config.browser_url, str(config.store_dir), config.auth, 0.0)


def stop(config: ServerConfig, timeout: float = 120.0) -> int | None:
    """Stop the server of this state directory; returns its PID, or None if none was running.

    Only a process whose command line names this state directory's store is ever signalled. No
    lock: a stop must work while a start still waits for its server (which then reports its exit).
    """
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


def _recorded_pid(config: ServerConfig) -> int | None:
    try:
        return int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def is_our_launcher(pid: int, config: ServerConfig) -> bool:
    """Whether ``pid`` runs the launcher on this state directory's store (``--home STORE``)."""
    if not process_alive(pid):
        return False
    args = _command_line(pid)
    if args is None or LAUNCHER_CLASS not in args:
        return False
    try:
        home = args[args.index("--home") + 1]
    except (ValueError, IndexError):
        return False
    return os.path.realpath(home) == os.path.realpath(config.store_dir)


def _command_line(pid: int) -> list[str] | None:
    """The process's arguments: from /proc on Linux, else from ``ps`` (split on spaces)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
        except OSError:
            return None
    ps = shutil.which("ps")
    if ps is None:
        return None
    proc = subprocess.run([ps, "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return proc.stdout.split() if proc.returncode == 0 else None


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
    """The server's log from ``offset`` (every start of this state directory appends to it)."""
    try:
        with open(config.log_file, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
