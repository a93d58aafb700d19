"""The virtual rig as the composition root's backend (rig/root.py).

The production drivers get the emulated USB bus (hub, YKUSH and SDWire control
transfers), the emulated USB-SD-Mux behind its SCSI transport, and the virtual
cards as their disks; images are built from recipes instead of downloaded; and
`start()` makes sure the virtual Pis' supervisor runs. Nothing below the root
imports this module.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from rig.config import RigConfig
from rig.events import StepLog
from rig.hardware.backend import HardwareBackend, SdMuxTransport


class VirtualDiskFinder:
    """The virtual card while on the host side: a loop device or the image file."""

    below = None
    removable = False  # loop devices are not removable; origin is guaranteed by the state

    def __init__(self, hw: Any, serial: str) -> None:
        self.hw = hw
        self.serial = serial

    def find(self) -> Path | None:
        path = self.hw.host_disk(self.serial)
        return path if path is not None and os.path.exists(path) else None


class VirtualBackend:
    """The virtual rig's side of every seam the composition root has."""

    virtual = True

    def __init__(self, config: RigConfig) -> None:
        self.config = config

    @cached_property
    def state(self) -> Any:
        """The shared hub/mux/card state (one JSON file under the state directory)."""
        from rig.virtual.hw.state import VirtualHardware

        return VirtualHardware.from_config(self.config)

    @cached_property
    def hardware(self) -> HardwareBackend:
        from rig.virtual.hw.usb import virtual_bus

        hw = self.state
        if hw.mux_limit is not None:
            from rig.virtual import pi3, throttle

            # pi3: this process writes the cards; the host group limits only their devices
            pi3.join_host(throttle.detect(), hw.state_dir, os.getpid())
        return HardwareBackend(
            usb=virtual_bus(hw),
            sysfs=None,  # never the host's own sysfs for the emulated hubs
            disks=lambda serial: VirtualDiskFinder(hw, serial),
            sd_mux=self._sd_mux,
            drain=False,  # no capacitors to drain on a virtual card
        )

    def _sd_mux(self, serial: str) -> SdMuxTransport:
        from rig.virtual.hw.sdmux import EmulatedUsbSdMux, open_emulated

        device = EmulatedUsbSdMux(self.state, serial)
        return (lambda _s: Path(f"/dev/virtual-sg/{serial}"), lambda _sg: open_emulated(device))

    def build_image(self, item: Any, log: StepLog) -> Path | None:
        """A catalogue image built from its virtual recipe (None: it has none)."""
        if not item.virtual:
            return None
        from rig.virtual.images import build_image

        log(f"{item.name}: building the virtual image from recipe {item.virtual.recipe}")
        return build_image(item.name, item.virtual.recipe, self.config.paths.images / "virtual")

    def start(self) -> None:
        """The virtual Pis' supervisor, started if it is not running."""
        from rig.virtual.faults import settings_from_config
        from rig.virtual.pi3 import check
        from rig.virtual.twin import ensure_twin

        check(settings_from_config(self.config))  # pi3: what is missing, said here
        ensure_twin(self.config)

    def system_checks(self) -> list[Any]:
        """What the virtual rig needs from this machine (`rig doctor`)."""
        from rig.virtual.checks import system_checks

        return system_checks()
