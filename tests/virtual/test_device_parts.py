"""The virtual Pi's parts without a boot: where the card's files are, and what its
systemd answers the shims (the booted device is tested in test_device_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import VirtualSettings
from rig.virtual.firstboot import BootOutcome
from rig.virtual.rootlayout import for_outcome, venv_inside


def _pi(tmp_path: Path) -> VirtualPi:
    spec = DeviceSpec("pi3-x", "1-1", 1, "000000000099", "127.0.0.1", 2222, 8080)
    return VirtualPi(
        spec,
        card=lambda: tmp_path / "card.img",
        state_dir=tmp_path / "state",
        ap=None,
        settings=VirtualSettings(),
    )


@pytest.mark.parametrize(
    ("generation", "venv", "expected"),
    [
        ("0.18.0", None, "/home/pi/oprint"),
        ("1.0.0", None, "/home/pi/oprint"),
        ("1.1.0", None, "/opt/octopi/oprint"),  # linked from ~/oprint on 1.1
        ("1.1.0", "/home/pi/oprint", "/home/pi/oprint"),  # what the card says wins
        (None, None, "/home/pi/oprint"),
    ],
)
def test_the_venv_is_where_the_card_has_it(generation, venv, expected) -> None:
    outcome = BootOutcome(booted=True, generation=generation, venv=venv)
    assert venv_inside(outcome, "pi") == expected


def test_a_renamed_user_runs_octoprint_from_the_home_the_boot_gave_it(tmp_path: Path) -> None:
    outcome = BootOutcome(
        booted=True,
        generation="1.0.0",
        users={"alice": "$6$x"},
        homes={"alice": "/home/alice"},
        octoprint_user="pi",  # the service still names pi (OctoPrint #4418)
        venv="/home/alice/oprint",
    )
    state = for_outcome(tmp_path, outcome, card_rooted=False)
    assert (state.user, state.home, state.basedir) == ("pi", "/home/pi", "/home/pi/.octoprint")
    assert state.home_of("alice") == "/home/alice"
    assert state.host_path("/home/alice/oprint") == tmp_path / "home" / "alice" / "oprint"
    assert state.host_path("/etc/hostname") == tmp_path / "etc" / "hostname"
    with pytest.raises(ValueError, match="/usr/bin"):
        state.host_path("/usr/bin/python3")  # the host's userland: not the card's state
    card = for_outcome(tmp_path / "card-root", outcome, card_rooted=True)
    assert card.host_path("/usr/bin/python3") == tmp_path / "card-root" / "usr/bin/python3"
    assert card.environment("alice")["HOME"] == "/home/alice"


def test_an_unpowered_pi_has_no_files_and_no_octoprint(tmp_path: Path) -> None:
    pi = _pi(tmp_path)
    assert pi.basedir == "/home/pi/.octoprint"  # the OctoPi default before a boot
    assert pi.installed_octoprint() is None and pi.octoprint_pid() is None
    status = pi.status()
    assert status["phase"] == "off" and status["card_state"] is None
    pi.power_cut()  # nothing to cut
    assert pi.phase == "off"


@pytest.mark.parametrize(
    ("argv", "rc", "err"),
    [
        (["service"], 1, "Usage: service"),
        (["systemctl", "restart"], 1, "too few arguments"),
        (["systemctl", "restart", "haproxy.service"], 5, "Unit haproxy.service not found."),
        (["service", "haproxy", "restart"], 1, "Unit haproxy.service not found."),
        (["systemctl", "reload", "octoprint"], 1, "Unknown operation 'reload'"),
        (["apt-get", "install", "x"], 1, "not supported on this virtual Pi"),
    ],
)
def test_the_shims_get_systemd_s_answers(tmp_path: Path, argv, rc, err) -> None:
    code, _out, stderr, after = _pi(tmp_path).systemd.command(argv)
    assert (code, after) == (rc, None)
    assert err in stderr


def test_octoprint_does_not_start_on_a_pi_that_is_not_running(tmp_path: Path) -> None:
    pi = _pi(tmp_path)
    assert pi.systemd.command(["systemctl", "start", "octoprint"])[:2] == (
        1,
        "device is not running\n",
    )
    assert pi.systemd.command(["systemctl", "is-active", "octoprint"])[:2] == (3, "inactive\n")
    assert pi.systemd.command(["systemctl", "is-system-running"])[:2] == (0, "running\n")
    code, _, _, after = pi.systemd.command(["sudo-less", "reboot"][1:])
    assert code == 0 and after is not None  # the reboot happens after the reply
    after()  # an unpowered Pi does not boot from a reboot request
    assert pi.phase == "off"
