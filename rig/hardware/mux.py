"""SD muxes: Linux Automation USB-SD-Mux (through ``usbsdmux``) and SDWire (through pyusb).

Both satisfy ``rig.hardware.protocols.Mux`` plus what the writer needs
(``CardMux``): ``disk(timeout)`` switches nothing, it waits for the card's
block device below *this* mux and validates it; ``card_identity()`` names the
card (its CID) for wear tracking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import usb.core

from rig.errors import ConfigError, InfraError
from rig.hardware import blockdev
from rig.hardware.blockdev import REAL_SYSFS, Sysfs
from rig.hardware.usbfind import UDEV_HINT, find_by_serial, location, usb_error


class DiskFinder(Protocol):
    """Where the card appears while on the host side; ``below`` is the mux's USB device."""

    below: Path | None
    removable: bool

    def find(self) -> Path | None: ...


class UsbDiskFinder:
    """The whole disk below a USB device in sysfs (no udevd needed)."""

    removable = True

    def __init__(self, usb_dir: Callable[[], Path], fs: Sysfs = REAL_SYSFS) -> None:
        self._usb_dir = usb_dir
        self.fs = fs
        self.below: Path | None = None

    def find(self) -> Path | None:
        self.below = self._usb_dir()
        names = blockdev.disks_below(self.below, self.fs)
        if len(names) > 1:
            raise InfraError(f"more than one disk below {self.below.name}: {names}", where="mux")
        return self.fs.dev / names[0] if names else None


def _card_disk(mux: Any, finder: DiskFinder, timeout: float, what: str, where: str) -> Path:
    if mux.state() != "host":
        raise InfraError(
            f"the card of {what} is not on the host side", where=where, hint="rig mux DEVICE host"
        )
    path = blockdev.wait_for_disk(finder.find, timeout, what=what, where=where, fs=_fs(finder))
    return blockdev.check_card(
        path, below=finder.below, where=where, require_removable=finder.removable, fs=_fs(finder)
    )


def _fs(finder: Any) -> Sysfs:
    return getattr(finder, "fs", Sysfs())


# -- USB-SD-Mux ------------------------------------------------------------------------

SDMUX_MANUFACTURER = "Linux Automation GmbH"


@dataclass(frozen=True)
class SdMuxEntry:
    sg: Path  # /sys/class/scsi_generic/sgN
    usb_dir: Path  # the mux's USB device in sysfs
    product: str
    serial: str


def iter_sdmuxes(fs: Sysfs = REAL_SYSFS) -> Iterator[SdMuxEntry]:
    """Every USB-SD-Mux on the system, found through its SCSI generic node."""
    base = fs.sys / "class" / "scsi_generic"
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        usb_dir = blockdev.usb_device_dir(entry / "device", fs)
        if usb_dir is None:
            continue
        try:
            product = (usb_dir / "product").read_text().strip()
            serial = (usb_dir / "serial").read_text().strip()
        except OSError:
            continue
        if product.startswith("usb-sd-mux"):
            yield SdMuxEntry(entry, usb_dir, product, serial)


SG_HINT = (
    "the USB-SD-Mux is reached through its SCSI generic node, and /sys/class/scsi_generic "
    "is missing: load the kernel module sg (sudo modprobe sg) and have it loaded at boot "
    "(echo sg | sudo tee /etc/modules-load.d/rig.conf)"
)


def sg_loaded(fs: Sysfs = REAL_SYSFS) -> bool:
    """Whether the kernel has SCSI generic nodes (module sg); fresh hosts often lack it."""
    return (fs.sys / "class" / "scsi_generic").is_dir()


def find_sdmux_sg(serial: str, fs: Sysfs = REAL_SYSFS, *, where: str = "") -> Path:
    """/dev/sgN of the USB-SD-Mux with this serial: the udev link, else a sysfs walk."""
    link = fs.dev / "usb-sd-mux" / f"id-{serial}"
    if link.exists():
        return link.resolve()
    where = where or f"usb-sd-mux {serial}"
    if not sg_loaded(fs):
        raise InfraError(
            f"no USB-SD-Mux with serial {serial!r}: the kernel module sg is not loaded",
            where=where,
            hint=SG_HINT,
        )
    seen = []
    for mux in iter_sdmuxes(fs):
        seen.append(mux.serial)
        if mux.serial == serial:
            return fs.dev / mux.sg.name
    raise InfraError(
        f"no USB-SD-Mux with serial {serial!r} (found: {', '.join(seen) or 'none'})",
        where=where,
        hint="check the cable and the serial (printed on the mux; `rig doctor` lists them)",
    )


def _open_real(sg: Path) -> Any:
    from usbsdmux.usbsdmux import autoselect_driver

    return autoselect_driver(str(sg))


class UsbSdMuxDriver:
    """A Linux Automation USB-SD-Mux Classic or FAST, found by its serial."""

    def __init__(
        self,
        serial: str,
        *,
        find_sg: Callable[[str], Path] | None = None,
        open_mux: Callable[[Path], Any] = _open_real,
        disks: DiskFinder | None = None,
        wait: bool = True,
        fs: Sysfs = REAL_SYSFS,
        where: str = "",
    ) -> None:
        self.serial = serial
        self.where = where or f"usb-sd-mux {serial}"
        self.fs = fs
        self._find_sg = find_sg or (lambda s: find_sdmux_sg(s, fs, where=self.where))
        self._open = open_mux
        self.wait = wait
        self.disks = disks or UsbDiskFinder(self._usb_dir, fs)
        self._mux: Any = None

    def _usb_dir(self) -> Path:
        sg = self._find_sg(self.serial)
        usb_dir = blockdev.usb_device_dir(
            self.fs.sys / "class" / "scsi_generic" / sg.name / "device", self.fs
        )
        if usb_dir is None:
            raise InfraError(f"{sg} is not below a USB device", where=self.where)
        return usb_dir

    def mux(self) -> Any:
        if self._mux is None:
            sg = self._find_sg(self.serial)
            try:
                self._mux = self._open(sg)
            except PermissionError as e:
                raise InfraError(
                    f"permission denied opening {sg}", where=self.where, hint=UDEV_HINT
                ) from e
            except OSError as e:
                raise InfraError(f"cannot talk to the mux at {sg}: {e}", where=self.where) from e
            except Exception as e:  # usbsdmux's UnknownUsbSdMuxRevisionException and friends
                raise InfraError(f"{sg} is not a known USB-SD-Mux: {e}", where=self.where) from e
        return self._mux

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except PermissionError as e:
            raise InfraError(f"permission denied {what}", where=self.where, hint=UDEV_HINT) from e
        except InfraError:
            raise
        except Exception as e:  # usbsdmux raises its own I2C/SCSI exception types
            raise InfraError(f"mux failed {what}: {e}", where=self.where) from e

    def _switch(self, side: str) -> None:
        m = self.mux()
        fn = {"host": m.mode_host, "dut": m.mode_DUT, "off": m.mode_disconnect}[side]
        self._call(f"switching to {side}", lambda: fn(wait=self.wait))
        got = self.state()
        if got != side:
            raise InfraError(f"mux reports {got!r} after switching to {side!r}", where=self.where)

    def host(self) -> None:
        self._switch("host")

    def dut(self) -> None:
        self._switch("dut")

    def off(self) -> None:
        self._switch("off")

    def state(self) -> str:
        return str(self._call("reading the mode", lambda: self.mux().get_mode()))

    def disk(self, timeout: float) -> Path:
        return _card_disk(self, self.disks, timeout, f"usb-sd-mux {self.serial}", self.where)

    def card_identity(self) -> str | None:
        """'cid:<MID>-<OID>-<PNM>-<PSN>' of the card, read through the mux (host side only)."""
        try:
            if self.state() != "host":
                return None
            info = self.mux().get_card_info()
        except Exception:
            return None
        fields = {f["field"]: f for f in info.get("cid", {}).get("fields", [])}
        try:
            mid = fields["MID"]["raw"][0]
            oid = fields["OID"].get("value", "")
            pnm = fields["PNM"].get("value", "")
            psn = fields["PSN"]["raw"][0]
        except (KeyError, IndexError, TypeError):
            return None
        return f"cid:{mid:02x}-{oid}-{pnm}-{psn:08x}"


# -- SDWire ----------------------------------------------------------------------------

SDWIRE_VID = 0x04E8
SDWIRE_PID = 0x6001
FTDI_SET_BITMODE = 0x0B
FTDI_READ_PINS = 0x0C
CBUS_MODE = 0x20


# sd-mux-ctrl (Samsung/Tizen) programs three boards to one VID:PID and tells them apart
# by the product string it wrote into the FTDI EEPROM (getDeviceTypeFromString)
FTDI_MUX_KINDS = {
    "sd-wire": "SDWire",
    "sd-mux": "SD-MUX (Samsung, bit-bang pins; not supported)",
    "usb-mux": "USB-MUX (switches USB, not an SD card)",
}


def is_samsung_ftdi(dev: Any) -> bool:
    """Any of the sd-mux-ctrl boards: SDWire, SD-MUX, USB-MUX."""
    return dev.idVendor == SDWIRE_VID and dev.idProduct == SDWIRE_PID


def ftdi_product(dev: Any) -> str | None:
    if not dev.iProduct:
        return None
    try:
        return (dev.product or "").strip()
    except (usb.core.USBError, ValueError):
        return None


def is_sdwire(dev: Any) -> bool:
    return is_samsung_ftdi(dev) and ftdi_product(dev) == "sd-wire"


class SdwireMux:
    """SDWire / SDWireC: FTDI CBUS pin 0 selects the side (1 = host, 0 = DUT)."""

    def __init__(
        self,
        serial: str,
        *,
        backend: Any = None,
        disks: DiskFinder | None = None,
        fs: Sysfs = REAL_SYSFS,
        where: str = "",
    ) -> None:
        self.serial = serial
        self.backend = backend
        self.fs = fs
        self.where = where or f"sdwire {serial}"
        self.disks = disks or UsbDiskFinder(self._reader_dir, fs)

    def _device(self) -> Any:
        dev = find_by_serial(
            self.serial, is_samsung_ftdi, self.backend, what="SDWire", where=self.where
        )
        product = ftdi_product(dev)
        if product != "sd-wire":
            kind = FTDI_MUX_KINDS.get(product or "", "an unprogrammed or unknown FTDI board")
            raise ConfigError(
                f"the {SDWIRE_VID:04x}:{SDWIRE_PID:04x} device with serial {self.serial} is "
                f"{kind} (product string {product!r}), not an SDWire: its pins mean "
                "something else, so it is not switched",
                where=self.where,
                hint="an SDWire's FTDI says product 'sd-wire' (sd-mux-ctrl --set-serial "
                "--device-type=sd-wire programs it); check the serial in rig.yaml",
            )
        return dev

    def _reader_dir(self) -> Path:
        # the card reader sits beside the FTDI, below the SDWire's own hub
        return (self.fs.sys / "bus" / "usb" / "devices" / location(self._device())).resolve().parent

    def _set(self, host: bool) -> None:
        dev = self._device()
        value = (CBUS_MODE << 8) | 0xF0 | (1 if host else 0)
        try:
            dev.ctrl_transfer(0x40, FTDI_SET_BITMODE, value, 1, None)
        except usb.core.USBError as e:
            raise usb_error(e, "switching the SDWire", self.where) from e
        got = self.state()
        want = "host" if host else "dut"
        if got != want:
            raise InfraError(
                f"SDWire reports {got!r} after switching to {want!r}", where=self.where
            )

    def host(self) -> None:
        self._set(True)

    def dut(self) -> None:
        self._set(False)

    def off(self) -> None:
        raise ConfigError(
            "an SDWire has no 'off' position (the card is always on one side)",
            where=self.where,
            hint="use `dut` with the DUT powered off",
        )

    def state(self) -> str:
        dev = self._device()
        try:
            pins = bytes(dev.ctrl_transfer(0xC0, FTDI_READ_PINS, 0, 1, 1))
        except usb.core.USBError as e:
            raise usb_error(e, "reading the SDWire pins", self.where) from e
        return "host" if pins and pins[0] & 0x01 else "dut"

    def disk(self, timeout: float) -> Path:
        return _card_disk(self, self.disks, timeout, f"sdwire {self.serial}", self.where)

    def card_identity(self) -> str | None:
        return None  # the USB2640 reader has no CID pass-through


# -- the virtual rig's card ------------------------------------------------------------
