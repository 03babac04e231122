"""Atomic file writes: each write goes to its own temporary file beside the target, renamed over it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` that belongs to this one write (process id plus a
    random part), so two copies of the same command writing ``path`` at once never share, truncate
    or rename each other's temporary file; whichever finishes last wins, whole."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """The temporary path to write ``path``'s new content to (its folder created): renamed over
    ``path`` when the block ends normally, removed whatever happens, so ``path`` is whole or old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> Path:
    """``data`` at ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
