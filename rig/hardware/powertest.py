"""Does switching a DUT's power off really cut it? A physical check for `rig doctor`.

A hub's port status bit says what the hub was told, not whether VBUS is gone:
hubs that report per-port switching without wiring it keep the DUT running
(uhubctl's compatibility notes list such hubs). The only proof is the DUT: it
answers before, and stops answering after the power goes off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from rig.hardware.protocols import PowerSwitch


def tcp_probe(host: str, port: int, timeout: float = 2.0) -> Callable[[], bool]:
    """True while something accepts connections at host:port (the DUT's sshd)."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return probe


@dataclass
class PowerTestResult:
    ok: bool
    detail: str
    fix: str = ""


def power_test(
    power: PowerSwitch,
    probe: Callable[[], bool],
    *,
    what: str,
    switch: str,
    timeout: float = 30.0,
    poll: float = 0.5,
) -> PowerTestResult:
    """Power off, wait for ``probe`` to fail, power on again; say whether the switch lies."""
    if not probe():
        return PowerTestResult(
            False,
            f"{what} does not answer before the test",
            "power it on and wait until it is up (rig power DEVICE on), then test again",
        )
    power.off()
    reported = power.state()
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            if not probe():
                seconds = time.monotonic() - start
                return PowerTestResult(
                    True, f"power off through {switch} cut {what} within {seconds:.1f} s"
                )
            time.sleep(poll)
    finally:
        power.on()
    said = {True: "on", False: "off", None: "unknown"}[reported]
    return PowerTestResult(
        False,
        f"{switch} lies: its status says {said}, but {what} still answers "
        f"{timeout:.0f} s after power off",
        "this hub does not cut VBUS on that port (per-port switching reported but not "
        "wired); use a hub from uhubctl's list of tested hubs or a YKUSH",
    )
