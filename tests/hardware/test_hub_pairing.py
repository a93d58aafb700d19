"""USB3 companion hubs paired as uhubctl pairs them, on emulated buses with real quirks:
two identical hubs with one hard-coded Container ID, a Raspberry Pi 4's VL805 layout."""

from __future__ import annotations

import pytest

from rig.errors import InfraError
from rig.hardware.hubpair import host_model
from rig.hardware.inventory import scan_usb
from rig.hardware.power import UsbHubPower
from rig.virtual.hw.usb import EmulatedBus, hub_pair, pi4_host

# one Container ID in every unit of a model, as some hub chips ship it
HARDCODED = bytes.fromhex("00112233445566778899aabbccddeeff")
PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PC = ""  # no device-tree model: a PC


def test_two_identical_hubs_on_a_pc_each_switch_only_their_own_port(hw) -> None:
    a = hub_pair(hw, "1-1", usb3_bus=2, container_id=HARDCODED)
    b = hub_pair(hw, "1-2", usb3_bus=2, container_id=HARDCODED)
    bus = EmulatedBus([*a, *b])
    UsbHubPower("1-2", 1, backend=bus, model=PC).on()  # the other DUT runs
    power = UsbHubPower("1-1", 1, backend=bus, model=PC)
    power.on()
    power.off()
    assert hw.port_power("1-1", 1) is False
    assert hw.port_power("1-2", 1) is True  # hub b's DUT was not cut
    assert power.paired.startswith("2-1 (same Container ID and port path")
    switched = {d.location for d in bus.devices if any(t.bRequest == 0x01 for t in d.transfers)}
    assert switched == {"1-1", "2-1"}


def test_behind_a_pi4_the_usb2_half_one_level_deeper_is_paired(hw) -> None:
    # a USB3 hub in each blue port: USB2 halves behind the VL805 (1-1.N), USB3 halves 2-N
    a = hub_pair(hw, "1-1.1", usb3_bus=2, usb3_ports=(1,), container_id=HARDCODED)
    b = hub_pair(hw, "1-1.2", usb3_bus=2, usb3_ports=(2,), container_id=HARDCODED)
    bus = EmulatedBus([*pi4_host(hw), *a, *b])
    UsbHubPower("1-1.1", 3, backend=bus, model=PI4).on()
    power = UsbHubPower("1-1.2", 3, backend=bus, model=PI4)
    power.on()
    power.off()
    assert hw.port_power("1-1.2", 3) is False
    assert hw.port_power("1-1.1", 3) is True
    assert power.paired == "2-2 (same Container ID, USB2 half behind the Raspberry Pi 4's VL805)"


def test_the_same_layout_seen_without_the_pi4_rule_is_ambiguous_and_refused(hw) -> None:
    a = hub_pair(hw, "1-1.1", usb3_bus=2, usb3_ports=(1,), container_id=HARDCODED)
    b = hub_pair(hw, "1-1.2", usb3_bus=2, usb3_ports=(2,), container_id=HARDCODED)
    bus = EmulatedBus([*a, *b])
    hw.set_port_power("1-1.1", 3, True)
    with pytest.raises(InfraError, match="cannot tell which hub is the other half") as e:
        UsbHubPower("1-1.2", 3, backend=bus, model=PC).off()
    assert "2-1" in e.value.message and "2-2" in e.value.message
    assert "hard-coded Container ID" in e.value.hint
    assert hw.port_power("1-1.1", 3) is True
    assert not any(t.bRequest == 0x01 for d in bus.devices for t in d.transfers)
    doctor = {f.name: f for f in scan_usb(bus)}
    assert doctor["1-1.2"].ok is False and "pairing ambiguous" in doctor["1-1.2"].detail


def test_different_serials_and_port_counts_rule_candidates_out(hw) -> None:
    a = hub_pair(hw, "1-1.1", usb3_bus=2, usb3_ports=(1,), container_id=HARDCODED, serial="A")
    b = hub_pair(hw, "1-1.2", usb3_bus=2, usb3_ports=(2,), container_id=HARDCODED, serial="B")
    seven = hub_pair(hw, "1-1.3", usb3_bus=2, usb3_ports=(3,), container_id=HARDCODED, nports=7)
    bus = EmulatedBus([*a, *b, *seven])
    power = UsbHubPower("1-1.2", 1, backend=bus, model=PC)
    power.off()
    assert power.paired.startswith("2-2 (same Container ID)")


def test_a_usb2_only_hub_has_no_companion(hw) -> None:
    usb2, _ = hub_pair(hw, "1-3", usb3_bus=2)
    power = UsbHubPower("1-3", 2, backend=EmulatedBus([usb2]), model=PC)
    power.on()
    assert power.paired.startswith("none")
    assert hw.port_power("1-3", 2) is True


def test_host_model_reads_the_device_tree(tmp_path) -> None:
    model = tmp_path / "model"
    model.write_bytes(PI4.encode() + b"\0")
    assert host_model((str(tmp_path / "absent"), str(model))) == PI4
    assert host_model((str(tmp_path / "absent"),)) == ""
