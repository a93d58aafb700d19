"""What the drivers talk to: the host's USB bus and sysfs, or an emulation of them.

The composition root (rig/root.py) hands one of these to the driver builders, so
the same driver classes run against a real bus or the virtual rig's emulated one,
and no driver module knows which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (find_sg(serial) -> /dev/sgN, open_mux(sg) -> an open SCSI transport) for a USB-SD-Mux
SdMuxTransport = tuple[Callable[[str], Path], Callable[[Path], Any]]


@dataclass(frozen=True)
class HardwareBackend:
    """The host side of the drivers. The defaults are the real machine's."""

    usb: Any = None  # a pyusb backend; None: libusb
    sysfs: Path | None = Path("/sys")  # where hub port power is read (None: only over USB)
    disks: Callable[[str], Any] | None = None  # mux serial -> DiskFinder; None: udev/sysfs
    sd_mux: Callable[[str], SdMuxTransport] | None = None  # None: the sg device over SCSI
    drain: bool = True  # wait for a card's capacitors to drain when it switches sides


REAL = HardwareBackend()
