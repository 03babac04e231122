"""README.md as one runnable walkthrough: its ``bash`` and ``python`` blocks, in order, in one shell.

Usage::

    python scripts/readme_walkthrough.py --print            # the script that would run
    python scripts/readme_walkthrough.py --run EMPTY_FOLDER  # run it there (NEO4J_URI etc. as usual)

Every fenced block whose info string is ``bash`` (or ``sh``, ``shell``) becomes part of one bash
script, run with ``set -Eeo pipefail`` so that the first failing command stops it; every ``python``
block is run by this Python from the same folder (``python -``, so ``import my_module`` finds files
the blocks wrote). A block whose first line starts with ``# Not run by the README test`` is skipped
(that line says why). Other blocks (``text``, ``cypher``, ``mermaid``, output) are not commands.
``tests/test_readme_walkthrough.py`` runs it from ``make test``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = "# Not run by the README test"
SHELLS = ("bash", "sh", "shell")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
MARK = "README-WALKTHROUGH"
HEREDOC = "README_PYTHON_BLOCK"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: its language, first line number (1-based) and text."""

    language: str
    line: int
    text: str

    @property
    def skipped(self) -> bool:
        return self.text.lstrip().startswith(SKIP)

    @property
    def runnable(self) -> bool:
        return self.language in (*SHELLS, "python") and not self.skipped


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown`` (indented ones too, with their indentation removed)."""
    found: list[Block] = []
    lines = markdown.splitlines()
    n = 0
    while n < len(lines):
        opening = FENCE.match(lines[n])
        if opening is None:
            n += 1
            continue
        opened, indent, fence = n, opening["indent"], opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        body: list[str] = []
        n += 1
        while n < len(lines):
            closing = FENCE.match(lines[n])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[n]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            n += 1
        else:
            raise ValueError(f"the block opened at line {opened + 1} is never closed")
        found.append(Block(language, opened + 2, "\n".join(body) + "\n"))
        n += 1
    return found


def script(readme: Path, python: str = sys.executable) -> tuple[str, dict[int, int]]:
    """The bash script of ``readme``'s runnable blocks, and which README line each script line is."""
    out = ["set -Eeo pipefail", f"trap 'echo \"{MARK}: exit $? at script line $LINENO\" >&2' ERR"]
    where: dict[int, int] = {}
    for block in blocks(readme.read_text()):
        if not block.runnable:
            continue
        out.append(f'echo "=== {readme.name} line {block.line} ({block.language}), at $SECONDS s"')
        if block.language == "python":
            if HEREDOC in block.text:
                raise ValueError(f"{readme.name} line {block.line}: a python block may not contain {HEREDOC}")
            out.append(f"{_quote(python)} - <<'{HEREDOC}'")
            where[len(out)] = block.line  # a failing python block is reported at its command
            start = len(out) + 1
            out += block.text.rstrip("\n").split("\n")
            out.append(HEREDOC)
        else:
            start = len(out) + 1
            out += block.text.rstrip("\n").split("\n")
        for k in range(start, len(out) + 1):
            where.setdefault(k, block.line + (k - start))
    out.append(f'echo "=== {readme.name}: every block ran, in $SECONDS s"')
    return "\n".join(out) + "\n", where


def run(
    readme: Path, folder: Path, env: dict[str, str] | None = None, timeout: float | None = None
) -> tuple[int, str, str | None]:
    """Run the walkthrough in ``folder``: ``(exit status, output, README line that failed or None)``."""
    text, where = script(readme)
    proc = subprocess.run(
        ["bash", "-c", text],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    failed = re.findall(rf"{MARK}: exit \d+ at script line (\d+)", proc.stderr)
    line = None
    if proc.returncode != 0 and failed:
        number = where.get(int(failed[-1]))
        line = f"{readme.name} line {number}" if number else f"script line {failed[-1]}"
    return proc.returncode, output, line


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--print", action="store_true", help="print the script and stop")
    parser.add_argument("--run", type=Path, metavar="FOLDER", help="an empty folder to run it in")
    args = parser.parse_args(argv)
    if args.print or args.run is None:
        sys.stdout.write(script(args.readme)[0])
        return 0
    folder = args.run
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        parser.error(f"'{folder}' is not empty; the walkthrough starts in an empty folder")
    code, output, line = run(args.readme, folder, dict(os.environ))
    sys.stdout.write(output)
    if code != 0:
        print(f"the README walkthrough failed at {line or 'an unknown line'} (exit {code})", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
