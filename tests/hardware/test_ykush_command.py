"""ykush (HID reports) and command (shell templates) power drivers."""

from __future__ import annotations

import pytest

from rig.errors import ConfigError, InfraError
from rig.hardware.power import CommandPower, YkushPower
from rig.virtual.hw.usb import VIRTUAL_YKUSH, EmulatedBus, EmulatedYkush


def test_ykush_sends_64_byte_reports_and_reads_back(bus, hw) -> None:
    ykush = bus.devices[3]
    assert isinstance(ykush, EmulatedYkush)
    power = YkushPower(VIRTUAL_YKUSH, 2, backend=bus)
    power.on()
    assert ykush.reports == [bytes([0x12]) + bytes(63), bytes([0x22]) + bytes(63)]
    assert hw.port_power(f"ykush:{VIRTUAL_YKUSH}", 2) is True
    assert hw.port_power(f"ykush:{VIRTUAL_YKUSH}", 1) is False
    power.off()
    assert ykush.reports[2:] == [bytes([0x02]) + bytes(63), bytes([0x22]) + bytes(63)]
    assert power.state() is False


def test_ykush_not_found_lists_what_is_there(bus) -> None:
    with pytest.raises(InfraError) as e:
        YkushPower("YK99999", 1, backend=bus).on()
    assert "YK99999" in str(e.value) and VIRTUAL_YKUSH in str(e.value)


def test_ykush_permission_denied(hw) -> None:
    bus = EmulatedBus([EmulatedYkush(hw, 1, (3,), "YK1", denied=True)])
    with pytest.raises(InfraError) as e:
        YkushPower("YK1", 1, backend=bus).on()
    assert "99-rig.rules" in e.value.hint


def test_ykush_rejected_opcode_is_an_error(bus) -> None:
    with pytest.raises(InfraError, match="rejected"):
        YkushPower(VIRTUAL_YKUSH, 1, backend=bus).command(0x77)


def test_command_power_runs_templates_and_reads_status(tmp_path) -> None:
    state = tmp_path / "relay"
    power = CommandPower(
        on=f"echo on > {state}.{{port}}",
        off=f"echo off > {state}.{{port}}",
        status=f"cat {state}.{{port}}",
        device="pi3-a",
        port=4,
    )
    power.on()
    assert (tmp_path / "relay.4").read_text() == "on\n"
    assert power.state() is True
    power.off()
    assert power.state() is False


def test_command_failure_carries_its_output() -> None:
    power = CommandPower(on="echo relay says no >&2; exit 7", off="true")
    with pytest.raises(InfraError) as e:
        power.on()
    assert "exit 7" in str(e.value) and "relay says no" in str(e.value)


def test_command_timeout() -> None:
    power = CommandPower(on="sleep 5", off="true", timeout=0.3)
    with pytest.raises(InfraError, match="did not finish within"):
        power.on()


def test_command_status_disagreeing_is_an_error(tmp_path) -> None:
    power = CommandPower(on="true", off="true", status="echo off")
    with pytest.raises(InfraError, match="did not switch on"):
        power.on()
    assert CommandPower(on="true", off="true").state() is None


def test_command_unknown_placeholder() -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        CommandPower(on="relay {outlet}", off="true").on()


def test_power_key_names_where_the_virtual_pis_look(bus, hw) -> None:
    from rig.config import PowerConfig
    from rig.virtual.hw.state import power_key

    YkushPower(VIRTUAL_YKUSH, 3, backend=bus).on()
    location, port = power_key(PowerConfig(driver="ykush", serial=VIRTUAL_YKUSH, port=3))
    assert hw.port_power(location, port) is True
    assert power_key(PowerConfig(driver="usb-hub", location="1-1", port=2)) == ("1-1", 2)
