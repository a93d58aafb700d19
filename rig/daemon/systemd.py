"""The two sd_notify messages `rig serve` sends: READY=1 once it works, WATCHDOG=1 while every
lane lives (systemd restarts a unit whose watchdog starves: ``WatchdogSec=`` in rig.service).

The protocol is one datagram to ``$NOTIFY_SOCKET`` (sd_notify(3)); not worth a library.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send ``message`` to the service manager; False when not run by systemd."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path  # "@": the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (as sd_watchdog_enabled(3) advises), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def start_watchdog(healthy: Callable[[], bool], stop: threading.Event) -> threading.Thread | None:
    """Feed the watchdog while ``healthy()``; a dead lane starves it and systemd restarts us."""
    interval = watchdog_interval()
    if interval is None:
        return None

    def loop() -> None:
        while not stop.wait(interval):
            if healthy():
                notify("WATCHDOG=1")

    thread = threading.Thread(target=loop, name="rig-watchdog", daemon=True)
    thread.start()
    return thread
