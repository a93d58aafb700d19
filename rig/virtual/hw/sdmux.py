"""The Linux Automation USB-SD-Mux, emulated at the SG_IO ioctl below ``usbsdmux``.

The seam: ``usbsdmux.usb2642.Usb2642._call_IOCTL`` builds the real
``sg_io_hdr_t`` (``_get_SGIO``), then opens ``/dev/sgN`` and calls
``ioctl(fd, SG_IO, hdr)``. ``EmulatedUsb2642`` keeps the first half and hands
the header to ``EmulatedUsbSdMux.sg_io`` instead of the kernel. Everything above
(the I2C-over-SCSI command blocks, the PCA9536 / TCA6408 register protocol, the
mode sequences of ``UsbSdMuxClassic`` / ``UsbSdMuxFast``, the CID read) is the
unmodified ``usbsdmux`` code, decoded here from raw memory exactly as the
USB2642 would see it.

Registers of the GPIO expander persist in ``VirtualHardware`` (so another
process sees the same mux); the pin levels decide the side, which attaches or
detaches the card image (a loop device) like the real card reader would.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from typing import Any

from usbsdmux.i2c_gpio import Pca9536, Tca6408
from usbsdmux.usb2642 import IoctlFailed, Usb2642
from usbsdmux.usbsdmux import UsbSdMux, UsbSdMuxClassic, UsbSdMuxFast

from rig.virtual.hw.state import VirtualHardware

SG_IO = 0x2285
SCSI_GOOD = 0
SCSI_CHECK_CONDITION = 2

MODEL_CLASSIC = "sdmux HS-SD/MMC"
MODEL_FAST = "sdFST HS-SD/MMC"

# (expander address, PWR_disable pin, select_DUT pin, DAT_disable, card_removed, mux pins,
#  power-on pull levels) per variant, as in usbsdmux.usbsdmux
_VARIANTS = {
    MODEL_CLASSIC: (Pca9536._I2cAddr, 0x02, 0x04, 0x01, 0x08, 0x0F, 0x0F),
    MODEL_FAST: (Tca6408._I2cAddr, 0x02, 0x01, 0x04, 0x08, 0x0F, 0x39),
}


class EmulatedUsbSdMux:
    """One USB2642 + GPIO expander + card slot, answering SG_IO headers."""

    def __init__(
        self,
        hw: VirtualHardware,
        serial: str,
        *,
        model: str = MODEL_CLASSIC,
        power_on_reset: bool = False,
    ) -> None:
        self.hw = hw
        self.serial = serial
        self.model = model
        self.addr, self.pwr, self.dut, self.dat, self.removed, self.mask, self.pulls = _VARIANTS[
            model
        ]
        self.power_on_reset = power_on_reset
        self.commands: list[bytes] = []  # every CDB, for tests
        self.i2c: list[tuple[str, int, int | None]] = []  # decoded: (write|read, reg, value)
        self.lock = threading.Lock()

    # -- registers --------------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"sdmux:{self.serial}"

    def _pins_for(self, side: str) -> int:
        if side == "off":
            return self.dat | self.pwr | self.removed
        if side == "dut":
            return self.dut | self.removed
        return 0

    def _regs(self) -> dict[str, int]:
        regs = self.hw.extra(self.key)
        if regs:
            return {k: int(v) for k, v in regs.items()}
        if self.power_on_reset:  # fresh from the factory: all inputs, outputs latched high
            return {"output": 0xFF, "polarity": 0, "config": 0xFF}
        # the rig has driven this mux before: outputs hold the stored side
        return {
            "output": 0xF0 | self._pins_for(self.hw.mux_side(self.serial)),
            "polarity": 0,
            "config": 0xFF & ~self.mask,
        }

    def _levels(self, regs: dict[str, int]) -> int:
        """Pin levels: driven outputs, pull resistors on inputs."""
        return (regs["output"] & ~regs["config"] | self.pulls & regs["config"]) & 0xFF

    def _side(self, levels: int) -> str:
        if levels & self.pwr:
            return "off"
        return "dut" if levels & self.dut else "host"

    def read_register(self, reg: int) -> int:
        regs = self._regs()
        if reg == 0:
            levels = self._levels(regs)
            side = self.hw.mux_side(self.serial)
            if self._side(levels) != side:  # changed behind the expander's back (tests, reset)
                levels = levels & ~self.mask | self._pins_for(side)
            return levels ^ regs["polarity"]
        return {1: regs["output"], 2: regs["polarity"], 3: regs["config"]}[reg]

    def write_register(self, reg: int, value: int) -> None:
        regs = self._regs()
        regs[{1: "output", 2: "polarity", 3: "config"}[reg]] = value & 0xFF

        def store(extra: dict[str, Any]) -> None:
            extra.clear()
            extra.update(regs)

        self.hw.update_extra(self.key, store)
        self.hw.set_mux_side(self.serial, self._side(self._levels(regs)))

    # -- the card's registers (CID, CSD, SCR) --------------------------------------------

    def cid(self) -> bytes:
        """A per-card CID: manufacturer 0x1B, OEM 'SM', name 'RIGV', serial from the card."""
        psn = int.from_bytes(hashlib.sha256(self.serial.encode()).digest()[:4], "big")
        body = struct.pack(">B2s5sBIH", 0x1B, b"SM", b"RIGV0", 0x10, psn, 0x0188)
        return body + bytes([0x01])  # CRC7 left as 0, end bit 1

    def csd(self) -> bytes:
        # CSD 2.0 (SDHC), C_SIZE from the card image size
        c_size = max(0, self.hw.size_of(self.serial) // (512 * 1024) - 1)
        raw = (1 << 126) | (0x0E << 112) | (0x32 << 96) | (0x5B5 << 84) | (9 << 80)
        raw |= (c_size & 0x3FFFFF) << 48
        raw |= (1 << 46) | (0x7F << 39) | (2 << 26) | (9 << 22) | 1
        return raw.to_bytes(16, "big")

    def scr(self) -> bytes:
        return bytes([0x02, 0x35, 0x80, 0x00, 0, 0, 0, 0])

    # -- SG_IO ------------------------------------------------------------------------

    def sg_io(self, hdr: Any) -> int:
        """Do what the kernel + USB2642 do with one sg_io_hdr_t; returns the ioctl result."""
        if hdr.interface_id != ord("S"):
            raise OSError(22, "Invalid argument")
        cdb = ctypes.string_at(hdr.cmdp, hdr.cmd_len)
        with self.lock:
            self.commands.append(cdb)
        length = hdr.dxfer_len
        data = ctypes.string_at(hdr.dxferp, length) if length else b""
        status, reply = self._command(cdb, hdr.dxfer_direction, data)
        if reply is not None:
            ctypes.memmove(hdr.dxferp, reply, min(len(reply), length))
        hdr.status = status
        hdr.masked_status = status >> 1
        hdr.host_status = 0
        hdr.driver_status = 0x08 if status else 0  # DRIVER_SENSE
        hdr.resid = 0
        hdr.duration = 1
        return 0

    def _command(self, cdb: bytes, direction: int, data: bytes) -> tuple[int, bytes | None]:
        if len(cdb) < 16 or cdb[0] != 0xCF:
            return SCSI_CHECK_CONDITION, None  # ILLEGAL REQUEST: unknown opcode
        action = cdb[1]
        if action == 0x23 and direction == Usb2642._SG_DXFER_TO_DEV:  # I2C write
            count = cdb[4] << 8 | cdb[5]
            if cdb[2] != self.addr << 1 or cdb[6] != 0 or count != 2 or cdb[3] != 0:
                return SCSI_CHECK_CONDITION, None  # NAK: nobody at that address
            reg, value = data[0], data[1]
            if reg not in (1, 2, 3):
                return SCSI_CHECK_CONDITION, None
            self.i2c.append(("write", reg, value))
            self.write_register(reg, value)
            return SCSI_GOOD, None
        if action == 0x22 and direction == Usb2642._SG_DXFER_FROM_DEV:  # I2C write-read
            count = cdb[4] << 8 | cdb[5]
            if cdb[2] != self.addr << 1 or cdb[3] != (self.addr << 1) + 1:
                return SCSI_CHECK_CONDITION, None
            if cdb[6] != 1 or count != 1 or cdb[7] > 3:
                return SCSI_CHECK_CONDITION, None
            self.i2c.append(("read", cdb[7], None))
            return SCSI_GOOD, bytes([self.read_register(cdb[7])])
        if action in (0x18, 0x1A, 0x1B) and direction == Usb2642._SG_DXFER_FROM_DEV:
            size = {0x18: 16, 0x1A: 16, 0x1B: 8}[action]
            if cdb[4] != size or any(cdb[2:4]) or any(cdb[5:]):
                return SCSI_CHECK_CONDITION, None
            if self.hw.mux_side(self.serial) != "host":
                return SCSI_CHECK_CONDITION, None  # no card powered on the reader's side
            reg = {0x18: self.cid, 0x1A: self.csd, 0x1B: self.scr}[action]()
            return SCSI_GOOD, reg
        return SCSI_CHECK_CONDITION, None


class EmulatedUsb2642(Usb2642):
    """usbsdmux's USB2642 transport with the ioctl answered by an emulated device."""

    def __init__(self, device: EmulatedUsbSdMux) -> None:
        super().__init__(f"/dev/virtual-sg/{device.serial}")
        self.device = device

    def _call_IOCTL(self, command: Any, sg_dxfer: int, databuffer: Any) -> Any:
        sgio, sense = self._get_SGIO(command, sg_dxfer, databuffer)
        rc = self.device.sg_io(sgio)  # instead of fcntl.ioctl(open(self.sg), SG_IO, sgio)
        if rc != 0:
            raise IoctlFailed(f"SG_IO ioctl() failed with non-zero exit-code {rc}")
        return databuffer, sense, sgio


def open_emulated(device: EmulatedUsbSdMux) -> UsbSdMux:
    """usbsdmux's own Classic/Fast class, talking to the emulated device.

    Mirrors the two-line constructors of UsbSdMuxClassic / UsbSdMuxFast with the
    transport swapped; all mode logic stays usbsdmux's.
    """
    usb = EmulatedUsb2642(device)
    if device.model == MODEL_FAST:
        fast = UsbSdMuxFast.__new__(UsbSdMuxFast)
        fast._tca = Tca6408.__new__(Tca6408)
        fast._tca._usb = usb
        fast._assure_default_state()
        fast._usb = usb
        return fast
    classic = UsbSdMuxClassic.__new__(UsbSdMuxClassic)
    classic._pca = Pca9536.__new__(Pca9536)
    classic._pca._usb = usb
    classic._usb = usb
    return classic
