"""Build the power switch and mux of a configured device: the one place that maps
driver names to classes (a dict, not a plugin registry).

On the virtual rig the same driver classes are built against the emulated USB
bus and the emulated USB-SD-Mux (``rig.virtual.hw``), so what runs is the
production driver code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rig.config import DeviceConfig, RigConfig
from rig.errors import ConfigError
from rig.hardware.mux import SdwireMux, UsbSdMuxDriver, VirtualDiskFinder
from rig.hardware.power import CommandPower, UsbHubPower, YkushPower
from rig.hardware.protocols import CardMux, PowerSwitch

POWER_DRIVERS = ("usb-hub", "ykush", "command")
MUX_DRIVERS = ("usb-sd-mux", "sdwire")


def virtual_hardware(config: RigConfig) -> Any:
    """The virtual rig's shared hardware state (imported lazily: real rigs never load it)."""
    from rig.virtual.hw.state import VirtualHardware

    return VirtualHardware.from_config(config)


def usb_backend(config: RigConfig) -> Any:
    """None (libusb) on real hardware, the emulated bus on the virtual rig."""
    if not config.virtual:
        return None
    from rig.virtual.hw.usb import virtual_bus

    return virtual_bus(virtual_hardware(config))


def power_for(config: RigConfig, device_name: str, *, backend: Any = None) -> PowerSwitch:
    dev = config.device(device_name)
    p = dev.power
    where = f"{config.where}: devices.{device_name}.power"
    if backend is None and p.driver in ("usb-hub", "ykush"):
        backend = usb_backend(config)
    if p.driver == "usb-hub":
        if not p.location or p.port is None:
            raise ConfigError("usb-hub needs 'location' and 'port'", where=where)
        return UsbHubPower(
            p.location,
            p.port,
            backend=backend,
            off_time=p.off_time,
            # never the host's own sysfs for the emulated hubs of the virtual rig
            sysfs=None if config.virtual else Path("/sys"),
            where=where,
        )
    if p.driver == "ykush":
        if not p.serial or p.port is None:
            raise ConfigError("ykush needs 'serial' and 'port'", where=where)
        return YkushPower(p.serial, p.port, backend=backend, off_time=p.off_time, where=where)
    if p.driver == "command":
        if not p.on or not p.off:
            raise ConfigError("command needs 'on' and 'off' templates", where=where)
        return CommandPower(
            p.on,
            p.off,
            p.status,
            device=device_name,
            port=p.port,
            timeout=p.timeout,
            off_time=p.off_time,
            where=where,
        )
    raise ConfigError(
        f"unknown power driver {p.driver!r} (known: {', '.join(POWER_DRIVERS)})", where=where
    )


def mux_for(config: RigConfig, device_name: str, *, backend: Any = None) -> CardMux:
    dev: DeviceConfig = config.device(device_name)
    m = dev.mux
    where = f"{config.where}: devices.{device_name}.mux"
    if m.driver == "usb-sd-mux":
        if config.virtual:
            return _virtual_sdmux(config, m.serial, where)
        return UsbSdMuxDriver(m.serial, where=where)
    if m.driver == "sdwire":
        if config.virtual:
            hw = virtual_hardware(config)
            return SdwireMux(
                m.serial,
                backend=backend or usb_backend(config),
                disks=VirtualDiskFinder(hw, m.serial),
                where=where,
            )
        return SdwireMux(m.serial, backend=backend, where=where)
    raise ConfigError(
        f"unknown mux driver {m.driver!r} (known: {', '.join(MUX_DRIVERS)})", where=where
    )


def _virtual_sdmux(config: RigConfig, serial: str, where: str) -> UsbSdMuxDriver:
    from rig.virtual.hw.sdmux import EmulatedUsbSdMux, open_emulated

    hw = virtual_hardware(config)
    device = EmulatedUsbSdMux(hw, serial)
    return UsbSdMuxDriver(
        serial,
        find_sg=lambda s: Path(f"/dev/virtual-sg/{s}"),
        open_mux=lambda _sg: open_emulated(device),
        disks=VirtualDiskFinder(hw, serial),
        wait=False,  # no capacitors to drain on a virtual card
        where=where,
    )
