"""Build hook: the wheel carries the Neo4j launcher's Maven project and the method text.

``server/pom.xml``, everything under ``server/src/`` and ``docs/METHOD.md`` stay where they are in
the repository; building the package copies them to ``cnngraph/_bundled/`` inside it, where
``cnngraph.bundled`` finds them in an installed package. An editable install copies nothing: it
reads them from the checkout. Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ("server/pom.xml", "server/src", "docs/METHOD.md")


def bundled_files() -> list[str]:
    """The files to carry, relative to the repository root (every file under a listed folder)."""
    files: list[str] = []
    for entry in BUNDLED:
        path = HERE / entry
        if path.is_dir():
            files += sorted(p.relative_to(HERE).as_posix() for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(entry)
        else:
            raise SystemExit(f"cannot build cnngraph: '{entry}' is missing from {HERE}")
    return files


class BuildWithBundle(build_py):
    """``build_py`` that also copies the bundled files into ``cnngraph/_bundled/``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "cnngraph" / "_bundled"
        for rel in bundled_files():
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, dest)


setup(cmdclass={"build_py": BuildWithBundle})
