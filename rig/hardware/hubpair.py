"""Which hub is the other half of a USB3 hub, paired the way uhubctl pairs them.

A USB3 hub is two hubs to Linux: a USB2 half and a USB3 half, each with its own
port power. Both must be switched, or VBUS stays on. The USB 3.0 spec (11.2) gives
both halves the same BOS Container ID, but some hubs ship a hard-coded one, so two
identical hubs — the normal way to grow a rig — share it. uhubctl
(mvp/uhubctl, ``usb_find_hubs`` in uhubctl.c) therefore scores every candidate of
the opposite speed with the same Container ID:

- same port count (except for odd hubs whose counts add up to 3 or fewer), and,
  where both have a serial, the same serial; then
- 1: a candidate; 2: the same port path below the top level (Apple M1);
  3: on a Raspberry Pi 4 B, the USB2 half one level deeper than the USB3 half
  (behind the VL805's internal USB2 hub); 4: exactly the same path;
  5: the same path and the USB3 half on the bus after the USB2 half (Linux).

uhubctl takes the first best candidate; the rig refuses when two share the best
score, since switching the wrong one cuts another DUT's power. The Pi 4's USB3
root hub has no Container ID; uhubctl gives it the one of the VL805 (below).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import usb.core

from rig.errors import InfraError
from rig.hardware.usbfind import location

GET_DESCRIPTOR = 0x06
RPI4_VL805_CONTAINER_ID = bytes.fromhex("5cf3ee30d5074925b001802d79434c30")
MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")


def host_model(files: tuple[str, ...] = MODEL_FILES) -> str:
    """The flash host's board model ('Raspberry Pi 4 Model B Rev 1.4'), '' elsewhere."""
    for name in files:
        try:
            return Path(name).read_bytes().rstrip(b"\0\n").decode("utf-8", "replace")
        except OSError:
            continue
    return ""


def is_rpi_4b(model: str) -> bool:
    return "Raspberry Pi 4 Model B" in model


@dataclass(frozen=True)
class HubFacts:
    """What uhubctl compares: speed, bus, port path, port count, serial, Container ID."""

    dev: Any
    location: str
    bus: int
    ports: tuple[int, ...]
    super_speed: bool
    nports: int
    serial: str
    container_id: bytes | None
    ids: str  # vid:pid


def container_id(dev: Any) -> bytes | None:
    """The BOS Container ID capability (USB 3.0 9.6.2.3), None where there is none."""
    if dev.bcdUSB < 0x0201:
        return None
    try:
        head = bytes(dev.ctrl_transfer(0x80, GET_DESCRIPTOR, 0x0F00, 0, 5))
        total = struct.unpack_from("<H", head, 2)[0]
        bos = bytes(dev.ctrl_transfer(0x80, GET_DESCRIPTOR, 0x0F00, 0, total))
    except (usb.core.USBError, struct.error):
        return None
    pos = bos[0] if bos else 0
    while pos + 3 <= len(bos):
        length, kind, cap = bos[pos], bos[pos + 1], bos[pos + 2]
        if length == 0:
            break
        if kind == 0x10 and cap == 0x04 and length >= 20:
            return bos[pos + 4 : pos + 20]
        pos += length
    return None


def _serial(dev: Any) -> str:
    if not dev.iSerialNumber:
        return ""
    try:
        return (dev.serial_number or "").strip()
    except (usb.core.USBError, ValueError):
        return ""


def hub_facts(dev: Any, nports: int, rpi4: bool) -> HubFacts:
    ports = tuple(dev.port_numbers or ())
    ids = f"{dev.idVendor:04x}:{dev.idProduct:04x}"
    cid = container_id(dev)
    super_speed = dev.bcdUSB >= 0x0300
    if rpi4 and cid is None and ids == "1d6b:0003" and not ports and nports == 4 and super_speed:
        cid = RPI4_VL805_CONTAINER_ID  # uhubctl's "Raspberry Pi 4B hack for USB3 root hub"
    return HubFacts(dev, location(dev), dev.bus, ports, super_speed, nports, _serial(dev), cid, ids)


def score(a: HubFacts, b: HubFacts, rpi4: bool) -> int:
    """How well ``b`` fits as the other half of ``a``; 0: it is not a candidate."""
    if a.super_speed == b.super_speed or a.container_id is None:
        return 0
    if b.container_id != a.container_id:
        return 0
    if a.nports != b.nports and a.nports + b.nports > 3:
        return 0
    if a.serial and b.serial and a.serial != b.serial:
        return 0
    best = 1
    p1, p2, l1, l2 = a.ports, b.ports, len(a.ports), len(b.ports)
    s1, s2 = int(a.super_speed), int(b.super_speed)
    if l1 >= 1 and l1 == l2 and p1[1:] == p2[1:]:
        best = 2
    if rpi4 and l1 + s1 == l2 + s2 and l1 >= s2 and p1[s2:] == p2[s1 : s1 + l1 - s2]:
        best = 3
    if p1 == p2:
        best = 4
        if a.bus - s1 == b.bus - s2:
            best = 5
    return best


def companion(hub: HubFacts, others: list[HubFacts], rpi4: bool, where: str) -> HubFacts | None:
    """The one other half of ``hub``, None for a USB2-only hub; ambiguity is an error."""
    scored = [(score(hub, o, rpi4), o) for o in others if o.location != hub.location]
    scored = [(s, o) for s, o in scored if s > 0]
    if not scored:
        return None
    top = max(s for s, _ in scored)
    best = [o for s, o in scored if s == top]
    if len(best) > 1:
        raise InfraError(
            f"cannot tell which hub is the other half of hub {hub.location} ({hub.ids}): "
            f"{', '.join(f'{o.location} ({o.ids})' for o in best)} share its Container ID "
            f"{hub.container_id.hex() if hub.container_id else ''} and fit equally well",
            where=where,
            hint="such hubs ship a hard-coded Container ID: plug each hub into a port whose "
            "USB2 and USB3 paths match (the same port of the same upstream hub), or use "
            "hubs with distinct serial numbers; `rig doctor` shows how each hub is paired",
        )
    return best[0]
