"""Build the power switch and mux of a configured device: the one place that maps
driver names to classes (a dict, not a plugin registry).

The builders take a `HardwareBackend`: the real machine's, or the virtual rig's
emulated bus and muxes (chosen by the composition root, rig/root.py), so what
runs on the virtual rig is the production driver code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rig.config import (
    CommandPowerConfig,
    RigConfig,
    SdwireConfig,
    UsbHubPortConfig,
    UsbSdMuxConfig,
    YkushPortConfig,
)
from rig.errors import ConfigError
from rig.hardware.backend import HardwareBackend
from rig.hardware.mux import SdwireMux, UsbSdMuxDriver
from rig.hardware.power import CommandPower, UsbHubPower, YkushPower
from rig.hardware.protocols import CardMux, PowerSwitch


def _usb_hub(p: UsbHubPortConfig, device: str, hw: HardwareBackend, where: str) -> PowerSwitch:
    return UsbHubPower(
        p.location, p.port, backend=hw.usb, off_time=p.off_time, sysfs=hw.sysfs, where=where
    )


def _ykush(p: YkushPortConfig, device: str, hw: HardwareBackend, where: str) -> PowerSwitch:
    if not p.serial:
        raise ConfigError("ykush needs 'serial' (the board's, `ykushcmd -l` lists it)", where=where)
    return YkushPower(p.serial, p.port, backend=hw.usb, off_time=p.off_time, where=where)


def _command(p: CommandPowerConfig, device: str, hw: HardwareBackend, where: str) -> PowerSwitch:
    return CommandPower(
        p.on,
        p.off,
        p.status,
        device=device,
        port=p.port,
        timeout=p.timeout,
        off_time=p.off_time,
        where=where,
    )


def _usb_sd_mux(m: UsbSdMuxConfig, hw: HardwareBackend, where: str) -> CardMux:
    if hw.sd_mux is None:
        return UsbSdMuxDriver(m.serial, where=where)
    find_sg, open_mux = hw.sd_mux(m.serial)
    return UsbSdMuxDriver(
        m.serial,
        find_sg=find_sg,
        open_mux=open_mux,
        disks=hw.disks(m.serial) if hw.disks else None,
        wait=hw.drain,
        where=where,
    )


def _sdwire(m: SdwireConfig, hw: HardwareBackend, where: str) -> CardMux:
    disks = hw.disks(m.serial) if hw.disks else None
    return SdwireMux(m.serial, backend=hw.usb, disks=disks, where=where)


# driver name -> builder taking that driver's own config (rig.config.POWER_CONFIGS)
POWER_DRIVERS: dict[str, Callable[[Any, str, HardwareBackend, str], PowerSwitch]] = {
    "usb-hub": _usb_hub,
    "ykush": _ykush,
    "command": _command,
}
MUX_DRIVERS: dict[str, Callable[[Any, HardwareBackend, str], CardMux]] = {
    "usb-sd-mux": _usb_sd_mux,
    "sdwire": _sdwire,
}


def power_for(config: RigConfig, device_name: str, hw: HardwareBackend) -> PowerSwitch:
    """The device's power switch, on the given backend (rig.root.Rig.power chooses it)."""
    p = config.device(device_name).power
    where = f"{config.where}: devices.{device_name}.power"
    try:
        build = POWER_DRIVERS[p.driver]
    except KeyError:
        raise ConfigError(
            f"unknown power driver {p.driver!r} (known: {', '.join(POWER_DRIVERS)})", where=where
        ) from None
    return build(p, device_name, hw, where)


def mux_for(config: RigConfig, device_name: str, hw: HardwareBackend) -> CardMux:
    """The device's card mux, on the given backend (rig.root.Rig.mux chooses it)."""
    m = config.device(device_name).mux
    where = f"{config.where}: devices.{device_name}.mux"
    try:
        build = MUX_DRIVERS[m.driver]
    except KeyError:
        raise ConfigError(
            f"unknown mux driver {m.driver!r} (known: {', '.join(MUX_DRIVERS)})", where=where
        ) from None
    return build(m, hw, where)
