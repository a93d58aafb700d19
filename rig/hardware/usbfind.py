"""Finding USB devices with pyusb: by location (bus-port.port), by serial, with clear errors.

Locations come from the port chain (``dev.bus``, ``dev.port_numbers``), never
from enumeration order, so a hub keeps its name across reboots. A ``backend``
can be passed everywhere: the real libusb one by default, the emulated bus of
the virtual rig otherwise.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Any

import usb.core

from rig.errors import InfraError

UDEV_RULES = "/etc/udev/rules.d/99-rig.rules"
UDEV_HINT = (
    f"install the rig's udev rules ({UDEV_RULES}) and its group: sudo scripts/install-flash-host "
    "(or: sudo rig host install), then log in again; `rig doctor` shows which node is missing"
)


def location(dev: Any) -> str:
    """'<bus>-<port>.<port>...' as the kernel names it (/sys/bus/usb/devices/<location>)."""
    ports = getattr(dev, "port_numbers", None) or ()
    if not ports:
        return f"usb{dev.bus}"  # a root hub
    return f"{dev.bus}-{'.'.join(str(p) for p in ports)}"


def devices(backend: Any = None, **match: Any) -> Iterator[Any]:
    try:
        found = usb.core.find(find_all=True, backend=backend, **match)
    except usb.core.NoBackendError as e:
        raise InfraError(
            "no USB backend: libusb-1.0 is not installed",
            where="usb",
            hint="sudo apt install libusb-1.0-0",
        ) from e
    yield from found


def find_by_location(loc: str, backend: Any = None, *, where: str = "") -> Any:
    for dev in devices(backend):
        if location(dev) == loc:
            return dev
    raise InfraError(
        f"no USB device at location {loc}",
        where=where or f"usb {loc}",
        hint="check the cable; `rig doctor` lists the hubs and their locations",
    )


def serial_of(dev: Any, where: str) -> str | None:
    """The serial string, or None when the device has none; permission problems are errors."""
    if not dev.iSerialNumber:
        return None
    try:
        return dev.serial_number
    except usb.core.USBError as e:
        raise usb_error(e, f"reading the serial number of {location(dev)}", where) from e
    except ValueError as e:  # pyusb's way to say it could not read the language IDs
        raise InfraError(
            f"cannot read the serial number of USB device {location(dev)} "
            f"({dev.idVendor:04x}:{dev.idProduct:04x}): permission denied?",
            where=where,
            hint=UDEV_HINT,
        ) from e


def find_by_serial(
    serial: str,
    ids: Callable[[Any], bool],
    backend: Any = None,
    *,
    what: str,
    where: str,
) -> Any:
    candidates = [d for d in devices(backend) if ids(d)]
    for dev in candidates:
        if serial_of(dev, where) == serial:
            return dev
    seen = ", ".join(filter(None, (_safe_serial(d) for d in candidates))) or "none"
    raise InfraError(
        f"no {what} with serial {serial!r} (found: {seen})",
        where=where,
        hint="check the cable and the serial in rig.yaml; `rig doctor` lists what is connected",
    )


def _safe_serial(dev: Any) -> str | None:
    try:
        return dev.serial_number
    except (usb.core.USBError, ValueError):
        return "(unreadable: permission denied?)"


def usb_error(e: usb.core.USBError, doing: str, where: str) -> InfraError:
    """Turn a pyusb error into an InfraError that says what to do."""
    if e.errno == errno.EACCES:
        return InfraError(f"permission denied {doing}", where=where, hint=UDEV_HINT)
    if e.errno == errno.EPIPE:
        return InfraError(
            f"the device refused the request (stall) while {doing}",
            where=where,
            hint="the device does not speak this protocol; check the driver in rig.yaml",
        )
    if e.errno == errno.ENODEV:
        return InfraError(f"the device disappeared while {doing}", where=where)
    return InfraError(f"USB error while {doing}: {e}", where=where)
