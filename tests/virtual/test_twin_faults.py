"""Faults and timing from the config's virtual section, driven through the supervisor."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from twin_support import flash, image, provision, ssh, write_config

from rig.config import RigConfig
from rig.errors import ConfigError
from rig.virtual.faults import expected_durations, settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import Twin

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _twin(config: RigConfig) -> Iterator[Twin]:
    require_sandbox()
    twin = Twin(config)
    thread = threading.Thread(target=twin.run, daemon=True)
    thread.start()
    try:
        yield twin
    finally:
        twin.stop_event.set()
        thread.join(timeout=60)


def _flash(twin: Twin, name: str) -> None:
    dev = twin.config.devices[name]
    card = twin.hw.card_path(dev.mux.serial)
    flash(image("octopi-1.0.0"), card)
    provision(card, twin.config, name)


def _power(twin: Twin, name: str, on: bool = True, flashed: bool = False) -> None:
    dev = twin.config.devices[name]
    if on and not flashed:
        _flash(twin, name)
    twin.hw.set_mux_side(dev.mux.serial, "dut" if on else "off")
    twin.hw.set_port_power(dev.power.location, dev.power.port, on)


def _wait(twin: Twin, name: str, phases: tuple[str, ...], timeout: float = 120) -> None:
    pi = twin.devices[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pi.phase not in phases:
        time.sleep(0.05)
    assert pi.phase in phases, f"{name}: {pi.phase} ({pi.reason})"


def _refused(twin: Twin, name: str) -> bool:
    dev = twin.config.devices[name]
    try:
        ssh(dev.host, dev.ssh_port, "pi", twin.config.user.password.reveal()).close()
    except (paramiko.SSHException, OSError):
        return True
    return False


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Twin]:
    config = write_config(
        tmp_path,
        {
            "faults": {
                "pi3-a": {"wifi_drops_after": 5},
                "pi3-b": {"never_boots": True},
                "pi3-c": {"power_glitch_after": 1},
            }
        },
    )
    yield from _twin(config)


def test_never_boots_wifi_drops_and_power_glitch(faulty: Twin) -> None:
    # every card first (a real userland is hundreds of MB to copy), then the power: pi3-a's
    # few seconds on the network must not pass while the others' cards are being written
    for name in ("pi3-a", "pi3-b", "pi3-c"):
        _flash(faulty, name)
    for name in ("pi3-a", "pi3-b", "pi3-c"):
        _power(faulty, name, flashed=True)
    _wait(faulty, "pi3-b", ("never",))
    _wait(faulty, "pi3-a", ("up",))
    assert not _refused(faulty, "pi3-a")
    _wait(faulty, "pi3-a", ("unreachable",), timeout=10)
    assert _refused(faulty, "pi3-a")
    assert faulty.devices["pi3-a"].status()["sandbox_pid"]  # still running, just off the network
    assert _refused(faulty, "pi3-b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and faulty.devices["pi3-c"].boots < 2:
        time.sleep(0.1)
    assert faulty.devices["pi3-c"].boots >= 2  # the glitch reset it and it booted again
    _power(faulty, "pi3-b", on=False)
    _wait(faulty, "pi3-b", ("off",), timeout=5)


def test_wrong_psk_is_never_reachable_and_first_boot_reboots(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "access_point": {"psk": "not-what-the-card-says"},
            "boot_delay": 1.0,
            "first_boot_reboot": True,
        },
    )
    for twin in _twin(config):
        t0 = time.monotonic()
        _power(twin, "pi3-a")
        _wait(twin, "pi3-a", ("unreachable", "up", "failed"))
        took = time.monotonic() - t0
        assert twin.devices["pi3-a"].phase == "unreachable"
        assert _refused(twin, "pi3-a")
        assert took >= 2.0  # boot delay plus the first boot's extra reboot


def test_faults_for_unknown_devices_and_profiles_are_config_errors(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"faults": {"pi9": {"never_boots": True}}})
    with pytest.raises(ConfigError, match="pi9"):
        settings_from_config(config)
    pi3 = expected_durations("pi3")
    assert 45 <= pi3["boot"] <= 90 and 180 <= pi3["first_boot"] <= 300
    assert expected_durations("fast")["boot"] < pi3["boot"]


def test_shutdown_halts_until_the_power_is_cycled(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for twin in _twin(config):
        _power(twin, "pi3-b")
        _wait(twin, "pi3-b", ("up",))
        dev = config.devices["pi3-b"]
        with ssh(dev.host, dev.ssh_port, "pi", config.user.password.reveal()) as c:
            c.exec_command("sudo shutdown -h now")
        _wait(twin, "pi3-b", ("halted",), timeout=20)
        assert twin.devices["pi3-b"].status()["sandbox_pid"] is None
        assert _refused(twin, "pi3-b")
        twin.hw.set_port_power(dev.power.location, dev.power.port, False)
        _wait(twin, "pi3-b", ("off",), timeout=5)
        twin.hw.set_port_power(dev.power.location, dev.power.port, True)
        _wait(twin, "pi3-b", ("up",))
        assert not _refused(twin, "pi3-b")
