"""Child processes: whether one lives, and stopping one the rig started, the same way in
every layer (the daemon's warm job, the package cache's pip, leases, snapshots, sandboxes)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_unless(
    proc: subprocess.Popen[bytes], stop: Callable[[], bool], grace: float, poll: float = 0.5
) -> bool:
    """Wait for ``proc`` (started with ``start_new_session``); when ``stop()`` says so, SIGTERM
    its process group (what it started stops with it) and SIGKILL it after ``grace`` seconds.
    True when it was stopped, False when it ended by itself."""
    while proc.poll() is None:
        if stop():
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return True
        time.sleep(poll)
    return False
