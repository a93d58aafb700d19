"""What the virtual rig needs from this machine, as `rig doctor` findings."""

from __future__ import annotations

import shutil
from pathlib import Path

from rig.hardware.inventory import Finding
from rig.virtual.hw.state import dm_available, loop_available, write_fault_available


def system_checks() -> list[Finding]:
    """Loop devices, write faults, bubblewrap and a browser: each found, or how to get it."""
    out = []
    if loop_available():
        out.append(Finding("system", "loop devices", "cards appear as /dev/loopN", True))
    else:
        out.append(
            Finding(
                "system",
                "loop devices",
                "not root or no /dev/loop-control: cards appear as plain image files",
                True,
                "run as root (or in a VM/container with loop devices) to flash real block devices",
            )
        )
    if dm_available():
        fault = "device-mapper error target"
    elif write_fault_available():
        fault = "FUSE file (no device-mapper here)"
    else:
        fault = "unavailable (needs loop devices plus device-mapper or /dev/fuse)"
    out.append(Finding("system", "write faults", fault, True))
    bwrap = shutil.which("bwrap")
    out.append(
        Finding(
            "system",
            "bwrap",
            bwrap or "missing",
            bwrap is not None,
            "" if bwrap else "sudo apt install bubblewrap (the virtual Pis run in it)",
        )
    )
    chromium = next(
        (
            p
            for p in (
                "/usr/bin/chromium",
                shutil.which("chromium"),
                shutil.which("chromium-browser"),
            )
            if p and Path(p).exists()
        ),
        None,
    )
    out.append(
        Finding(
            "system",
            "chromium",
            chromium or "missing",
            chromium is not None,
            "" if chromium else "sudo apt install chromium (browser checks run in it)",
        )
    )
    return out
