"""ykush (HID reports) and command (shell templates) power drivers."""

from __future__ import annotations

import time

import pytest

from rig.errors import ConfigError, InfraError
from rig.hardware.power import CommandPower, YkushPower
from rig.virtual.hw.usb import (
    VIRTUAL_YKUSH,
    EmulatedBus,
    EmulatedYkush,
    EmulatedYkush2,
    EmulatedYkush3,
    EmulatedYkushLegacy,
    EmulatedYkushXs,
)


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
    from rig.config import UsbHubPortConfig, YkushPortConfig
    from rig.virtual.hw.state import power_key

    YkushPower(VIRTUAL_YKUSH, 3, backend=bus).on()
    location, port = power_key(YkushPortConfig(serial=VIRTUAL_YKUSH, port=3))
    assert hw.port_power(location, port) is True
    assert power_key(UsbHubPortConfig(location="1-1", port=2)) == ("1-1", 2)


# -- the YKUSH family (ykushcmd src/ykush*/, pykush) --------------------------------------


def test_ykush_xs_is_found_and_has_one_port(hw) -> None:
    bus = EmulatedBus([EmulatedYkushXs(hw, 1, (3,), "YKX001")])
    power = YkushPower("YKX001", 1, backend=bus)
    power.on()
    assert hw.port_power("ykush:YKX001", 1) is True
    with pytest.raises(ConfigError, match="the YKUSH XS with serial YKX001 has port 1, not 2"):
        YkushPower("YKX001", 2, backend=bus).on()


def test_ykush2_has_two_ports(hw) -> None:
    bus = EmulatedBus([EmulatedYkush2(hw, 1, (3,), "Y2001")])
    YkushPower("Y2001", 2, backend=bus).on()
    assert hw.port_power("ykush:Y2001", 2) is True
    with pytest.raises(ConfigError, match="the YKUSH2 with serial Y2001 has ports 1, 2, not 3"):
        YkushPower("Y2001", 3, backend=bus).off()


def test_legacy_board_gets_6_byte_reports(hw) -> None:
    board = EmulatedYkushLegacy(hw, 1, (3,), "YK1LEG")
    YkushPower("YK1LEG", 3, backend=EmulatedBus([board])).on()
    assert board.reports == [bytes([0x13]) + bytes(5), bytes([0x23]) + bytes(5)]


def test_ykush3_port_4_is_its_5v_output_and_a_ykush_has_none(hw) -> None:
    bus = EmulatedBus([EmulatedYkush3(hw, 1, (3,), "YK3"), EmulatedYkush(hw, 1, (4,), "YK1")])
    YkushPower("YK3", 4, backend=bus).on()
    assert hw.port_power("ykush:YK3", 4) is True
    assert bus.devices[0].reports[0][0] == 0x14  # the 5 V output's "on" command
    with pytest.raises(ConfigError, match="the YKUSH with serial YK1 has ports 1, 2, 3, not 4"):
        YkushPower("YK1", 4, backend=bus).on()


def test_endpoints_come_from_the_descriptors(hw) -> None:
    board = EmulatedYkush(hw, 1, (3,), "YKEP", endpoints=(0x02, 0x82))
    YkushPower("YKEP", 1, backend=EmulatedBus([board])).on()
    assert hw.port_power("ykush:YKEP", 1) is True


def test_command_timeout_kills_the_commands_children_too(tmp_path) -> None:
    """A PDU client the shell started (here a `sleep` behind a pipe) must not outlive the
    timeout and later switch a port on its own."""
    marker = tmp_path / "late"
    power = CommandPower(on=f"(sleep 2; touch {marker}) | cat", off="true", timeout=0.3)
    with pytest.raises(InfraError, match="did not finish"):
        power.on()
    time.sleep(2.5)
    assert not marker.exists()
