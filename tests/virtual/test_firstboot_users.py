"""Users and SSH at first boot: the generation's default, userconf.txt, the ssh file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from virtual_cards import (
    AP,
    FIXTURES,
    SECRET_HASH,
    cached_image,
    flash,
    names,
    put,
    put_fixture,
    root_ls,
)

from rig.virtual.firstboot import boot_card, check_password


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    built = {g: cached_image(f"octopi-{g}") for g in ("0.18.0", "1.0.0", "1.1.0")}
    built["plain"] = cached_image(
        "plain-trixie", str(FIXTURES / "recipes/plain-trixie.yaml"), octoprint="1.11.7"
    )
    return built


@pytest.mark.parametrize("gen", ["0.18.0", "1.0.0", "1.1.0"])
def test_octopi_default_user_is_pi_raspberry(images, tmp_path, gen) -> None:  # type: ignore[no-untyped-def]
    card = flash(images[gen], tmp_path / "card.img")
    out = boot_card(card, ap=AP)
    assert out.booted and out.first_boot
    assert list(out.users) == ["pi"]
    assert check_password(out.users["pi"], "raspberry")
    assert not check_password(out.users["pi"], "raspberrY")
    assert out.ssh_enabled  # OctoPi ships sshd enabled
    assert out.generation == gen
    assert "userconf.txt" not in names(card)  # applied (1.0.0+) or never there (0.18.0)


def test_userconf_renames_the_first_user(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.0.0"], tmp_path / "card.img")
    put_fixture(card, "userconf/ok.txt", "userconf.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert list(out.users) == ["alice"]
    assert out.users["alice"] == SECRET_HASH
    assert check_password(out.users["alice"], "secret")
    assert out.homes["alice"] == "/home/alice"
    assert "userconf.txt" not in names(card)
    assert "alice" in root_ls(card, "/home") and " pi" not in root_ls(card, "/home")
    assert any("userconf.txt" in ch for ch in out.first_boot_changes)
    # the venv moved with the home directory; the service still names pi (OctoPrint #4418)
    assert out.octoprint_user == "pi"


def test_rejected_userconf_is_renamed_and_nobody_can_log_in(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.1.0"], tmp_path / "card.img")
    put_fixture(card, "userconf/bad-name.txt", "userconf.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.booted
    assert out.users == {}  # pi stays locked: the shipped userconf.txt was replaced
    assert "failed_userconf.txt" in names(card)
    assert "userconf.txt" not in names(card)


def test_userconf_is_ignored_where_the_image_has_no_userconf(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["0.18.0"], tmp_path / "card.img")
    put_fixture(card, "userconf/ok.txt", "userconf.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert list(out.users) == ["pi"]
    assert "userconf.txt" in names(card)


def test_plain_image_needs_ssh_file_and_user(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["plain"], tmp_path / "card.img")
    out = boot_card(card, ap=AP)
    assert out.booted
    assert not out.ssh_enabled
    assert out.users == {}
    assert out.generation is None and out.base == "trixie"


@pytest.mark.parametrize("name", ["ssh", "ssh.txt", "SSH"])
def test_ssh_file_enables_sshd_and_is_deleted(images, tmp_path, name) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["plain"], tmp_path / "card.img")
    put(card, name, "", tmp_path)
    put_fixture(card, "userconf/ok.txt", "userconf.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.ssh_enabled
    assert list(out.users) == ["alice"]
    assert not {n.lower() for n in names(card)} & {"ssh", "ssh.txt"}
    # sshd stays enabled on the next boot without the file
    again = boot_card(card, ap=AP)
    assert again.ssh_enabled and not again.first_boot


@pytest.mark.parametrize("gen", ["0.18.0", "1.1.0"])
def test_octopi_hostname_and_password_files(images, tmp_path, gen) -> None:  # type: ignore[no-untyped-def]
    card = flash(images[gen], tmp_path / "card.img")
    put_fixture(card, "octopi/hostname-ok.txt", "octopi-hostname.txt", tmp_path)
    put_fixture(card, "octopi/password.txt", "octopi-password.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.hostname == "pi3-a"
    assert check_password(out.users["pi"], "new pi pass")
    assert not check_password(out.users["pi"], "raspberry")
    assert not {"octopi-hostname.txt", "octopi-password.txt"} & names(card)
    assert out.reboots >= 1


def test_octopi_hostname_with_invalid_characters_is_refused(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.0.0"], tmp_path / "card.img")
    put_fixture(card, "octopi/hostname-bad.txt", "octopi-hostname.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.hostname == "octopi"
    assert "octopi-hostname.txt" in names(card)


def test_plain_text_userconf_is_taken_but_matches_nothing(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.0.0"], tmp_path / "card.img")
    put_fixture(card, "userconf/plaintext.txt", "userconf.txt", tmp_path)
    out = boot_card(card, ap=AP)
    assert "userconf.txt" not in names(card) and "failed_userconf.txt" not in names(card)
    assert list(out.users) == ["alice"]
    assert not check_password(out.users["alice"], "secret")
