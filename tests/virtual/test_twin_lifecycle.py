"""`rig twin up|status|down`: the supervisor daemon follows the virtual hub and muxes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import paramiko
import pytest
from twin_support import flash, image, provision, ssh, write_config

from rig.cli import main
from rig.virtual.card import Card
from rig.virtual.hw.state import VirtualHardware, _mounted_loops
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


def test_twin_up_boots_powered_devices_and_down_leaves_nothing(  # type: ignore[no-untyped-def]
    tmp_path, capsys, monkeypatch
) -> None:
    require_sandbox()
    monkeypatch.setenv("COLUMNS", "200")  # one table row per device
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
        # the OS and Python columns are what the device answers over SSH: its card's own
        row = next(line for line in table.splitlines() if "pi3-b" in line)
        assert "debian 11" in row and " 3.9." in row

        # the card switched away from the DUT is a power cut, as is power off
        hw.set_mux_side(dev.mux.serial, "off")
        assert _wait(config, "pi3-b", ("off",), timeout=5)["pid"] is None
        with pytest.raises((paramiko.SSHException, OSError)):
            ssh(dev.host, dev.ssh_port, "pi", config.user.password.reveal())
        hw.set_mux_side(dev.mux.serial, "dut")
        assert _wait(config, "pi3-b", ("up",))["boots"] >= 1
        # power off and switch the card to the host at once, as the pipeline does: the
        # host gets the card only after the device let go of it (its root unmounted), so
        # the unmount cannot write over what the host then writes
        # sessions still running at the cut: their host-side nsenter sits in the card's
        # mount for a moment after the device's processes die (the unmount must wait for
        # it, not detach lazily and write back later)
        busy = ssh(dev.host, dev.ssh_port, "pi", config.user.password.reveal())
        _, out, _ = busy.exec_command("echo dirty > ~/f; sync; cd ~; sleep 60")
        for _ in range(3):
            busy.exec_command("cd /home/pi && exec sleep 60")
        time.sleep(0.5)
        hw.set_port_power(dev.power.location, dev.power.port, False)
        hw.set_mux_side(dev.mux.serial, "host")
        disk = hw.host_disk(dev.mux.serial)
        # the only loop over the card now is the mux's: the device's is gone, not lazily held
        assert _mounted_loops(str(card.resolve())) == [str(disk)]
        busy.close()
        root = Card(card).root
        info = subprocess.run(
            ["dumpe2fs", "-h", f"{disk}?offset={root.offset}"], capture_output=True, text=True
        ).stdout
        assert "Filesystem state:         clean" in info
        _wait(config, "pi3-b", ("off",), timeout=5)
        hw.set_mux_side(dev.mux.serial, "off")
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


def test_twin_down_after_a_killed_supervisor_releases_the_mounted_card(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_sandbox()
    config = write_config(tmp_path)
    cfg = ["--config", str(config.source)]
    assert main([*cfg, "twin", "up"]) == 0
    pid = running_pid(config)
    hw = VirtualHardware.from_config(config)
    dev = config.devices["pi3-a"]
    card = hw.card_path(dev.mux.serial)
    try:
        flash(image("octopi-1.0.0"), card)
        provision(card, config, "pi3-a")
        hw.set_mux_side(dev.mux.serial, "dut")
        hw.set_port_power(dev.power.location, dev.power.port, True)
        assert _wait(config, "pi3-a", ("up", "failed", "unreachable"))["phase"] == "up"
        assert _mounted_loops(str(card.resolve()))  # the device runs from its card
        os.kill(pid, signal.SIGKILL)  # no chance to power anything off
    finally:
        assert main([*cfg, "twin", "down"]) == 0
    mount_point = config.paths.state / "virtual" / "devices" / "pi3-a" / "card-root"
    assert not os.path.ismount(mount_point)
    assert _mounted_loops(str(card.resolve())) == []
