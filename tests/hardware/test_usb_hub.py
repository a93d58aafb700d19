"""usb-hub driver against the emulated PPPS hub pair and ganged hub: the exact requests."""

from __future__ import annotations

import errno

import pytest
import usb.core

from rig.errors import ConfigError, InfraError
from rig.hardware.power import UsbHubPower
from rig.virtual.hw.usb import EmulatedBus, EmulatedHub, Transfer, hub_pair, virtual_bus

SET = (0x23, 0x03, 8)
CLEAR = (0x23, 0x01, 8)


def hub_requests(bus: EmulatedBus, loc: str) -> list[Transfer]:
    """The hub-class requests a hub saw (standard GET_DESCRIPTOR for BOS/strings left out)."""
    return [t for t in bus.device(loc).transfers if t.bmRequestType != 0x80]


def test_on_sends_exact_requests_to_both_halves_and_reads_back(bus, hw) -> None:
    power = UsbHubPower("1-1", 2, backend=bus)
    power.on()
    for loc, desc in (("1-1", 0x2900), ("2-1", 0x2A00)):
        got = [
            (t.bmRequestType, t.bRequest, t.wValue, t.wIndex, t.data)
            for t in hub_requests(bus, loc)
        ]
        assert got[0] == (0xA0, 0x06, desc, 0, 12)  # hub descriptor, USB2 or USB3 type
        assert (*SET, 2, b"") in got  # SET_FEATURE(PORT_POWER) on port 2
        assert (0xA3, 0x00, 0, 2, 4) in got  # GET_STATUS read-back of port 2
        assert got.index((*SET, 2, b"")) < got.index((0xA3, 0x00, 0, 2, 4))
    assert hw.port_power("1-1", 2) is True
    assert hw.port_power("1-1", 1) is False  # per-port: the neighbours stay as they were
    assert power.state() is True


def test_off_cuts_vbus_only_when_both_halves_are_off(bus, hw) -> None:
    power = UsbHubPower("1-1", 1, backend=bus)
    power.on()
    # switching only the USB2 half, as a naive driver would, leaves the DUT powered
    usb2 = usb.core.find(backend=bus, custom_match=lambda d: d.bus == 1 and d.port_numbers == (1,))
    usb2.ctrl_transfer(*CLEAR, 1, None)
    assert hw.port_power("1-1", 1) is True
    power.off()
    assert hw.port_power("1-1", 1) is False
    assert (*CLEAR, 1, b"") in [
        (t.bmRequestType, t.bRequest, t.wValue, t.wIndex, t.data) for t in hub_requests(bus, "2-1")
    ]
    assert power.state() is False


def test_ganged_hub_is_refused_before_anything_is_switched(bus) -> None:
    with pytest.raises(ConfigError) as e:
        UsbHubPower("3-1", 1, backend=bus).off()
    assert "ganged" in str(e.value) and "every port" in str(e.value)
    assert "per-port power switching" in e.value.hint and "YKUSH" in e.value.hint
    assert all(t.bRequest != 0x01 for t in bus.device("3-1").transfers)


def test_wrong_request_stalls_like_real_hardware(bus) -> None:
    dev = usb.core.find(backend=bus, custom_match=lambda d: d.bus == 1 and d.port_numbers == (1,))
    for bad in [
        (0xA0, 0x06, 0x2A00, 0, 12),  # USB3 descriptor type from a USB2 hub
        (0xA3, 0x00, 0, 1, 2),  # GET_STATUS with the wrong length
        (0xA3, 0x00, 0, 9, 4),  # a port the hub does not have
    ]:
        with pytest.raises(usb.core.USBError) as e:
            dev.ctrl_transfer(*bad)
        assert e.value.errno == errno.EPIPE
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x23, 0x03, 9, 1, None)  # PORT_RESET is not what we asked for
    assert e.value.errno == errno.EPIPE


def test_hub_not_found(bus) -> None:
    with pytest.raises(InfraError) as e:
        UsbHubPower("1-7", 1, backend=bus).on()
    assert "no USB device at location 1-7" in str(e.value)


def test_port_out_of_range(bus) -> None:
    with pytest.raises(ConfigError, match=r"ports 1\.\.4"):
        UsbHubPower("1-1", 5, backend=bus).on()


def test_permission_denied_names_the_udev_rule(hw) -> None:
    usb2, usb3 = hub_pair(hw, "1-1", denied=True)
    with pytest.raises(InfraError) as e:
        UsbHubPower("1-1", 1, backend=EmulatedBus([usb2, usb3])).on()
    assert "permission denied" in str(e.value)
    assert "99-rig.rules" in e.value.hint


class DeafHub(EmulatedHub):
    """Claims PPPS, acknowledges the request, never switches (such hubs exist)."""

    def _set_power(self, port: int, on: bool) -> None:
        return None


def test_port_that_does_not_follow_is_an_error(hw) -> None:
    hw.set_port_power("1-2", 1, True)
    power = UsbHubPower("1-2", 1, backend=EmulatedBus([DeafHub(hw, 1, (2,))]), settle=0.2)
    with pytest.raises(InfraError, match="did not switch off"):
        power.off()


def test_cycle_waits_off_time(bus, hw) -> None:
    import time

    power = UsbHubPower("1-1", 3, backend=bus, off_time=0.3)
    power.on()
    start = time.monotonic()
    power.cycle()
    assert time.monotonic() - start >= 0.3
    assert hw.port_power("1-1", 3) is True
    offs = [
        t
        for t in hub_requests(bus, "1-1")
        if (t.bmRequestType, t.bRequest, t.wIndex) == (0x23, 0x01, 3)
    ]
    assert len(offs) == 1


def test_power_set_from_outside_the_hub_is_what_get_status_reports(bus, hw) -> None:
    power = UsbHubPower("1-1", 2, backend=bus)
    power.off()
    hw.set_port_power("1-1", 2, True)  # e.g. a test or a fault forcing VBUS
    assert power.state() is True
    hw.set_port_power("1-1", 2, False)
    assert power.state() is False


# -- Linux >= 6.0: the kernel re-powers ports switched off through usbfs ------------------


def _repowering_pair(hw, sysfs):
    for port in range(1, 5):  # the kernel powers every port when the hub appears
        hw.set_port_power("1-1", port, True)
    return EmulatedBus(list(hub_pair(hw, "1-1", usb3_bus=2, kernel_repowers=True, sysfs=sysfs)))


def test_off_through_the_kernels_disable_file_stays_off(hw, tmp_path) -> None:
    bus = _repowering_pair(hw, tmp_path / "sys")
    power = UsbHubPower("1-1", 2, backend=bus, sysfs=tmp_path / "sys")
    power.on()
    power.off()
    assert hw.port_power("1-1", 2) is False
    for loc in ("1-1", "2-1"):  # both halves, through sysfs, none through usbfs
        disable = tmp_path / f"sys/bus/usb/devices/{loc}:1.0/{loc}-port2/disable"
        assert disable.read_text() == "1"
        assert not any(t.bRequest == 0x01 for t in hub_requests(bus, loc))
    power.on()
    assert hw.port_power("1-1", 2) is True


def test_usbfs_alone_loses_to_a_repowering_kernel(hw, tmp_path) -> None:
    bus = _repowering_pair(hw, tmp_path / "sys")
    power = UsbHubPower("1-1", 2, backend=bus, settle=0.2)  # no sysfs: what the rig did
    power.on()
    with pytest.raises(InfraError, match="did not switch off"):
        power.off()
    assert hw.port_power("1-1", 2) is True


def test_an_unwritable_disable_file_falls_back_and_says_so(hw, tmp_path) -> None:
    bus = _repowering_pair(hw, None)
    blocked = tmp_path / "sys/bus/usb/devices/1-1:1.0/1-1-port2/disable"
    blocked.mkdir(parents=True)  # cannot be opened for writing, like a root-only file
    power = UsbHubPower("1-1", 2, backend=bus, sysfs=tmp_path / "sys", settle=0.2)
    with pytest.raises(InfraError) as e:
        power.off()
    assert "disable" in e.value.hint and "ReadWritePaths=/sys/devices" in e.value.hint


def test_without_disable_files_usbfs_switches_as_before(hw, tmp_path) -> None:
    power = UsbHubPower("1-1", 4, backend=virtual_bus(hw), sysfs=tmp_path / "no-sysfs")
    power.on()
    assert hw.port_power("1-1", 4) is True
    power.off()
    assert hw.port_power("1-1", 4) is False
