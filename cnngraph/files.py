"""Atomic file writes: each write goes to its own temporary file beside the target, renamed over it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def partial_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that belongs to this one write (process id plus a
    random part), so two copies of the same command writing ``path`` at once never share, truncate
    or rename each other's temporary file; whichever finishes last wins, whole."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
