"""USB devices emulated at the pyusb backend boundary.

``EmulatedBus`` implements pyusb's ``IBackend``: ``usb.core.find(backend=bus)``
returns ordinary ``usb.core.Device`` objects, and the production drivers send
their real control transfers and HID reports to the devices below. Every
request is checked against the protocol in the hardware reference (request
type, request, value, index and length exactly); anything else stalls the
endpoint, i.e. raises ``USBError`` with errno 32 (EPIPE) as libusb does on a
real device. Each device records its transfers so tests can assert the bytes.

Devices: a per-port-switching USB2 hub with its USB3 companion (paired by a
BOS Container ID, as uhubctl pairs them), a ganged hub (the Pi 4's VL805), a
Yepkit YKUSH (64-byte HID reports) and an SDWire (FTDI CBUS bit-bang). Port
power and mux sides live in ``VirtualHardware``, so the virtual Pis follow.
"""

from __future__ import annotations

import array
import errno
import struct
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from rig.virtual.hw.state import VirtualHardware

# libusb error codes pyusb reports as backend_error_code
_LIBUSB_ERROR_ACCESS = -3
_LIBUSB_ERROR_TIMEOUT = -7
_LIBUSB_ERROR_PIPE = -9


def stall(why: str) -> usb.core.USBError:
    """What libusb raises when the device answers a request with STALL."""
    err = usb.core.USBError(f"Pipe error ({why})", _LIBUSB_ERROR_PIPE, errno.EPIPE)
    return err


@dataclass
class Transfer:
    """One control transfer as it went over the wire (data: OUT payload or IN length)."""

    bmRequestType: int
    bRequest: int
    wValue: int
    wIndex: int
    data: bytes | int


@dataclass
class Endpoint:
    address: int
    attributes: int = 0x03  # interrupt
    max_packet: int = 64


@dataclass
class Interface:
    number: int
    cls: int
    endpoints: list[Endpoint] = field(default_factory=list)


class EmulatedDevice:
    """A USB device: descriptors, string table, standard requests, a transfer log."""

    bcd_usb = 0x0200
    device_class = 0
    vid = 0
    pid = 0
    manufacturer = ""
    product = ""

    def __init__(
        self,
        bus: int,
        ports: tuple[int, ...],
        serial: str | None = None,
        *,
        denied: bool = False,
        container_id: bytes | None = None,
    ) -> None:
        self.bus = bus
        self.port_numbers = ports
        self.address = 0  # set by the bus
        self.serial = serial
        self.denied = denied
        self.container_id = container_id
        self.transfers: list[Transfer] = []
        self.interfaces: list[Interface] = []
        self.kernel_driver: set[int] = set()
        self.lock = threading.Lock()

    @property
    def location(self) -> str:
        return f"{self.bus}-{'.'.join(map(str, self.port_numbers))}"

    # -- descriptors ------------------------------------------------------------

    def strings(self) -> dict[int, str]:
        table = {1: self.manufacturer, 2: self.product}
        if self.serial is not None:
            table[3] = self.serial
        return {k: v for k, v in table.items() if v}

    def device_descriptor(self) -> SimpleNamespace:
        strings = self.strings()
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=0x01,
            bcdUSB=self.bcd_usb,
            bDeviceClass=self.device_class,
            bDeviceSubClass=0,
            bDeviceProtocol=1 if self.device_class == 9 and self.bcd_usb >= 0x0200 else 0,
            bMaxPacketSize0=9 if self.bcd_usb >= 0x0300 else 64,
            idVendor=self.vid,
            idProduct=self.pid,
            bcdDevice=0x0100,
            iManufacturer=1 if 1 in strings else 0,
            iProduct=2 if 2 in strings else 0,
            iSerialNumber=3 if 3 in strings else 0,
            bNumConfigurations=1,
            address=self.address,
            bus=self.bus,
            port_number=self.port_numbers[-1] if self.port_numbers else None,
            port_numbers=self.port_numbers,
            speed=4 if self.bcd_usb >= 0x0300 else 3,
        )

    def bos(self) -> bytes | None:
        if self.container_id is None:
            return None
        cap = struct.pack("<BBBB", 20, 0x10, 0x04, 0) + self.container_id
        return struct.pack("<BBHB", 5, 0x0F, 5 + len(cap), 1) + cap

    # -- requests -----------------------------------------------------------------

    def control(self, rt: int, req: int, value: int, index: int, data: array.array) -> bytes | int:
        """Answer a control transfer: bytes for IN, the count written for OUT."""
        length = len(data) * data.itemsize
        is_in = bool(rt & 0x80)
        with self.lock:
            self.transfers.append(
                Transfer(rt, req, value, index, length if is_in else bytes(data.tobytes()))
            )
        if rt == 0x80 and req == 0x06:
            return self._standard_descriptor(value, index, length)
        return self.request(rt, req, value, index, length, b"" if is_in else data.tobytes())

    def _standard_descriptor(self, value: int, index: int, length: int) -> bytes:
        kind, number = value >> 8, value & 0xFF
        if kind == 0x03:  # string
            if number == 0:
                return bytes([4, 0x03, 0x09, 0x04])[:length]
            text = self.strings().get(number)
            if text is None or index != 0x0409:
                raise stall(f"no string {number} in language {index:#06x}")
            raw = text.encode("utf-16-le")
            return (bytes([2 + len(raw), 0x03]) + raw)[:length]
        if kind == 0x0F and index == 0:
            bos = self.bos()
            if bos is not None:
                return bos[:length]
        raise stall(f"GET_DESCRIPTOR {value:#06x} not supported")

    def request(
        self, rt: int, req: int, value: int, index: int, length: int, payload: bytes
    ) -> bytes | int:
        raise stall(f"request {rt:#04x}/{req:#04x} not supported")

    def interrupt_write(self, ep: int, data: bytes) -> int:
        raise stall(f"no OUT endpoint {ep:#04x}")

    def interrupt_read(self, ep: int, size: int) -> bytes:
        raise stall(f"no IN endpoint {ep:#04x}")


# -- hubs -------------------------------------------------------------------------------

HUB_CLASS = 9
PORT_POWER = 8
USB2_POWER_BIT = 0x0100
USB3_POWER_BIT = 0x0200
CONNECT_BIT = 0x0001


class EmulatedHub(EmulatedDevice):
    """A hub whose port power is kept in VirtualHardware.

    Each half of a USB3 hub keeps its own PORT_POWER bit; the port's VBUS (what
    the DUT sees) is on while either half has it on, which is why a driver that
    switches only one half never really cuts the power.
    """

    device_class = HUB_CLASS
    vid = 0x0BDA
    pid = 0x5411
    manufacturer = "Generic"
    product = "USB2.1 Hub"
    characteristics = 0x0001  # per-port power switching (PPPS)

    def __init__(
        self,
        hw: VirtualHardware,
        bus: int,
        ports: tuple[int, ...],
        *,
        nports: int = 4,
        power_key: str | None = None,
        half: str = "usb2",
        kernel_repowers: bool = False,
        sysfs: Path | None = None,
        status_lies: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(bus, ports, **kw)
        self.hw = hw
        self.nports = nports
        self.power_key = power_key or self.location  # the location the virtual Pis watch
        self.half = half
        self.bcd_usb = 0x0300 if half == "usb3" else 0x0210
        self.interfaces = [Interface(0, HUB_CLASS, [Endpoint(0x81, 0x03, 2)])]
        # Linux >= 6.0 powers a port switched off through usbfs on again; its per-port
        # sysfs "disable" file switches it off for good (why uhubctl writes that file)
        self.kernel_repowers = kernel_repowers
        self.sysfs = sysfs
        self._disabled: dict[int, str] = {}
        # the status bit follows the request, VBUS does not (a hub that reports PPPS
        # without wiring it): only a physical check finds it
        self.status_lies = status_lies
        self._reported: dict[int, bool] = {}
        if sysfs is not None:
            for p in range(1, nports + 1):  # an unpowered port reads as disabled
                state = "0" if hw.port_power(self.power_key, p) else "1"
                f = self.disable_file(p)
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(state + "\n")
                self._disabled[p] = state

    def disable_file(self, port: int) -> Path:
        assert self.sysfs is not None
        loc = self.location
        return self.sysfs / "bus/usb/devices" / f"{loc}:1.0" / f"{loc}-port{port}" / "disable"

    def _sync_sysfs(self) -> None:
        """What the kernel did with what was written to the disable files since."""
        if self.sysfs is None:
            return
        for p in range(1, self.nports + 1):
            value = self.disable_file(p).read_text().strip()
            if value != self._disabled.get(p):
                self._disabled[p] = value
                self._power_request(p, value == "0")

    # the per-half bits, beside the physical VBUS in VirtualHardware
    def _half_bits(self) -> dict[str, bool]:
        extra = self.hw.extra(f"hub:{self.power_key}")
        bits = extra.get(self.half)
        if bits is None:
            return {
                str(p): self.hw.port_power(self.power_key, p) for p in range(1, self.nports + 1)
            }
        return bits

    def _set_power(self, port: int, on: bool) -> None:
        ports = range(1, self.nports + 1) if self.characteristics & 0x3 == 0 else [port]
        # read outside the update: the state lock is not re-entrant
        vbus_now = {
            str(p): self.hw.port_power(self.power_key, p) for p in range(1, self.nports + 1)
        }

        def update(extra: dict[str, Any]) -> None:
            for half in ("usb2", "usb3"):
                extra.setdefault(half, dict(vbus_now))
            for p in ports:
                extra[self.half][str(p)] = on

        extra = self.hw.update_extra(f"hub:{self.power_key}", update)
        for p in ports:
            vbus = extra["usb2"][str(p)] or extra["usb3"][str(p)]
            self.hw.set_port_power(self.power_key, p, vbus, hub_halves=False)

    def descriptor(self) -> bytes:
        if self.half == "usb3":
            return struct.pack(
                "<BBBHBBBHH", 12, 0x2A, self.nports, self.characteristics, 50, 0, 0, 0, 0
            )
        return struct.pack("<BBBHBBBB", 9, 0x29, self.nports, self.characteristics, 50, 0, 0, 0xFF)

    def _power_request(self, port: int, on: bool) -> None:
        self._reported[port] = on
        if not self.status_lies:
            self._set_power(port, on)

    def request(
        self, rt: int, req: int, value: int, index: int, length: int, payload: bytes
    ) -> bytes | int:
        self._sync_sysfs()
        want_desc = 0x2A00 if self.half == "usb3" else 0x2900
        if (rt, req, value, index, length) == (0xA0, 0x06, want_desc, 0, 12):
            return self.descriptor()[:length]
        if rt == 0xA3 and req == 0x00 and value == 0 and length == 4:
            if not 1 <= index <= self.nports:
                raise stall(f"GET_STATUS for port {index} of {self.nports}")
            on = self._half_bits().get(str(index), False) and self.hw.port_power(
                self.power_key, index
            )
            if self.status_lies and index in self._reported:
                on = self._reported[index]
            bit = USB3_POWER_BIT if self.half == "usb3" else USB2_POWER_BIT
            # a Pi's power input has no data lines: never a connect bit
            return struct.pack("<HH", bit if on else 0, 0)
        if rt == 0x23 and req in (0x01, 0x03) and value == PORT_POWER and length == 0:
            if not 1 <= index <= self.nports:
                raise stall(f"PORT_POWER for port {index} of {self.nports}")
            self._power_request(index, req == 0x03)
            if req == 0x01 and self.kernel_repowers and self._disabled.get(index) != "1":
                self._power_request(index, True)  # the kernel's hub driver turns it back on
            return 0
        raise stall(
            f"hub request {rt:#04x}/{req:#04x} value={value:#06x} index={index} length={length}"
        )


class GangedHub(EmulatedHub):
    """A hub without per-port switching (like the Pi 4's VL805): one switch for all ports."""

    vid = 0x2109
    pid = 0x3431
    manufacturer = "VIA Labs, Inc."
    product = "USB2.0 Hub"
    characteristics = 0x0000


def hub_pair(
    hw: VirtualHardware,
    location: str,
    *,
    nports: int = 4,
    usb3_bus: int | None = None,
    usb3_ports: tuple[int, ...] | None = None,
    container_id: bytes | None = None,
    **kw: Any,
) -> tuple[EmulatedHub, EmulatedHub]:
    """A USB3 hub as Linux sees it: a USB2 half at ``location`` and a USB3 half on another bus.

    ``usb3_ports``: the USB3 half's port path where it differs (behind a Pi 4's VL805 the
    USB2 half is one level deeper); ``container_id``: a hard-coded one, as some hubs ship,
    so that two identical hubs share it (default: unique per hub).
    """
    bus_text, _, chain = location.partition("-")
    ports = tuple(int(p) for p in chain.split("."))
    cid = container_id or uuid.uuid5(uuid.NAMESPACE_URL, f"rig-virtual-hub:{location}").bytes
    usb2 = EmulatedHub(hw, int(bus_text), ports, nports=nports, container_id=cid, **kw)
    usb3 = EmulatedHub(
        hw,
        usb3_bus or int(bus_text) + 1,
        ports if usb3_ports is None else usb3_ports,
        nports=nports,
        power_key=location,
        half="usb3",
        container_id=cid,
        **kw,
    )
    usb3.product = "USB3.2 Hub"
    usb3.pid = 0x0411
    return usb2, usb3


class RootHub(EmulatedHub):
    """A host controller's root hub (Linux: 1d6b:0002 / 1d6b:0003), no port path."""

    vid = 0x1D6B
    manufacturer = "Linux Foundation"

    def __init__(self, hw: VirtualHardware, bus: int, *, usb3: bool, nports: int = 4) -> None:
        super().__init__(
            hw, bus, (), nports=nports, power_key=f"usb{bus}", half="usb3" if usb3 else "usb2"
        )
        self.pid = 0x0003 if usb3 else 0x0002
        self.product = f"{'3' if usb3 else '2'}.0 root hub"

    @property
    def location(self) -> str:
        return f"usb{self.bus}"


def pi4_host(hw: VirtualHardware) -> list[EmulatedDevice]:
    """A Raspberry Pi 4 B's USB as uhubctl knows it: the VL805 controller's USB3 root hub
    (bus 2, no Container ID) and, on the USB2 root hub (bus 1), the VL805's internal
    USB2 hub 2109:3431 at 1-1 (ganged, with the Container ID uhubctl fakes for bus 2)."""
    vl805 = GangedHub(hw, 1, (1,), nports=4, container_id=RPI4_VL805_ID)
    return [RootHub(hw, 1, usb3=False, nports=1), vl805, RootHub(hw, 2, usb3=True)]


RPI4_VL805_ID = bytes.fromhex("5cf3ee30d5074925b001802d79434c30")


# -- YKUSH ------------------------------------------------------------------------------


class EmulatedYkush(EmulatedDevice):
    """Yepkit YKUSH: 64-byte HID reports on interrupt endpoints 0x01 / 0x81.

    The family differs (ykushcmd src/ykush*/, pykush): ports, report size, the
    YKUSH3's 5 V output addressed as port 4; see the subclasses.
    """

    vid = 0x04D8
    pid = 0xF2F7
    manufacturer = "Yepkit Lda."
    product = "YKUSH"
    nports = 3
    report = 64
    ext_output = False  # YKUSH3: 0x14 / 0x04 / 0x24 switch and read its 5 V output
    endpoints = (0x01, 0x81)  # OUT, IN

    def __init__(
        self,
        hw: VirtualHardware,
        bus: int,
        ports: tuple[int, ...],
        serial: str,
        *,
        endpoints: tuple[int, int] | None = None,
        **kw: Any,
    ):
        super().__init__(bus, ports, serial, **kw)
        self.hw = hw
        if endpoints is not None:
            self.endpoints = endpoints
        out, ins = self.endpoints
        self.interfaces = [Interface(0, 3, [Endpoint(ins), Endpoint(out)])]
        self.kernel_driver = {0}  # usbhid binds it until a driver detaches it
        self.reports: list[bytes] = []
        self._reply: bytes | None = None

    @property
    def power_key(self) -> str:
        return f"ykush:{self.serial}"

    def interrupt_write(self, ep: int, data: bytes) -> int:
        if ep != self.endpoints[0]:
            raise stall(f"no OUT endpoint {ep:#04x}")
        if 0 in self.kernel_driver:
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)
        if len(data) != self.report or any(data[1:]):
            raise stall(f"{self.product} reports are {self.report} bytes: opcode then zeros")
        self.reports.append(bytes(data))
        op = data[0]
        hi, lo = op >> 4, op & 0x0F
        reply = [0] * self.report
        reply[0] = 1
        ext = self.ext_output and lo == 4
        if op == 0xF0:
            reply[1:3] = [2, 1]
        elif op == 0xF1:
            reply[1] = self.nports
        elif hi in (0, 1) and (1 <= lo <= self.nports or lo == 0x0A or ext):
            ports = range(1, self.nports + 1) if lo == 0x0A else [lo]
            for p in ports:
                self.hw.set_port_power(self.power_key, p, hi == 1)
            reply[1] = op
        elif hi == 2 and (1 <= lo <= self.nports or ext):
            reply[1] = (0x10 if self.hw.port_power(self.power_key, lo) else 0) | lo
        elif op == 0x2A:
            reply[1] = sum(
                1 << (p - 1)
                for p in range(1, self.nports + 1)
                if self.hw.port_power(self.power_key, p)
            )
        else:
            reply[0] = 0  # unknown opcode: the firmware answers with a failed status
        self._reply = bytes(reply)
        return self.report

    def interrupt_read(self, ep: int, size: int) -> bytes:
        if ep != self.endpoints[1]:
            raise stall(f"no IN endpoint {ep:#04x}")
        if self._reply is None:
            raise usb.core.USBTimeoutError(
                "Operation timed out", _LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT
            )
        reply, self._reply = self._reply, None
        return reply[:size]


class EmulatedYkush3(EmulatedYkush):
    pid = 0xF11B
    product = "YKUSH3"
    ext_output = True


class EmulatedYkushXs(EmulatedYkush):
    pid = 0xF0CD
    product = "YKUSH XS"
    nports = 1


class EmulatedYkush2(EmulatedYkush):
    pid = 0xEFED
    product = "YKUSH2"
    nports = 2


class EmulatedYkushLegacy(EmulatedYkush):
    """The first YKUSH boards (0x0042): 6-byte reports (ykushcmd's is_legacy)."""

    pid = 0x0042
    report = 6


# -- SDWire -------------------------------------------------------------------------------


class EmulatedSdwire(EmulatedDevice):
    """SDWire: an FT200XD whose CBUS pin 0 selects the card side (1 = host / TS)."""

    vid = 0x04E8
    pid = 0x6001
    manufacturer = "SRPOL"
    product = "sd-wire"

    def __init__(
        self, hw: VirtualHardware, bus: int, ports: tuple[int, ...], serial: str, **kw: Any
    ):
        super().__init__(bus, ports, serial, **kw)
        self.hw = hw
        self.interfaces = [Interface(0, 0xFF, [Endpoint(0x81, 0x02), Endpoint(0x02, 0x02)])]

    def request(
        self, rt: int, req: int, value: int, index: int, length: int, payload: bytes
    ) -> bytes | int:
        if rt == 0x40 and req == 0x0B and index == 1 and length == 0:
            mode, mask = value >> 8, value & 0xFF
            if mode != 0x20 or mask & 0xF0 != 0xF0:
                raise stall(f"SET_BITMODE {value:#06x} is not a CBUS bit-bang write")
            self.hw.set_mux_side(self.serial or "", "host" if mask & 0x01 else "dut")
            return 0
        if (rt, req, value, index, length) == (0xC0, 0x0C, 0, 1, 1):
            return bytes([1 if self.hw.mux_side(self.serial or "") == "host" else 0])
        raise stall(f"FTDI request {rt:#04x}/{req:#04x} value={value:#06x} index={index}")


class EmulatedSdMux(EmulatedSdwire):
    """Samsung's SD-MUX, programmed by sd-mux-ctrl to the SDWire's VID:PID but with
    product "sd-mux": it is switched by bit-banging its data pins, its CBUS pins are
    not GPIO, so a CBUS write is accepted and moves nothing (pins read 0)."""

    product = "sd-mux"

    def request(
        self, rt: int, req: int, value: int, index: int, length: int, payload: bytes
    ) -> bytes | int:
        if rt == 0x40 and req == 0x0B and index == 1 and length == 0:
            return 0  # the FTDI takes the mode; nothing is wired to CBUS
        if (rt, req, value, index, length) == (0xC0, 0x0C, 0, 1, 1):
            return bytes([0])
        raise stall(f"FTDI request {rt:#04x}/{req:#04x} value={value:#06x} index={index}")


class EmulatedUsbMux(EmulatedSdMux):
    """sd-mux-ctrl's USB-MUX: the same VID:PID, product "usb-mux"; switches a USB port."""

    product = "usb-mux"


# -- the bus ----------------------------------------------------------------------------


class EmulatedBus(usb.backend.IBackend):
    """A pyusb backend whose devices are the emulated ones above."""

    def __init__(self, devices: list[EmulatedDevice]) -> None:
        self.devices = list(devices)
        for n, dev in enumerate(self.devices, start=2):
            dev.address = n
        self.open_handles = 0

    def device(self, location: str) -> EmulatedDevice:
        for dev in self.devices:
            if dev.location == location:
                return dev
        raise KeyError(location)

    # enumeration and descriptors
    def enumerate_devices(self) -> Any:
        return iter(self.devices)

    def get_parent(self, dev: EmulatedDevice) -> Any:
        return None

    def get_device_descriptor(self, dev: EmulatedDevice) -> Any:
        return dev.device_descriptor()

    def get_configuration_descriptor(self, dev: EmulatedDevice, config: int) -> Any:
        if config != 0:
            raise IndexError(config)
        total = 9 + sum(9 + 7 * len(i.endpoints) for i in dev.interfaces)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=0x02,
            wTotalLength=total,
            bNumInterfaces=len(dev.interfaces),
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=0xE0,
            bMaxPower=50,
            extra_descriptors=[],
        )

    def get_interface_descriptor(
        self, dev: EmulatedDevice, intf: int, alt: int, config: int
    ) -> Any:
        if config != 0 or alt != 0 or intf >= len(dev.interfaces):
            raise IndexError((intf, alt, config))
        i = dev.interfaces[intf]
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=0x04,
            bInterfaceNumber=i.number,
            bAlternateSetting=0,
            bNumEndpoints=len(i.endpoints),
            bInterfaceClass=i.cls,
            bInterfaceSubClass=0,
            bInterfaceProtocol=0,
            iInterface=0,
            extra_descriptors=[],
        )

    def get_endpoint_descriptor(
        self, dev: EmulatedDevice, ep: int, intf: int, alt: int, config: int
    ) -> Any:
        e = dev.interfaces[intf].endpoints[ep]
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=0x05,
            bEndpointAddress=e.address,
            bmAttributes=e.attributes,
            wMaxPacketSize=e.max_packet,
            bInterval=1,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=[],
        )

    # handles
    def open_device(self, dev: EmulatedDevice) -> Any:
        if dev.denied:
            raise usb.core.USBError(
                "Access denied (insufficient permissions)", _LIBUSB_ERROR_ACCESS, errno.EACCES
            )
        self.open_handles += 1
        return dev

    def close_device(self, dev_handle: EmulatedDevice) -> None:
        self.open_handles -= 1

    def set_configuration(self, dev_handle: EmulatedDevice, config_value: int) -> None:
        if config_value != 1:
            raise stall(f"configuration {config_value}")

    def get_configuration(self, dev_handle: EmulatedDevice) -> int:
        return 1

    def claim_interface(self, dev_handle: EmulatedDevice, intf: int) -> None:
        if intf in dev_handle.kernel_driver:
            raise usb.core.USBError("Resource busy", -6, errno.EBUSY)

    def release_interface(self, dev_handle: EmulatedDevice, intf: int) -> None:
        return None

    def is_kernel_driver_active(self, dev_handle: EmulatedDevice, intf: int) -> bool:
        return intf in dev_handle.kernel_driver

    def detach_kernel_driver(self, dev_handle: EmulatedDevice, intf: int) -> None:
        dev_handle.kernel_driver.discard(intf)

    def attach_kernel_driver(self, dev_handle: EmulatedDevice, intf: int) -> None:
        dev_handle.kernel_driver.add(intf)

    # transfers
    def ctrl_transfer(
        self,
        dev_handle: EmulatedDevice,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array,
        timeout: int,
    ) -> int:
        result = dev_handle.control(bmRequestType, bRequest, wValue, wIndex, data)
        if bmRequestType & 0x80:
            assert isinstance(result, bytes)
            raw = array.array("B", result)
            n = min(len(raw), len(data) * data.itemsize)
            data[:n] = raw[:n]
            return n
        return int(result)

    def intr_write(
        self, dev_handle: EmulatedDevice, ep: int, intf: int, data: Any, timeout: int
    ) -> int:
        return dev_handle.interrupt_write(
            ep, bytes(data.tobytes() if hasattr(data, "tobytes") else data)
        )

    def intr_read(
        self, dev_handle: EmulatedDevice, ep: int, intf: int, buff: Any, timeout: int
    ) -> int:
        raw = dev_handle.interrupt_read(ep, len(buff))
        buff[: len(raw)] = array.array("B", raw)
        return len(raw)


VIRTUAL_HUB = "1-1"
VIRTUAL_YKUSH = "YK00042"
VIRTUAL_SDWIRE = "sd-wire_42"


def virtual_bus(hw: VirtualHardware) -> EmulatedBus:
    """The virtual rig's USB bus: the DUTs' PPPS hub pair, a ganged hub, a YKUSH, an SDWire."""
    usb2, usb3 = hub_pair(hw, VIRTUAL_HUB, usb3_bus=2)
    return EmulatedBus(
        [
            usb2,
            usb3,
            GangedHub(hw, 3, (1,), nports=4),
            EmulatedYkush(hw, 1, (1, 4), VIRTUAL_YKUSH),
            EmulatedSdwire(hw, 1, (2,), VIRTUAL_SDWIRE),
        ]
    )
