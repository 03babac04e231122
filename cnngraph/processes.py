"""Whether a process still runs, for the server's PID checks and the loader's lease. Imports nothing
from the project."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """``True`` while ``pid`` runs; a zombie counts as gone (and is reaped when it is our child)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
