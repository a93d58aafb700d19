"""Is the device's clock right?  pip and TLS fail in confusing ways when it is not.

A Pi has no real-time clock; until NTP syncs it starts from the last saved time
(or 1970). The original rig waited for NTP; we measure the offset and say so.
"""

from __future__ import annotations

import time

from rig.device.shell import DeviceShell, Log
from rig.errors import InfraError

WARN_SKEW = 60.0  # seconds
MAX_SKEW = 300.0


def clock_offset(shell: DeviceShell) -> float:
    """Device time minus host time, in seconds (half the round trip corrected)."""
    before = time.time()
    result = shell.run("date +%s.%N", quiet=True, timeout=30)
    after = time.time()
    try:
        device = float(result.stdout.strip().replace("N", "0"))
    except ValueError as e:
        raise InfraError(
            f"cannot read the device clock: {result.stdout!r}", where=shell.where
        ) from e
    return device - (before + after) / 2


def check_clock(
    shell: DeviceShell,
    log: Log | None = None,
    *,
    max_skew: float = MAX_SKEW,
    wait: float = 0,
) -> float:
    """Return the offset; warn above a minute, fail above ``max_skew`` (after waiting for NTP)."""
    deadline = time.monotonic() + wait
    while True:
        offset = clock_offset(shell)
        if abs(offset) <= max_skew or time.monotonic() >= deadline:
            break
        time.sleep(5)
    if abs(offset) > max_skew:
        raise InfraError(
            f"device clock is off by {offset:+.0f}s (more than {max_skew:.0f}s); "
            "pip and TLS downloads would fail",
            where=shell.where,
            hint="let the device reach an NTP server (timedatectl status), or set its date",
        )
    if log:
        if abs(offset) > WARN_SKEW:
            log(f"warning: device clock is off by {offset:+.0f}s", clock_offset=offset)
        else:
            log(f"device clock offset {offset:+.1f}s", clock_offset=offset)
    return offset
