"""Power switches: per-port USB hubs, Yepkit YKUSH, and shell commands for relays/PDUs.

All three satisfy ``rig.hardware.protocols.PowerSwitch``. After every change
the state is read back; a port that does not follow is an InfraError, never a
silent success. ``cycle`` waits ``off_time`` between off and on: that wait is
physics (a Pi 3's capacitors must drain), not a guess about timing.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import usb.core
import usb.util

from rig.errors import ConfigError, InfraError
from rig.hardware.hubpair import companion, container_id, host_model, hub_facts, is_rpi_4b, score
from rig.hardware.usbfind import find_by_location, find_by_serial, location, usb_error

# USB hub class requests (USB 2.0 spec ch. 11.24, USB 3.2 ch. 10.16)
HUB_DESCRIPTOR_USB2 = 0x2900
HUB_DESCRIPTOR_USB3 = 0x2A00
GET_STATUS = 0x00
CLEAR_FEATURE = 0x01
SET_FEATURE = 0x03
GET_DESCRIPTOR = 0x06
PORT_POWER = 8
RT_HUB_IN = 0xA0  # class, device, IN
RT_PORT_IN = 0xA3  # class, other (port), IN
RT_PORT_OUT = 0x23  # class, other (port), OUT
USB2_POWER_BIT = 0x0100
USB3_POWER_BIT = 0x0200
HUB_CLASS = 9

WHAT_TO_BUY = (
    "use a hub with per-port power switching (PPPS; uhubctl's compatibility list names "
    "tested models) or a Yepkit YKUSH/YKUSH3 (driver: ykush)"
)


class _Cycle:
    off_time: float

    def on(self) -> None:
        raise NotImplementedError

    def off(self) -> None:
        raise NotImplementedError

    def cycle(self) -> None:
        self.off()
        time.sleep(self.off_time)
        self.on()


class HubInfo:
    """What a hub's descriptor says: port count and how it switches power."""

    def __init__(self, dev: Any, raw: bytes) -> None:
        self.dev = dev
        self.location = location(dev)
        self.usb3 = dev.bcdUSB >= 0x0300
        self.nports = raw[2]
        self.characteristics = struct.unpack_from("<H", raw, 3)[0]
        self.power_on_to_good_ms = raw[5] * 2

    @property
    def switching(self) -> str:
        mode = self.characteristics & 0x3
        if mode == 0 and self.nports == 1:
            return "per-port"  # one port: ganged is per-port (uhubctl's rule)
        return {0: "ganged", 1: "per-port"}.get(mode, "none")


def hub_descriptor(dev: Any, where: str) -> HubInfo:
    wvalue = HUB_DESCRIPTOR_USB3 if dev.bcdUSB >= 0x0300 else HUB_DESCRIPTOR_USB2
    try:
        raw = bytes(dev.ctrl_transfer(RT_HUB_IN, GET_DESCRIPTOR, wvalue, 0, 12))
    except usb.core.USBError as e:
        raise usb_error(e, f"reading the hub descriptor of {location(dev)}", where) from e
    if len(raw) < 7 or raw[1] != wvalue >> 8:
        raise InfraError(f"hub {location(dev)} returned a malformed hub descriptor", where=where)
    return HubInfo(dev, raw)


def list_hubs(backend: Any = None) -> list[Any]:
    return list(usb.core.find(find_all=True, backend=backend, bDeviceClass=HUB_CLASS))


SCORE_WHY = {
    1: "same Container ID",
    2: "same Container ID and port path below the top level",
    3: "same Container ID, USB2 half behind the Raspberry Pi 4's VL805",
    4: "same Container ID and port path",
    5: "same Container ID and port path, USB3 on the next bus",
}


def companion_of(
    dev: Any, backend: Any = None, *, model: str | None = None, where: str = ""
) -> tuple[Any, str] | None:
    """The other half of the USB3 hub ``dev`` belongs to and why it was chosen (uhubctl's
    scoring, `rig.hardware.hubpair`); None for a USB2-only hub."""
    rpi4 = is_rpi_4b(host_model() if model is None else model)
    where = where or f"hub {location(dev)}"
    me = hub_facts(dev, hub_descriptor(dev, where).nports, rpi4)
    others = []
    for other in list_hubs(backend):
        if location(other) == me.location:
            continue
        try:
            others.append(hub_facts(other, hub_descriptor(other, where).nports, rpi4))
        except InfraError:
            continue  # a hub we may not read is not ours to switch (uhubctl skips it too)
    found = companion(me, others, rpi4, where)
    if found is None:
        return None
    return found.dev, SCORE_WHY[score(me, found, rpi4)]


def companions(hub: Any, backend: Any = None, *, model: str | None = None) -> list[Any]:
    """The other half of a USB3 hub as a list (empty for a USB2-only hub)."""
    pair = companion_of(hub, backend, model=model)
    return [pair[0]] if pair else []


class UsbHubPower(_Cycle):
    """One port of a hub with per-port power switching, both halves of a USB3 hub."""

    def __init__(
        self,
        location: str,
        port: int,
        *,
        backend: Any = None,
        off_time: float = 3.0,
        settle: float = 1.0,
        model: str | None = None,
        sysfs: Path | None = None,
        where: str = "",
    ) -> None:
        self.location = location
        self.sysfs = sysfs  # /sys on a real flash host; None: usbfs only (the virtual rig)
        self.sysfs_problem = ""
        self.port = port
        self.backend = backend
        self.off_time = off_time
        self.settle = settle
        self.model = model  # the flash host's board model; None: read it
        self.where = where or f"usb-hub {location} port {port}"
        self._halves: list[HubInfo] | None = None
        self.paired = ""  # which hub was switched with this one, and why

    def halves(self) -> list[HubInfo]:
        """The hub at ``location`` and its companion, checked for per-port switching."""
        if self._halves is not None:
            return self._halves
        dev = find_by_location(self.location, self.backend, where=self.where)
        if dev.bDeviceClass != HUB_CLASS:
            raise ConfigError(
                f"USB device at {self.location} ({dev.idVendor:04x}:{dev.idProduct:04x}) "
                "is not a hub",
                where=self.where,
                hint="`rig doctor` lists the hubs and their locations",
            )
        infos = [hub_descriptor(dev, self.where)]
        pair = companion_of(dev, self.backend, model=self.model, where=self.where)
        if pair is not None:
            infos.append(hub_descriptor(pair[0], self.where))
            self.paired = f"{location(pair[0])} ({pair[1]})"
        else:
            self.paired = "none (a USB2 hub, or no Container ID)"
        for info in infos:
            if info.switching != "per-port":
                raise ConfigError(
                    f"hub {info.location} ({info.dev.idVendor:04x}:{info.dev.idProduct:04x}) "
                    f"has {info.switching} power switching: switching this DUT's port would "
                    "switch every port of the hub",
                    where=self.where,
                    hint=WHAT_TO_BUY,
                )
            if not 1 <= self.port <= info.nports:
                raise ConfigError(
                    f"hub {info.location} has ports 1..{info.nports}, not {self.port}",
                    where=self.where,
                )
        self._halves = infos
        return infos

    def _status(self, info: HubInfo) -> bool:
        try:
            raw = bytes(info.dev.ctrl_transfer(RT_PORT_IN, GET_STATUS, 0, self.port, 4))
        except usb.core.USBError as e:
            raise usb_error(
                e, f"reading port {self.port} of hub {info.location}", self.where
            ) from e
        status = struct.unpack_from("<H", raw)[0]
        return bool(status & (USB3_POWER_BIT if info.usb3 else USB2_POWER_BIT))

    def disable_file(self, info: HubInfo) -> Path | None:
        """The kernel's per-port ``disable`` file of this port on one half (Linux >= 6.0),
        named as uhubctl names it (``set_port_status_linux``)."""
        if self.sysfs is None:
            return None
        try:
            cfg = info.dev.get_active_configuration().bConfigurationValue
        except (usb.core.USBError, NotImplementedError):
            cfg = 1
        loc = info.location
        if loc.startswith("usb"):  # a root hub: usb<bus>
            bus = loc[3:]
            return (
                self.sysfs / "bus/usb/devices" / f"{bus}-0:{cfg}.0/usb{bus}-port{self.port}/disable"
            )
        return self.sysfs / "bus/usb/devices" / f"{loc}:{cfg}.0/{loc}-port{self.port}/disable"

    def _switch_sysfs(self, info: HubInfo, on: bool) -> bool:
        """Through the kernel, which then keeps the port as set; False: not available."""
        path = self.disable_file(info)
        if path is None:
            return False
        try:
            with open(path, "w") as f:
                f.write("0" if on else "1")
        except FileNotFoundError:
            return False  # kernel < 6.0: usbfs it is
        except OSError as e:
            self.sysfs_problem = f"{path}: {e.strerror or e}"
            return False
        return True

    def _switch(self, on: bool) -> None:
        halves = self.halves()
        self.sysfs_problem = ""
        for info in halves:
            if self._switch_sysfs(info, on):
                continue
            try:
                info.dev.ctrl_transfer(
                    RT_PORT_OUT, SET_FEATURE if on else CLEAR_FEATURE, PORT_POWER, self.port, None
                )
            except usb.core.USBError as e:
                raise usb_error(
                    e, f"switching port {self.port} of hub {info.location}", self.where
                ) from e
        deadline = time.monotonic() + self.settle
        while True:
            wrong = [i.location for i in halves if self._status(i) != on]
            if not wrong:
                return
            if time.monotonic() >= deadline:
                hint = (
                    "the hub ignores port power requests; some need a firmware update "
                    "or report PPPS without wiring it"
                )
                if self.sysfs_problem:
                    hint = (
                        f"the kernel's port disable file could not be written "
                        f"({self.sysfs_problem}), and through usbfs the kernel powers the "
                        "port again: give the rig write access to it (udev rule, and "
                        "ReadWritePaths=/sys/devices in the service unit)"
                    )
                raise InfraError(
                    f"port {self.port} of hub {', '.join(wrong)} did not switch "
                    f"{'on' if on else 'off'}",
                    where=self.where,
                    hint=hint,
                )
            time.sleep(0.05)

    def on(self) -> None:
        self._switch(True)

    def off(self) -> None:
        self._switch(False)

    def state(self) -> bool | None:
        return self._status(self.halves()[0])


# -- Yepkit YKUSH -------------------------------------------------------------------------

YKUSH_VID = 0x04D8


@dataclass(frozen=True)
class YkushModel:
    name: str
    ports: tuple[int, ...]  # the downstream ports the commands address
    report: int = 64  # HID report size
    extra: dict[int, str] = field(default_factory=dict)  # ports that are not USB ports


# by product ID, as Yepkit's ykushcmd (src/ykush*/) and pykush know them
YKUSH_MODELS = {
    0xF2F7: YkushModel("YKUSH", (1, 2, 3)),
    0x0042: YkushModel("YKUSH (legacy board)", (1, 2, 3), report=6),
    0xF11B: YkushModel("YKUSH3", (1, 2, 3, 4), extra={4: "the 5 V output"}),
    0xEFED: YkushModel("YKUSH2", (1, 2)),
    0xF0CD: YkushModel("YKUSH XS", (1,)),
}
YKUSH_BOOTLOADER_PIDS = {0xF11C}  # YKUSH3 in its bootloader: answers no port commands
YKUSH_PIDS = {pid: m.name for pid, m in YKUSH_MODELS.items()}


def is_ykush(dev: Any) -> bool:
    return dev.idVendor == YKUSH_VID and dev.idProduct in YKUSH_MODELS


def _hid_endpoints(dev: Any, where: str) -> tuple[int, int]:
    """The interrupt OUT and IN endpoints of the HID interface, from the descriptors
    (as ykushcmd's usbhid.cpp picks them), not assumed."""
    try:
        intf = dev.get_active_configuration()[(0, 0)]
    except (usb.core.USBError, KeyError, IndexError) as e:
        raise InfraError(f"cannot read the YKUSH's interface descriptor: {e}", where=where) from e
    out = ins = None
    for ep in intf:
        if usb.util.endpoint_type(ep.bmAttributes) != usb.util.ENDPOINT_TYPE_INTR:
            continue
        if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN:
            ins = ins if ins is not None else ep.bEndpointAddress
        else:
            out = out if out is not None else ep.bEndpointAddress
    if out is None or ins is None:
        raise InfraError("the YKUSH has no interrupt IN and OUT endpoint", where=where)
    return out, ins


class YkushPower(_Cycle):
    """One downstream port of a Yepkit YKUSH board, spoken to in HID reports.

    The model (by product ID) decides the ports (YKUSH XS: 1; YKUSH2: 1-2; YKUSH and
    YKUSH3: 1-3, and on the YKUSH3 port 4 is its 5 V output) and the report size
    (6 bytes on the legacy 0x0042 board, else 64).
    """

    def __init__(
        self,
        serial: str,
        port: int,
        *,
        backend: Any = None,
        off_time: float = 3.0,
        timeout_ms: int = 1000,
        where: str = "",
    ) -> None:
        if not 1 <= port <= 4:
            raise ConfigError(f"YKUSH ports are 1..3 (1..4 on YKUSH3), not {port}", where=where)
        self.serial = serial
        self.port = port
        self.backend = backend
        self.off_time = off_time
        self.timeout_ms = timeout_ms
        self.where = where or f"ykush {serial} port {port}"
        self.model: YkushModel | None = None

    def _device(self) -> Any:
        dev = find_by_serial(self.serial, is_ykush, self.backend, what="YKUSH", where=self.where)
        model = YKUSH_MODELS[dev.idProduct]
        if self.port not in model.ports:
            raise ConfigError(
                f"the {model.name} with serial {self.serial} has port"
                f"{'s' if len(model.ports) > 1 else ''} "
                f"{', '.join(map(str, model.ports))}, not {self.port}",
                where=self.where,
            )
        self.model = model
        return dev

    def command(self, opcode: int) -> bytes:
        """Send one report, return the reply; a reply status other than 1 is an error."""
        dev = self._device()
        assert self.model is not None
        size = self.model.report
        report = bytes([opcode]) + bytes(size - 1)
        try:
            if dev.is_kernel_driver_active(0):
                dev.detach_kernel_driver(0)
            out, ins = _hid_endpoints(dev, self.where)
            dev.write(out, report, self.timeout_ms)
            reply = bytes(dev.read(ins, size, self.timeout_ms))
        except usb.core.USBError as e:
            raise usb_error(e, f"sending YKUSH command {opcode:#04x}", self.where) from e
        finally:
            usb.util.dispose_resources(dev)
        if not reply or reply[0] != 1:
            raise InfraError(
                f"YKUSH rejected command {opcode:#04x} (reply {reply[:4].hex()})", where=self.where
            )
        return reply

    def state(self) -> bool | None:
        return self.command(0x20 | self.port)[1] > 0x10

    def _what(self) -> str:
        extra = self.model.extra.get(self.port) if self.model else None
        return extra or f"port {self.port}"

    def _switch(self, on: bool) -> None:
        self.command((0x10 if on else 0x00) | self.port)
        if self.state() != on:
            raise InfraError(
                f"YKUSH {self._what()} did not switch {'on' if on else 'off'}", where=self.where
            )

    def on(self) -> None:
        self._switch(True)

    def off(self) -> None:
        self._switch(False)


# -- shell commands (relays, smart plugs, PDUs) --------------------------------------------


class CommandPower(_Cycle):
    """Power through shell command templates, as PDUDaemon/LAVA setups have them.

    Templates may use {device} and {port}. ``status`` prints on/off (or 1/0,
    true/false); without a status template the state is unknown (None).
    """

    def __init__(
        self,
        on: str,
        off: str,
        status: str | None = None,
        *,
        device: str = "",
        port: int | None = None,
        timeout: float = 30.0,
        off_time: float = 3.0,
        where: str = "",
    ) -> None:
        self.templates = {"on": on, "off": off, "status": status}
        self.values = {"device": shlex.quote(device), "port": "" if port is None else str(port)}
        self.timeout = timeout
        self.off_time = off_time
        self.where = where or f"power command of {device}"
        self.last_output = ""

    def run(self, which: str) -> str:
        template = self.templates[which]
        if not template:
            raise ConfigError(f"no '{which}' command configured", where=self.where)
        try:
            cmd = template.format(**self.values)
        except (KeyError, IndexError) as e:
            raise ConfigError(
                f"unknown placeholder {e} in the '{which}' command (use {{device}}, {{port}})",
                where=self.where,
            ) from None
        # its own process group: on a timeout the shell's children (a PDU client waiting
        # on a dead network) are killed too, not only the shell
        proc = subprocess.Popen(
            cmd,
            shell=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise InfraError(
                f"power {which} command did not finish within {self.timeout:.0f}s: {cmd}",
                where=self.where,
            ) from e
        self.last_output = (stdout + stderr).strip()
        if proc.returncode != 0:
            raise InfraError(
                f"power {which} command failed (exit {proc.returncode}): {cmd}\n"
                f"{self.last_output[-2000:]}",
                where=self.where,
            )
        return stdout

    def on(self) -> None:
        self.run("on")
        self._check(True)

    def off(self) -> None:
        self.run("off")
        self._check(False)

    def _check(self, on: bool) -> None:
        if self.templates["status"] and self.state() is not on:
            raise InfraError(
                f"power did not switch {'on' if on else 'off'} (status command disagrees)",
                where=self.where,
            )

    def state(self) -> bool | None:
        if not self.templates["status"]:
            return None
        word = self.run("status").strip().lower()
        if word in ("on", "1", "true"):
            return True
        if word in ("off", "0", "false"):
            return False
        return None


def hub_identity(dev: Any) -> str:
    """A short stable name for a hub (for the doctor's table)."""
    cid = container_id(dev)
    return str(uuid.UUID(bytes=cid)) if cid else ""
