"""What is plugged in and whether the rig may use it: the facts behind `rig doctor`.

Each finding says what was found, whether it is usable, and when it is not,
the exact fix (usually the udev rule line from rig/host/99-rig.rules).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rig.errors import InfraError, RigError
from rig.hardware import blockdev
from rig.hardware.blockdev import REAL_SYSFS, Sysfs
from rig.hardware.mux import (
    FTDI_MUX_KINDS,
    SG_HINT,
    ftdi_product,
    is_samsung_ftdi,
    iter_sdmuxes,
    sg_loaded,
)
from rig.hardware.power import HUB_CLASS, companion_of, hub_descriptor, is_ykush
from rig.hardware.usbfind import devices, location, serial_of


@dataclass
class Finding:
    kind: str  # hub | ykush | sdwire | usb-sd-mux | module | device | system
    name: str
    detail: str
    ok: bool
    fix: str = ""


def _rule(subsystem: str, vid: int, pid: int) -> str:
    return (
        f'SUBSYSTEM=="{subsystem}", ATTR{{idVendor}}=="{vid:04x}", '
        f'ATTR{{idProduct}}=="{pid:04x}", MODE="0660", GROUP="rig"'
    )


def scan_usb(backend: Any = None) -> list[Finding]:
    """Hubs (and how they switch power), YKUSHes and SDWires on the USB bus."""
    out: list[Finding] = []
    for dev in devices(backend):
        loc = location(dev)
        ids = f"{dev.idVendor:04x}:{dev.idProduct:04x}"
        rule = _rule("usb", dev.idVendor, dev.idProduct)
        try:
            if dev.bDeviceClass == HUB_CLASS:
                info = hub_descriptor(dev, f"hub {loc}")
                usable = info.switching == "per-port"
                fix = "" if usable else "not usable for DUT power: needs per-port switching (PPPS)"
                try:
                    pair = companion_of(dev, backend)
                    paired = f", paired with {location(pair[0])} ({pair[1]})" if pair else ""
                except InfraError as e:
                    usable, paired = False, ", pairing ambiguous"
                    fix = f"{e.message}; {e.hint}"
                detail = (
                    f"{ids} USB{'3' if info.usb3 else '2'} hub, {info.nports} ports, "
                    f"{info.switching} power switching{paired}"
                )
                out.append(Finding("hub", loc, detail, usable, fix))
            elif is_ykush(dev):
                serial = serial_of(dev, f"ykush {loc}")
                out.append(Finding("ykush", serial or loc, f"{ids} at {loc}", True))
            elif is_samsung_ftdi(dev):
                serial = serial_of(dev, f"sdwire {loc}")
                product = ftdi_product(dev)
                if product == "sd-wire":
                    out.append(Finding("sdwire", serial or loc, f"{ids} at {loc}", True))
                else:
                    kind = FTDI_MUX_KINDS.get(product or "", "unprogrammed or unknown")
                    out.append(
                        Finding(
                            "sdwire",
                            serial or loc,
                            f"{ids} at {loc}: product {product!r} is {kind}, not an SDWire",
                            False,
                            "not usable as a card mux by the rig",
                        )
                    )
        except RigError as e:
            kind = "hub" if dev.bDeviceClass == HUB_CLASS else "usb"
            out.append(Finding(kind, loc, f"{ids}: {e.message}", False, f"udev rule: {rule}"))
    return out


def scan_sdmuxes(fs: Sysfs = REAL_SYSFS) -> list[Finding]:
    """USB-SD-Muxes by their SCSI generic node, with access rights and the card's disk."""
    out: list[Finding] = []
    if not sg_loaded(fs):
        # no USB-SD-Mux can be seen at all; whether that matters depends on the config
        return [Finding("module", "sg", "not loaded: no SCSI generic nodes", False, SG_HINT)]
    for mux in iter_sdmuxes(fs):
        usb_dir, product, serial = mux.usb_dir, mux.product, mux.serial
        node = fs.dev / mux.sg.name
        disks = blockdev.disks_below(usb_dir, fs)
        detail = f"{node} ({product}), card disk: {', '.join(disks) or 'none (card on DUT side?)'}"
        closed = [d for d in disks if not os.access(fs.dev / d, os.R_OK | os.W_OK)]
        if closed:
            out.append(
                Finding(
                    "usb-sd-mux",
                    serial,
                    f"{detail}: no read/write access to {', '.join(closed)}",
                    False,
                    'udev rule: SUBSYSTEM=="block", ATTRS{manufacturer}=="Linux Automation GmbH", '
                    'ATTRS{product}=="usb-sd-mux*", MODE="0660", GROUP="rig"',
                )
            )
        elif os.access(node, os.R_OK | os.W_OK):
            out.append(Finding("usb-sd-mux", serial, detail, True))
        else:
            out.append(
                Finding(
                    "usb-sd-mux",
                    serial,
                    detail + ": no read/write access",
                    False,
                    'udev rule: SUBSYSTEM=="scsi_generic", ATTRS{manufacturer}=='
                    '"Linux Automation GmbH", ATTRS{product}=="usb-sd-mux*", '
                    'MODE="0660", GROUP="rig", SYMLINK+="usb-sd-mux/id-$attr{serial}"',
                )
            )
    return out


def check_devices(
    names: Iterable[str], power: Callable[[str], Any], mux: Callable[[str], Any]
) -> list[Finding]:
    """Every configured device: can its power switch and its mux be reached and read?

    ``power`` and ``mux`` build a device's drivers (rig.root.Rig.power / .mux)."""
    out: list[Finding] = []
    for name in names:
        for part, build, read in (
            ("power", power, lambda p: {True: "on", False: "off", None: "unknown"}[p.state()]),
            ("mux", mux, lambda m: f"card on {m.state()}"),
        ):
            try:
                shown = read(build(name))
            except RigError as e:
                out.append(Finding("device", f"{name} {part}", e.message, False, e.hint))
                continue
            out.append(Finding("device", f"{name} {part}", shown, True))
    return out
