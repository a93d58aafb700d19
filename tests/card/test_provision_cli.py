"""`rig provision --image FILE` and `rig provision DEVICE` (on the virtual rig's mux),
run through the real CLI entry point; results read back with mtools."""

from __future__ import annotations

import shutil
from pathlib import Path

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.cli import main
from rig.config import load_config

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)


@pytest.fixture
def card(tmp_path):
    return cards.build_card(tmp_path, generation="octopi-1.0.0", fat=32)


def test_dry_run_prints_masked_files_and_writes_nothing(card, capsys):
    before = card.sha256()
    assert main(["provision", "--image", str(card.path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert card.sha256() == before
    assert "would provision with scheme octopi-legacy" in out
    assert "--- octopi-wpa-supplicant.txt ---" in out and 'ssid="rig-virtual-ap"' in out
    assert "psk=********" in out and "pi:********" in out
    assert "virtual-rig-psk" not in out and "raspberry-rig" not in out


def test_overrides_reach_the_card(card, capsys):
    code = main(
        [
            "provision",
            "--image",
            str(card.path),
            "--hostname",
            "bench-7",
            "--ssid",
            "Lab Net",
            "--country",
            "fr",
            "--user",
            "octo",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "provisioned with scheme octopi-legacy" in out
    assert card.mtype("octopi-hostname.txt") == b"bench-7\n"
    wpa = card.mtype("octopi-wpa-supplicant.txt").decode()
    assert 'ssid="Lab Net"' in wpa and "\ncountry=FR\n" in wpa
    assert card.mtype("userconf.txt").startswith(b"octo:$6$")
    assert main(["provision", "--image", str(card.path), "--scheme", "cloud-init"]) == 0
    assert b'hostname: "raspberrypi"' in card.mtype("user-data")  # no device: the default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--country", "G1"], "--country"),
        (["--ssid", "x" * 40], "--ssid"),
        (["--user", "Root"], "--user"),
        (["--hostname", "bad_name"], "--hostname"),
    ],
)
def test_bad_overrides_exit_2_and_leave_the_card(card, capsys, argv, message):
    before = card.sha256()
    assert main(["provision", "--image", str(card.path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert card.sha256() == before


def test_usage_errors(card, tmp_path, capsys):
    assert main(["provision"]) == 2
    assert main(["provision", "pi3-a", "--image", str(card.path)]) == 2
    assert main(["provision", "--image", str(tmp_path / "missing.img")]) == 2
    assert main(["provision", "no-such-device"]) == 2
    err = capsys.readouterr().err
    assert "DEVICE or --image" in err and "no-such-device" in err


def test_device_card_must_be_on_the_host_side(capsys):
    from rig.root import Rig

    mux = Rig.from_config(load_config(None, search=False)).mux("pi3-b")
    mux.off()
    assert mux.state() != "host"
    assert main(["provision", "pi3-b"]) == 2
    assert "rig mux pi3-b host" in capsys.readouterr().err


def test_device_on_the_virtual_rig(card, capsys):
    """The production path: the mux of pi3-c names the disk; provision writes only it."""
    from rig.root import Rig

    mux = Rig.from_config(load_config(None, search=False)).mux("pi3-c")
    mux.host()
    try:
        disk = mux.disk(10)
        with open(card.path, "rb") as src, open(disk, "r+b") as dst:  # "flash" the card
            shutil.copyfileobj(src, dst)
        assert main(["provision", "pi3-c"]) == 0
        assert "provisioned with scheme octopi-legacy" in capsys.readouterr().out
        on_disk = cards.Card(Path(disk), card.start, card.size)
        assert on_disk.mtype("octopi-hostname.txt") == b"pi3-c\n"  # the device name
        assert b'ssid="rig-virtual-ap"' in on_disk.mtype("octopi-wpa-supplicant.txt")
    finally:
        mux.off()
