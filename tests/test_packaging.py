"""The package as users install it: the wheel and sdist carry the launcher and the method, one
version everywhere, the launcher built once into a per-user cache, clear lines for missing tools,
and ``cnngraph method``. The whole pipeline from an installed wheel is ``scripts/wheel_smoke.sh``
(``make test`` runs it).

The cache tests put a stand-in ``mvn`` first on PATH (a script that writes what Maven writes,
``target/classes`` and ``target/classpath.txt``, and counts its runs): what is tested is when a
build happens, where it goes and that it is atomic, not Maven; the real Maven build from the
wheel's sources runs in the smoke script.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import stat
import subprocess
import sys
import tarfile
import threading
import tomllib
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cnngraph
from cnngraph import bundled
from cnngraph.errors import ConfigError, ServerError
from cnngraph.server import launcher

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# ------------------------------------------------------------------------------------ version
def test_one_version_everywhere(cli_app) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cnngraph.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", cnngraph.__version__)
    assert importlib.metadata.version("cnngraph") == cnngraph.__version__
    result = runner.invoke(cli_app, ["--version"])
    assert result.exit_code == 0 and result.output == f"cnngraph {cnngraph.__version__}\n"


# ------------------------------------------------------------------------------ wheel and sdist
@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel (built from the sdist), as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_the_wheel_carries_the_launcher_sources_and_the_method(dist: Path) -> None:
    (wheel,) = dist.glob("cnngraph-*.whl")
    assert wheel.name.startswith(f"cnngraph-{cnngraph.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        carried = {n.removeprefix("cnngraph/_bundled/") for n in names if n.startswith("cnngraph/_bundled/")}
        sources = {p.relative_to(ROOT).as_posix() for p in launcher.source_files(ROOT / "server")}
        assert carried == sources | {"docs/METHOD.md"}
        for rel in carried:
            assert zf.read(f"cnngraph/_bundled/{rel}") == (ROOT / rel).read_bytes(), rel
        assert not any("target/" in n for n in names)
        assert {"cnngraph/queries/scores.cypher", "cnngraph/cli/main.py"} <= names
        entry_points = zf.read(f"cnngraph-{cnngraph.__version__}.dist-info/entry_points.txt").decode()
        assert "cnngraph = cnngraph.cli.main:main" in entry_points


def test_the_sdist_carries_the_launcher_project_without_its_build(dist: Path) -> None:
    (sdist,) = dist.glob("cnngraph-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"setup.py", "pyproject.toml", "server/pom.xml", "docs/METHOD.md"} <= names
    assert "server/src/main/java/org/cnngraph/server/Launcher.java" in names
    assert not any(n.startswith("server/target") for n in names)


# ------------------------------------------------------------------------- where the launcher is
def test_launcher_sources_in_a_checkout_and_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CNNGRAPH_SERVER_DIR", raising=False)
    if bundled.BUNDLE_DIR.exists():
        pytest.skip("an installed package: its bundled sources come first")
    assert launcher.default_launcher_dir() == ROOT / "server"
    assert not bundled.is_bundled(ROOT / "server")
    monkeypatch.setenv("CNNGRAPH_SERVER_DIR", str(tmp_path))
    assert launcher.default_launcher_dir() == tmp_path
    with pytest.raises(ConfigError, match=r"no launcher project .* CNNGRAPH_SERVER_DIR"):
        launcher.launcher_classpath()


def test_the_cache_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert launcher.cache_dir() == tmp_path / "xdg" / "cnngraph" / "launcher"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert launcher.cache_dir() == tmp_path / "home" / ".cache" / "cnngraph" / "launcher"


# ------------------------------------------------------------------ the cached build (stand-in mvn)
FAKE_MVN = """#!/bin/sh
# Stands in for 'mvn -B -q package': counts its runs, then writes what Maven writes.
echo "$$" >> "{count}"
sleep "${{FAKE_MVN_SLEEP:-0}}"
if [ -n "$FAKE_MVN_FAIL" ]; then echo "[ERROR] Could not resolve dependencies"; exit 1; fi
mkdir -p target/classes
printf '%s' "{jar}" > target/classpath.txt
"""


@pytest.fixture
def fake_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A stand-in ``mvn`` first on PATH, a fresh XDG cache, and a launcher project to build."""
    bin_dir, jar, count = tmp_path / "bin", tmp_path / "m2" / "neo4j.jar", tmp_path / "mvn-runs"
    bin_dir.mkdir()
    jar.parent.mkdir()
    jar.write_bytes(b"PK")
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(count=count, jar=jar))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    project = tmp_path / "sources"
    (project / "src" / "main" / "java").mkdir(parents=True)
    (project / "pom.xml").write_text("<project/>\n")
    (project / "src" / "main" / "java" / "Launcher.java").write_text("class Launcher {}\n")
    return {"project": project, "jar": jar, "count": count, "cache": tmp_path / "cache"}


def _runs(fake: dict[str, Path]) -> int:
    return len(fake["count"].read_text().split()) if fake["count"].exists() else 0


def test_built_once_into_the_cache_then_reused(fake_maven: dict[str, Path]) -> None:
    project = fake_maven["project"]
    said: list[tuple[str, str]] = []
    cp = launcher.cached_classpath(project, on_stage=lambda stage, msg: said.append((stage, msg)))
    final = (
        fake_maven["cache"]
        / "cnngraph"
        / "launcher"
        / f"{cnngraph.__version__}-{launcher.sources_digest(project)}"
    )
    assert cp == f"{final / 'target' / 'classes'}{os.pathsep}{fake_maven['jar']}"
    assert _runs(fake_maven) == 1 and [s for s, _ in said] == ["build"] and str(final) in said[0][1]
    assert not list(final.parent.glob(".build-*"))  # built in a temporary folder, renamed into place
    assert launcher.cached_classpath(project) == cp
    assert _runs(fake_maven) == 1
    assert not (project / "target").exists()  # the (read-only) sources are never built in place


def test_changed_sources_or_missing_jars_build_again(fake_maven: dict[str, Path]) -> None:
    project = fake_maven["project"]
    first = launcher.cached_build_dir(project)
    launcher.cached_classpath(project)
    (project / "src" / "main" / "java" / "Launcher.java").write_text("class Launcher { int x; }\n")
    second = launcher.cached_build_dir(project)
    assert second != first
    assert str(second) in launcher.cached_classpath(project)
    assert _runs(fake_maven) == 2 and first.is_dir()
    fake_maven["jar"].unlink()  # ~/.m2 cleaned: the class path names a jar that is gone
    with pytest.raises(ServerError, match="left no complete class path"):
        launcher.cached_classpath(project)  # the stand-in cannot bring the jar back; Maven would
    assert _runs(fake_maven) == 3
    fake_maven["jar"].write_bytes(b"PK")
    assert str(second) in launcher.cached_classpath(project)
    assert _runs(fake_maven) == 3  # the jar is back: the build is complete again, nothing to do


def test_two_starts_at_once_build_once(fake_maven: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MVN_SLEEP", "1.5")
    results: list[str] = []
    stages: list[str] = []

    def start() -> None:
        results.append(
            launcher.cached_classpath(fake_maven["project"], on_stage=lambda stage, _: stages.append(stage))
        )

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    assert _runs(fake_maven) == 1
    assert sorted(stages) == ["build", "wait-build"]


def test_a_failed_build_leaves_nothing(fake_maven: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MVN_FAIL", "1")
    with pytest.raises(ServerError, match=r"Maven failed .*Could not resolve dependencies"):
        launcher.cached_classpath(fake_maven["project"])
    folder = launcher.cache_dir()
    assert sorted(p.name for p in folder.iterdir()) == [".build.lock"]


# ---------------------------------------------------------------------------- Java and Maven
def _tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_java_version_is_read() -> None:
    assert launcher.parse_java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert launcher.parse_java_major('java version "1.8.0_292"') == 8
    assert launcher.parse_java_major('openjdk version "21" 2023-09-19') == 21
    assert launcher.parse_java_major("no version here") is None


def test_missing_or_old_tools_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "tools"
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    tools.mkdir()
    with pytest.raises(ConfigError) as missing:
        launcher.require_java()
    text = str(missing.value)
    assert "Java is not installed" in text and "openjdk-17" in text and "\n" not in text
    assert "NEO4J_URI" in text and "docker-compose.yml" in text
    _tool(tools, "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    with pytest.raises(ConfigError, match=r"Java 11 is on PATH .* needs Java 17 or newer"):
        launcher.require_java()
    _tool(tools, "java", "echo 'openjdk version \"17.0.9\" 2023-10-17' >&2")
    assert launcher.require_java() == str(tools / "java")
    with pytest.raises(ConfigError, match="without its compiler \\('javac'\\)"):
        launcher.require_jdk(str(tools / "java"))
    with pytest.raises(ConfigError) as no_maven:
        launcher.cached_classpath(_project(tmp_path))
    text = str(no_maven.value)
    assert text.startswith("Maven is not installed") and "apt install maven" in text and "NEO4J_URI" in text


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "pom.xml").write_text("<project/>\n")
    return project


# ------------------------------------------------------------------------------- the method text
def test_method_sections_are_1_to_11_and_every_citation_exists() -> None:
    sections = bundled.method_sections()
    assert sorted(sections) == list(range(1, 12))
    cited: set[int] = set()
    pattern = re.compile(r"docs/METHOD\.md (?:sections?|eq\.)?\s*((?:\d+(?:-\d+)?(?:,\s*|\s+and\s+)?)+)")
    for path in [
        *(ROOT / "cnngraph").rglob("*.py"),
        *(ROOT / "cnngraph").rglob("*.cypher"),
        ROOT / "docs/GRAPH.md",
    ]:
        text = path.read_text()
        bare = re.findall(r"(?<![\w/])METHOD\.md", text)
        assert not bare, f"{path}: cites 'METHOD.md'; cite 'docs/METHOD.md'"
        for match in pattern.finditer(text.replace("\n//", " ").replace("\n", " ")):
            for part in re.split(r",\s*|\s+and\s+|\s+", match[1].strip()):
                if "-" in part:
                    lo, hi = map(int, part.split("-"))
                    cited.update(range(lo, hi + 1))
                elif part.isdigit() and "eq." not in match[0]:
                    cited.add(int(part))
    assert cited and cited <= set(sections), cited - set(sections)


def test_method_command_prints_the_text_a_section_or_the_list(cli_app) -> None:
    whole = runner.invoke(cli_app, ["method"])
    assert whole.exit_code == 0 and whole.output == bundled.method_path().read_text()
    one = runner.invoke(cli_app, ["method", "8"])
    assert one.exit_code == 0 and one.output.startswith("## 8. Branching networks")
    assert "## 9." not in one.output and "removable unit" in one.output.lower()
    two = runner.invoke(cli_app, ["method", "4", "2"])
    assert two.output.index("## 4.") < two.output.index("## 2.")
    listed = runner.invoke(cli_app, ["method", "--list"]).output.splitlines()
    assert [line.split(".")[0] for line in listed] == [str(n) for n in range(1, 12)]
    assert Path(runner.invoke(cli_app, ["method", "--path"]).output.strip()).is_file()
    bad = runner.invoke(cli_app, ["method", "12"])
    assert bad.exit_code == 2 and "no section 12" in bad.output and "1-11" in bad.output
    assert "Traceback" not in bad.output
    helped = runner.invoke(cli_app, ["map", "--help"], env={"COLUMNS": "200"})
    assert "docs/METHOD.md sections 1-3 and 8" in helped.output and "cnngraph method" in helped.output
