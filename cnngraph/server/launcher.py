"""Find and build the Neo4j launcher (the Maven project ``server/``) and check Java and Maven.

Where its sources are, in this order: ``CNNGRAPH_SERVER_DIR``; the copy an installed package
carries (``cnngraph/_bundled/server``); the ``server/`` folder of a checkout. A checkout's (or
``CNNGRAPH_SERVER_DIR``'s) launcher is built in place, in its ``target/``, as ``make`` does; an
installed package's is built once into a per-user cache,
``$XDG_CACHE_HOME/cnngraph/launcher/VERSION-DIGEST`` (``~/.cache`` by default), named by the
package version and a digest of the sources, so that changed sources give a new build and an
unchanged one is reused. A build runs in a temporary folder renamed into place when it is complete,
under a file lock, so that two starts never build at once and a killed build leaves nothing half
made. The class path Maven writes names the jars in the local Maven repository (``~/.m2``); a
build whose jars are gone is made again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cnngraph import __version__
from cnngraph.bundled import BUNDLE_DIR, CHECKOUT_DIR, is_bundled
from cnngraph.errors import ConfigError, ServerError

SERVER_DIR_ENV = "CNNGRAPH_SERVER_DIR"
JAVA_MIN = 17
BUILD_TIMEOUT = 1800.0
"""Seconds one Maven build may take (the first one downloads about 150 MB)."""
LOCK_TIMEOUT = 2400.0
"""Seconds a start waits for another start's build before it gives up."""

StageFn = Callable[[str, str], None]
"""Told ``(stage, message)`` as a start goes on: ``build``, ``wait-build`` here."""

_ELSEWHERE = (
    "or run any Neo4j 5 instead and point NEO4J_URI (and NEO4J_PASSWORD) at it: with Docker, "
    "'docker compose up --wait' with cnngraph's docker-compose.yml, or 'docker run -p 127.0.0.1:7687:7687 "
    "-e NEO4J_AUTH=neo4j/YOUR-PASSWORD neo4j:5.26-community'"
)
_INSTALL_JDK = (
    "install a JDK 17 or newer (Debian/Ubuntu: 'apt install openjdk-17-jdk-headless'; Fedora: "
    "'dnf install java-17-openjdk-devel'; macOS: 'brew install openjdk@17')"
)


def _say(on_stage: StageFn | None, stage: str, message: str) -> None:
    if on_stage is not None:
        on_stage(stage, message)


# ------------------------------------------------------------------------------------ where
def default_launcher_dir() -> Path:
    """``CNNGRAPH_SERVER_DIR``, else the installed package's copy, else the checkout's ``server/``."""
    env = os.environ.get(SERVER_DIR_ENV)
    if env:
        return Path(env)
    bundled = BUNDLE_DIR / "server"
    if (bundled / "pom.xml").is_file():
        return bundled
    return CHECKOUT_DIR / "server"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cnngraph/launcher`` (an absolute XDG_CACHE_HOME only), else ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "cnngraph" / "launcher"


def source_files(root: Path) -> list[Path]:
    """The launcher's sources: ``pom.xml`` and every file under ``src/``."""
    return [root / "pom.xml", *sorted(p for p in (root / "src").rglob("*") if p.is_file())]


def sources_digest(root: Path) -> str:
    """A digest of the sources' relative paths and contents (16 hex digits)."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_build_dir(root: Path) -> Path:
    """Where the launcher built from the sources in ``root`` lives in the cache."""
    return cache_dir() / f"{__version__}-{sources_digest(root)}"


# ------------------------------------------------------------------------------------ build
def launcher_classpath(
    launcher_dir: Path | None = None, rebuild: bool = False, on_stage: StageFn | None = None
) -> str:
    """The class path to run the launcher, building it with Maven first when needed."""
    root = launcher_dir or default_launcher_dir()
    if not (root / "pom.xml").is_file():
        raise ConfigError(
            f"no launcher project at '{root}' (no pom.xml): reinstall cnngraph, or set {SERVER_DIR_ENV} "
            "to the 'server' folder of a cnngraph checkout"
        )
    if is_bundled(root):
        return cached_classpath(root, rebuild, on_stage)
    return _in_place_classpath(root, rebuild, on_stage)


def _in_place_classpath(root: Path, rebuild: bool, on_stage: StageFn | None) -> str:
    """A checkout's launcher, built in its own ``target/`` when the sources are newer."""
    cp_file = root / "target" / "classpath.txt"

    def current() -> str | None:
        built = _built_classpath(root)
        if built is None or rebuild:
            return None
        newest = max(s.stat().st_mtime for s in source_files(root))
        return built if newest <= cp_file.stat().st_mtime else None

    found = current()
    if found is not None:
        return found
    (root / "target").mkdir(parents=True, exist_ok=True)
    with _build_lock(root / "target", on_stage):
        found = current()
        if found is None:
            _maven_build(root, on_stage)
            cp_file.touch()  # Maven leaves an unchanged class path file as it was
            found = _built_classpath(root)
    if found is None:
        raise ServerError(
            f"the Maven build in '{root}' left no complete class path (target/classes, "
            "target/classpath.txt or a jar it names is missing); run 'mvn package' there"
        )
    return found


def cached_classpath(root: Path, rebuild: bool = False, on_stage: StageFn | None = None) -> str:
    """The launcher built from the sources in ``root`` (an installed package's), once, into the
    per-user cache: reused while its sources and jars are there, built again when they change."""
    final = cached_build_dir(root)
    found = None if rebuild else _built_classpath(final)
    if found is not None:
        return found
    folder = final.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder, on_stage):
        found = None if rebuild else _built_classpath(final)  # another start may have built it
        if found is not None:
            return found
        for leftover in folder.glob(".build-*"):  # a build killed before its rename (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
        try:
            shutil.copy2(root / "pom.xml", work / "pom.xml")
            shutil.copytree(root / "src", work / "src")
            _maven_build(work, on_stage, shown=final)
            if _built_classpath(work) is None:
                raise ServerError(
                    f"the Maven build of the launcher (in {work}) left no complete class path "
                    "(target/classes, target/classpath.txt or a jar it names is missing)"
                )
            if final.exists():  # an incomplete build, or one whose jars are gone
                stale = folder / f".build-stale-{os.getpid()}"
                os.rename(final, stale)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = _built_classpath(final)
    if found is None:
        raise ServerError(
            f"the launcher built into '{final}' is incomplete; remove that folder and start again"
        )
    return found


def _built_classpath(project: Path) -> str | None:
    """``classes:jar:jar...`` of a finished build in ``project``, or None when any part is missing."""
    classes = project / "target" / "classes"
    try:
        jars = (project / "target" / "classpath.txt").read_text().strip()
    except OSError:
        return None
    if not classes.is_dir() or not jars or not all(Path(j).is_file() for j in jars.split(os.pathsep)):
        return None
    return f"{classes}{os.pathsep}{jars}"


@contextmanager
def _build_lock(folder: Path, on_stage: StageFn | None, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive lock on ``folder/.build.lock`` with a bounded wait; the holder's PID is in it."""
    path = folder / ".build.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(path)
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"another cnngraph (pid {holder}) has been building the Neo4j launcher in '{folder}' "
                        f"for over {timeout / 60:.0f} minutes; let it finish or stop it, then start again"
                    ) from None
                if not told:
                    _say(
                        on_stage,
                        "wait-build",
                        f"waiting for another cnngraph (pid {holder}) that builds the launcher",
                    )
                    told = True
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _maven_build(project: Path, on_stage: StageFn | None, shown: Path | None = None) -> None:
    """``mvn package`` in ``project``; ``shown`` names the build's final place in messages."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(
            "Maven is not installed (no 'mvn' on PATH); 'cnngraph server start' builds its Neo4j launcher "
            "with it once: install Maven 3.8 or newer (Debian/Ubuntu: 'apt install maven'; macOS: "
            f"'brew install maven'), {_ELSEWHERE}"
        )
    require_jdk(require_java())
    _say(
        on_stage,
        "build",
        f"building the Neo4j launcher with Maven into {shown or project} (once; the first build downloads "
        "about 150 MB of Neo4j jars into ~/.m2)",
    )
    try:
        proc = subprocess.run(
            [mvn, "-B", "-q", "package", "-DskipTests"],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ServerError(
            f"building the Neo4j launcher with Maven took over {BUILD_TIMEOUT / 60:.0f} minutes "
            f"(in {project}); check the network to Maven Central and start again"
        ) from None
    if proc.returncode != 0:
        tail = last_lines(proc.stdout + proc.stderr, 8)
        raise ServerError(
            f"building the Neo4j launcher with Maven failed (in {project}; it needs Maven Central the first "
            f"time): {tail}"
        )


# ------------------------------------------------------------------------------------ java
def require_java() -> str:
    """The ``java`` to run the launcher with: on PATH and version 17 or newer, or a one-line error."""
    java = shutil.which("java")
    if java is None:
        raise ConfigError(
            f"Java is not installed (no 'java' on PATH; the local Neo4j 5.26 needs Java {JAVA_MIN}+): "
            f"{_INSTALL_JDK}, {_ELSEWHERE}"
        )
    major = java_major(java)
    if major is not None and major < JAVA_MIN:
        raise ConfigError(
            f"Java {major} is on PATH ('{java}'), but the local Neo4j 5.26 needs Java {JAVA_MIN} or newer: "
            f"{_INSTALL_JDK} and put it first on PATH, {_ELSEWHERE}"
        )
    return java


def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for ``1.8.0``), or None when it says none."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_major(proc.stderr + proc.stdout)


def parse_java_major(text: str) -> int | None:
    """The major version in the output of ``java -version``."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2]) if major == 1 and match[2] else major


def require_jdk(java: str) -> None:
    """Maven compiles the launcher: a JDK's ``javac`` must be there, not only a runtime's ``java``."""
    home = os.environ.get("JAVA_HOME")
    candidates = [shutil.which("javac"), Path(os.path.realpath(java)).parent / "javac"]
    if home:
        candidates.append(Path(home) / "bin" / "javac")
    if not any(c is not None and Path(c).is_file() for c in candidates):
        raise ConfigError(
            f"Java is installed without its compiler ('javac'), which Maven needs to build the launcher "
            f"once: {_INSTALL_JDK}, {_ELSEWHERE}"
        )


def last_lines(text: str, n: int) -> str:
    """The last ``n`` non-blank lines of ``text`` joined by ' | '."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "(empty)"
