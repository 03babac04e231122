"""Ctrl-C during a database write stops between transactions, never inside the driver's I/O.

A ``KeyboardInterrupt`` raised in the middle of a Bolt read can leave the driver in a state where
closing the session fails with an unrelated error (and a traceback). So the first Ctrl-C only sets
a flag that the write loop turns into ``KeyboardInterrupt`` after the transaction in flight has
committed; a second Ctrl-C interrupts at once. ``kill -9`` needs none of this: every batch is its
own transaction and the model's status records what is whole.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def between_transactions(notice: Callable[[str], None]) -> Iterator[Callable[[], None]]:
    """Defer SIGINT inside the block; yields ``check()``, which raises ``KeyboardInterrupt`` once asked."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    asked = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if asked.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        asked.set()
        notice("stopping after the transaction in flight commits (Ctrl-C again to stop at once)")

    def check() -> None:
        if asked.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
