"""Files that ship inside the package: the Neo4j launcher's Maven project and ``docs/METHOD.md``.

A wheel (or an install from the sdist) carries them under ``cnngraph/_bundled/``, copied there by
the build hook in ``setup.py``; a checkout (an editable install) reads them where they live in the
repository, ``server/`` and ``docs/``. Imports only the error classes.
"""

from __future__ import annotations

import re
from pathlib import Path

from cnngraph.errors import ConfigError

BUNDLE_DIR = Path(__file__).resolve().parent / "_bundled"
"""Where an installed package keeps its bundled files (absent in a checkout)."""
CHECKOUT_DIR = Path(__file__).resolve().parents[1]
"""The repository root when the package runs from a checkout."""


def bundled_file(relative: str) -> Path | None:
    """``relative`` (for example ``docs/METHOD.md``) from the installed bundle, else from the
    checkout; None when neither has it."""
    for root in (BUNDLE_DIR, CHECKOUT_DIR):
        path = root / relative
        if path.exists():
            return path
    return None


def is_bundled(path: Path) -> bool:
    """Whether ``path`` lies in the installed bundle (read-only sources, built elsewhere)."""
    return path.resolve().is_relative_to(BUNDLE_DIR)


METHOD_FILE = "docs/METHOD.md"
_SECTION = re.compile(r"^## (\d+)\. (.+)$", re.MULTILINE)


def method_path() -> Path:
    """The path of ``docs/METHOD.md`` (in the installed package, else in the checkout)."""
    path = bundled_file(METHOD_FILE)
    if path is None:
        raise ConfigError(f"this cnngraph install lacks {METHOD_FILE}; reinstall cnngraph")
    return path


def method_sections(text: str | None = None) -> dict[int, tuple[str, str]]:
    """Section number -> (title, text from its heading to the next) of the method."""
    text = method_path().read_text(encoding="utf-8") if text is None else text
    heads = list(_SECTION.finditer(text))
    ends = [h.start() for h in heads[1:]] + [len(text)]
    return {
        int(h[1]): (h[2].strip(), text[h.start() : end].rstrip() + "\n")
        for h, end in zip(heads, ends, strict=True)
    }


def method_text(sections: list[int] | None = None) -> str:
    """The method, whole or only the given sections (in the order given)."""
    if not sections:
        return method_path().read_text(encoding="utf-8")
    known = method_sections()
    missing = [n for n in sections if n not in known]
    if missing:
        raise ConfigError(
            f"docs/METHOD.md has no section {', '.join(map(str, missing))}; its sections are "
            f"{min(known)}-{max(known)} ('cnngraph method --list')"
        )
    return "\n".join(known[n][1] for n in sections)
