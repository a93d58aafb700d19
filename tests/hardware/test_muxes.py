"""usb-sd-mux (usbsdmux over the emulated SG_IO seam) and sdwire (FTDI CBUS) drivers."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import usb.core

from rig.errors import ConfigError, InfraError
from rig.hardware.blockdev import Sysfs
from rig.hardware.inventory import scan_sdmuxes, scan_usb
from rig.hardware.mux import SdwireMux, UsbSdMuxDriver, find_sdmux_sg
from rig.virtual.backend import VirtualDiskFinder
from rig.virtual.hw.sdmux import MODEL_FAST, EmulatedUsbSdMux, open_emulated
from rig.virtual.hw.usb import (
    VIRTUAL_SDWIRE,
    EmulatedBus,
    EmulatedSdMux,
    EmulatedSdwire,
    EmulatedUsbMux,
)

PCA9536 = 0x41 << 1  # the Classic's GPIO expander, as an I2C write address


def sdmux(hw, serial="000000000041", **kw) -> tuple[UsbSdMuxDriver, EmulatedUsbSdMux]:
    device = EmulatedUsbSdMux(hw, serial, **kw)
    driver = UsbSdMuxDriver(
        serial,
        find_sg=lambda s: Path(f"/dev/virtual-sg/{s}"),
        open_mux=lambda _sg: open_emulated(device),
        disks=VirtualDiskFinder(hw, serial),
        wait=False,
    )
    return driver, device


def test_classic_host_is_the_usbsdmux_register_sequence(hw) -> None:
    driver, device = sdmux(hw)
    driver.host()
    # the CDBs: vendor opcode 0xCF, I2C write (0x23) / write-read (0x22), slave address
    write = bytes([0xCF, 0x23, PCA9536, 0, 0, 2, 0]) + bytes(9)
    read_config = bytes([0xCF, 0x22, PCA9536, PCA9536 + 1, 0, 1, 1, 0x03]) + bytes(8)
    assert device.commands[0] == write and device.commands[1] == read_config
    # what usbsdmux's UsbSdMuxClassic.mode_host does to the PCA9536: outputs DAT/PWR off and
    # card removed (0x0B), pins 0-3 to outputs, then DAT/PWR on, host selected (0x00);
    # then the driver reads the input port back
    assert device.i2c == [
        ("write", 1, 0x0B),
        ("read", 3, None),
        ("write", 3, 0xF0),
        ("write", 1, 0x00),
        ("read", 0, None),
    ]
    regs = hw.extra("sdmux:000000000041")
    assert regs["output"] == 0x00 and regs["config"] == 0xF0
    assert hw.mux_side("000000000041") == "host"
    assert driver.state() == "host"


def test_sides_and_card_identity(hw) -> None:
    driver, _ = sdmux(hw)
    assert driver.state() == "off"
    driver.host()
    ident = driver.card_identity()
    assert ident is not None and ident.startswith("cid:1b-SM-RIGV0-")
    assert sdmux(hw)[0].card_identity() == ident  # the same card, read again
    assert sdmux(hw, "000000000042")[0].card_identity() in (None,)  # that mux is off
    driver.dut()
    assert hw.mux_side("000000000041") == "dut"
    assert driver.card_identity() is None  # the CID is only readable on the host side
    driver.off()
    assert driver.state() == "off"


def test_fast_from_power_on_reset(hw) -> None:
    driver, device = sdmux(hw, "F1", model=MODEL_FAST, power_on_reset=True)
    assert driver.state() == "dut"  # usbsdmux keeps the pull-resistor default (DUT)
    driver.host()
    assert hw.mux_side("F1") == "host"
    assert all(c[2] == 0x20 << 1 for c in device.commands if c[1] in (0x22, 0x23))  # TCA6408


def test_side_is_shared_with_another_process(hw) -> None:
    driver, _ = sdmux(hw)
    driver.host()
    code = (
        "import sys; from pathlib import Path;"
        "from rig.virtual.hw import VirtualHardware;"
        "from rig.virtual.hw.sdmux import EmulatedUsbSdMux, open_emulated;"
        "hw = VirtualHardware(Path(sys.argv[1]), use_loop=False);"
        "print(open_emulated(EmulatedUsbSdMux(hw, '000000000041')).get_mode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(hw.state_dir)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "host"


def test_wrong_i2c_address_fails_like_a_nak(hw) -> None:
    _, device = sdmux(hw)
    mux = open_emulated(device)
    with pytest.raises(Exception, match="status 2"):
        mux._usb.write_to(0x42, [0x01, 0x00])
    with pytest.raises(Exception, match="status 2"):
        mux._usb.write_read_to(0x41, [0x07], 1)  # no register 7 on a PCA9536


def test_disk_appears_on_host_and_is_the_card(hw) -> None:
    driver, _ = sdmux(hw)
    with pytest.raises(InfraError, match="not on the host side"):
        driver.disk(0.2)
    driver.host()
    assert driver.disk(1.0) == hw.card_path("000000000041")


def test_sdwire_exact_transfers(bus, hw) -> None:
    mux = SdwireMux(VIRTUAL_SDWIRE, backend=bus, disks=VirtualDiskFinder(hw, VIRTUAL_SDWIRE))
    mux.host()
    mux.dut()
    dev = bus.devices[4]
    got = [
        (t.bmRequestType, t.bRequest, t.wValue, t.wIndex, t.data)
        for t in dev.transfers
        if t.bmRequestType != 0x80
    ]
    assert got == [
        (0x40, 0x0B, 0x20F1, 1, b""),
        (0xC0, 0x0C, 0, 1, 1),
        (0x40, 0x0B, 0x20F0, 1, b""),
        (0xC0, 0x0C, 0, 1, 1),
    ]
    assert hw.mux_side(VIRTUAL_SDWIRE) == "dut"
    with pytest.raises(ConfigError, match="no 'off'"):
        mux.off()


def test_sdwire_rejects_a_non_cbus_bitmode(bus) -> None:
    dev = usb.core.find(backend=bus, idVendor=0x04E8)
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x40, 0x0B, 0x0101, 1, None)  # async bit-bang, not CBUS
    assert e.value.errno == errno.EPIPE


def test_sdwire_not_found_and_permission(hw) -> None:
    bus = EmulatedBus([EmulatedSdwire(hw, 1, (2,), "sd-wire_1", denied=True)])
    with pytest.raises(InfraError) as e:
        SdwireMux("sd-wire_1", backend=bus).state()
    assert "99-rig.rules" in e.value.hint
    with pytest.raises(InfraError, match="no SDWire"):
        SdwireMux("sd-wire_9", backend=EmulatedBus([])).state()


# -- sd-mux-ctrl's three boards on one VID:PID, told apart by the product string -----------


@pytest.mark.parametrize(
    ("board", "kind"), [(EmulatedSdMux, "SD-MUX"), (EmulatedUsbMux, "USB-MUX")]
)
def test_another_board_on_the_sdwire_vid_pid_is_refused_not_switched(hw, board, kind) -> None:
    bus = EmulatedBus([board(hw, 1, (2,), "mux_7")])
    mux = SdwireMux("mux_7", backend=bus)
    with pytest.raises(ConfigError, match=f"is {kind}") as e:
        mux.dut()  # on such a board this "succeeded" while the card never moved
    assert "not an SDWire" in e.value.message and "sd-wire" in e.value.hint
    assert not [t for t in bus.devices[0].transfers if t.bmRequestType == 0x40]
    found = {f.name: f for f in scan_usb(bus)}
    assert found["mux_7"].ok is False and kind in found["mux_7"].detail


def test_without_the_sg_module_the_mux_error_and_doctor_name_it(tmp_path) -> None:
    fs = Sysfs(sys=tmp_path / "sys", dev=tmp_path / "dev")
    (tmp_path / "sys" / "class").mkdir(parents=True)  # a fresh host: no scsi_generic class
    with pytest.raises(InfraError, match="kernel module sg is not loaded") as e:
        find_sdmux_sg("000000000041", fs)
    assert "modprobe sg" in e.value.hint and "modules-load.d" in e.value.hint
    (finding,) = scan_sdmuxes(fs)
    assert (finding.kind, finding.name, finding.ok) == ("module", "sg", False)
    assert "modprobe sg" in finding.fix
