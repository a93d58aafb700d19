"""Imager-style firstrun.sh: interpreted with bash's quoting, applied once, then gone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from virtual_cards import (
    AP,
    SECRET_HASH,
    append_cmdline,
    cached_image,
    flash,
    fsck_root,
    names,
    put_fixture,
    read,
    root_cat,
)

from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles.firstrun import interpret_firstrun
from rig.virtual.bootfiles.wifi import AccessPoint
from rig.virtual.firstboot import boot_card, check_password

SUFFIX = (
    " systemd.run={path} systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
)


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    return {g: cached_image(f"octopi-{g}") for g in ("1.0.0", "1.1.0")}


def _card(images, gen, tmp_path, script, path="/boot/firstrun.sh"):  # type: ignore[no-untyped-def]
    card = flash(images[gen], tmp_path / "card.img")
    put_fixture(card, f"firstrun/{script}", "firstrun.sh", tmp_path)
    before = append_cmdline(card, SUFFIX.format(path=path), tmp_path)
    return card, before


def test_imager_script_on_bullseye(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, before = _card(images, "1.0.0", tmp_path, "imager-bullseye.sh")
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert out.hostname == "pi3-a"
    assert root_cat(card, "/etc/hostname") == "pi3-a\n"
    # userconf renamed pi and disabled userconfig.service, so the image's own
    # userconf.txt (pi:raspberry) is not applied on the next boot
    assert list(out.users) == ["tester"]
    assert out.users["tester"] == SECRET_HASH and check_password(SECRET_HASH, "secret")
    assert out.ssh_enabled
    # the here-document went through OctoPi's link into octopi-wpa-supplicant.txt
    assert out.wifi_joined, out.wifi_reason
    assert "psk=01a89ea4" in read(card, "octopi-wpa-supplicant.txt")
    assert "firstrun.sh" not in names(card)
    cmdline = read(card, "cmdline.txt")
    assert "systemd.run" not in cmdline and cmdline.count("\n") == 1
    assert before.split(" systemd.run")[0].replace(
        " init=/usr/lib/raspi-config/init_resize.sh", ""
    ) == cmdline.rstrip("\n")
    assert out.reboots == 2  # resize + firstrun.sh's success action
    assert "userconf.txt" in names(card)
    assert fsck_root(card, tmp_path).returncode == 0
    again = boot_card(card, ap=AP)
    assert list(again.users) == ["tester"] and again.wifi_joined and not again.first_boot


def test_imager_script_on_bookworm(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, _ = _card(images, "1.1.0", tmp_path, "imager-bookworm.sh", "/boot/firmware/firstrun.sh")
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert out.hostname == "pi3-b"
    assert list(out.users) == ["tester"]
    assert out.ssh_enabled and out.ssh_password_auth is False
    assert out.ssh_keys["tester"][0].startswith("ssh-ed25519 ")
    assert out.wifi_joined, out.wifi_reason
    assert "cfg80211.ieee80211_regdom=DE" in read(card, "cmdline.txt")
    assert "ssid=rig-test-net" in root_cat(
        card, "/etc/NetworkManager/system-connections/preconfigured.nmconnection"
    )


def test_hostile_quoting_follows_bash(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, _ = _card(images, "1.1.0", tmp_path, "hostile-quoting.sh")
    ap = AccessPoint('o\'reilly "lab" $HOME', "pa$$word 'x' \"y\"", "DE")
    out = boot_card(card, ap=ap)
    assert out.booted, out.reason
    assert out.hostname == "pi3-hostile"
    assert out.wifi_joined, out.wifi_reason
    # "$6$fixturesalt$cS9M..." in double quotes lost its $-words, as in bash
    assert list(out.users) == ["bob"]
    assert out.users["bob"] == SECRET_HASH.split("$cS9MhLCMTQus", 1)[1]
    assert not check_password(out.users["bob"], "secret")


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("unterminated.sh", "unterminated single quote"),
        ("unknown-command.sh", "cannot run"),
        ("forgets-cmdline.sh", "boot loop"),
    ],
)
def test_broken_script_never_comes_up(images, tmp_path, script, why) -> None:  # type: ignore[no-untyped-def]
    card, _before = _card(images, "1.0.0", tmp_path, script)
    out = boot_card(card, ap=AP)
    assert not out.booted
    assert why in out.reason
    again = boot_card(card, ap=AP)  # and it never comes up on later boots either
    assert not again.booted


def test_failing_script_leaves_itself_and_cmdline(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, _ = _card(images, "1.0.0", tmp_path, "unknown-command.sh")
    boot_card(card, ap=AP)
    assert "firstrun.sh" in names(card)
    assert "systemd.run=/boot/firstrun.sh" in read(card, "cmdline.txt")


def test_missing_script_stops_the_boot(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.0.0"], tmp_path / "card.img")
    append_cmdline(card, SUFFIX.format(path="/boot/firstrun.sh"), tmp_path)
    out = boot_card(card, ap=AP)
    assert not out.booted and "no such file" in out.reason


def test_interpreter_quoting_unit() -> None:
    fx = interpret_firstrun(
        'A=x\nB="$A"\'$A\'"\\$A"\n/usr/lib/raspberrypi-sys-mods/imager_custom set_hostname "$B"\n'
        "rm -f /boot/firstrun.sh\nsed -i 's| systemd.run.*||g' /boot/cmdline.txt\n",
        exists=lambda p: False,
    )
    assert fx.hostname == "x$A$A"
    with pytest.raises(BootFileError, match="status 3"):
        interpret_firstrun("exit 3\n", exists=lambda p: False)
    with pytest.raises(BootFileError, match="here-document"):
        interpret_firstrun(
            "cat >/etc/default/keyboard <<'EOF'\nXKBLAYOUT=de\n", exists=lambda p: False
        )


def test_script_writing_its_own_keyfile(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card, _ = _card(images, "1.1.0", tmp_path, "nm-heredoc.sh")
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert out.wifi_joined, out.wifi_reason
    assert "systemd.run" not in read(card, "cmdline.txt")
    assert "cfg80211.ieee80211_regdom=DE" in read(card, "cmdline.txt")
    # on a wpa_supplicant image the directory is missing: bash goes on, no Wi-Fi
    card, _ = _card(images, "1.0.0", tmp_path, "nm-heredoc.sh")
    out = boot_card(card, ap=AP)
    assert out.booted and not out.wifi_joined
