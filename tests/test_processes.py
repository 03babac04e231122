"""``process_alive``: what the server's PID checks and the loader's lease rely on."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cnngraph.processes import process_alive


def test_a_running_process_is_alive_and_an_ended_one_is_not() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
    # killed and never waited for by Popen: a zombie until reaped, which counts as gone
    deadline = time.monotonic() + 10
    while process_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child.pid)


def test_a_pid_that_never_existed_is_not_alive() -> None:
    assert not process_alive(2**22 + 12345)  # above Linux's default pid_max
