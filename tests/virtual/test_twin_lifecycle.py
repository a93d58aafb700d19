"""`rig twin up|status|down`: the supervisor daemon follows the virtual hub and muxes."""

from __future__ import annotations

import os
import subprocess
import time

import paramiko
import pytest
from twin_support import flash, image, provision, ssh, write_config

from rig.cli import main
from rig.virtual.hw.state import VirtualHardware
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import read_status, running_pid

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _device(config, name: str) -> dict:  # type: ignore[no-untyped-def]
    status = read_status(config) or {"devices": []}
    return next(d for d in status["devices"] if d["device"] == name)


def _wait(config, name: str, phases: tuple[str, ...], timeout: float = 240) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with_phase = _device(config, name) if read_status(config) else None
        if with_phase and with_phase["phase"] in phases:
            return with_phase
        time.sleep(0.1)
    raise AssertionError(f"{name} not in {phases}: {read_status(config)}")


def test_twin_up_boots_powered_devices_and_down_leaves_nothing(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    require_sandbox()
    config = write_config(tmp_path)
    cfg = ["--config", str(config.source)]
    assert main([*cfg, "twin", "up"]) == 0
    pid = running_pid(config)
    assert pid and pid > 0
    try:
        assert main([*cfg, "twin", "up"]) == 0  # idempotent
        assert running_pid(config) == pid

        hw = VirtualHardware.from_config(config)
        dev = config.devices["pi3-b"]
        card = hw.card_path(dev.mux.serial)
        flash(image("octopi-1.0.0"), card)
        provision(card, config, "pi3-b")
        assert _device(config, "pi3-b")["phase"] == "off"

        hw.set_mux_side(dev.mux.serial, "dut")
        hw.set_port_power(dev.power.location, dev.power.port, True)
        up = _wait(config, "pi3-b", ("up", "failed", "unreachable"))
        assert up["phase"] == "up", up
        with ssh(dev.host, dev.ssh_port, "pi", config.user.password.reveal()) as c:
            _, out, _ = c.exec_command("hostname; cat /etc/octopi_version")
            assert out.read().decode().split()[1] == "1.0.0"
        capsys.readouterr()
        assert main([*cfg, "twin", "status"]) == 0
        table = capsys.readouterr().out
        assert "pi3-b" in table and "up" in table and "1.10.3" in table

        # the card switched away from the DUT is a power cut, as is power off
        hw.set_mux_side(dev.mux.serial, "off")
        assert _wait(config, "pi3-b", ("off",), timeout=5)["pid"] is None
        with pytest.raises((paramiko.SSHException, OSError)):
            ssh(dev.host, dev.ssh_port, "pi", config.user.password.reveal())
        hw.set_mux_side(dev.mux.serial, "dut")
        assert _wait(config, "pi3-b", ("up",))["boots"] >= 1
        hw.set_port_power(dev.power.location, dev.power.port, False)
        _wait(config, "pi3-b", ("off",), timeout=5)
    finally:
        assert main([*cfg, "twin", "down"]) == 0
    assert running_pid(config) is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)  # our own child (ensure_twin ran here): its reaper thread collects it
    assert not os.path.exists(f"/proc/{pid}")
    left = subprocess.run(
        ["pgrep", "-f", str(config.paths.state)], capture_output=True, text=True, check=False
    )
    assert left.stdout == "", f"orphans: {left.stdout}"
    capsys.readouterr()
    assert main([*cfg, "twin", "status"]) == 0
    assert "not running" in capsys.readouterr().out
