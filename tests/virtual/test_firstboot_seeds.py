"""Declarative first-boot seeds: Bookworm's custom.toml and cloud-init NoCloud."""

from __future__ import annotations

import dataclasses
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
    read,
    root_cat,
)

from rig.virtual.firstboot import boot_card, check_password


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    return {
        "1.1.0": cached_image("octopi-1.1.0"),
        "1.0.0": cached_image("octopi-1.0.0"),
        "plain": cached_image(
            "plain-trixie", str(FIXTURES / "recipes/plain-trixie.yaml"), octoprint="1.11.7"
        ),
    }


def test_custom_toml_on_bookworm(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.1.0"], tmp_path / "card.img")
    put_fixture(card, "custom/custom.toml", "custom.toml", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert out.hostname == "pi3-c"
    assert list(out.users) == ["carol"] and out.users["carol"] == SECRET_HASH
    assert out.ssh_enabled and out.ssh_password_auth
    assert out.wifi_joined, out.wifi_reason
    assert "custom.toml" not in names(card)
    assert "cfg80211.ieee80211_regdom=DE" in read(card, "cmdline.txt")
    assert "init=" not in read(card, "cmdline.txt")
    # a later boot does not apply the shipped userconf.txt over carol
    assert list(boot_card(card, ap=AP).users) == ["carol"]


def test_custom_toml_is_only_read_by_bookworm(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.0.0"], tmp_path / "card.img")
    put_fixture(card, "custom/custom.toml", "custom.toml", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.hostname == "octopi" and list(out.users) == ["pi"]
    assert "custom.toml" in names(card)


def test_custom_toml_with_wrong_version_is_rejected(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["1.1.0"], tmp_path / "card.img")
    put_fixture(card, "custom/bad-version.toml", "custom.toml", tmp_path)
    out = boot_card(card, ap=AP)
    assert out.hostname == "octopi"
    assert any("config_version" in ch for ch in out.first_boot_changes)


def _seed(
    card: Path, tmp_path: Path, meta: str | None = None, user_data: str | None = None
) -> None:
    put(card, "user-data", user_data or (FIXTURES / "cloud/user-data").read_text(), tmp_path)
    put_fixture(card, "cloud/network-config", "network-config", tmp_path)
    put(card, "meta-data", meta or (FIXTURES / "cloud/meta-data").read_text(), tmp_path)


def test_cloud_init_seed(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["plain"], tmp_path / "card.img")
    _seed(card, tmp_path)
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert out.hostname == "pi3-cloud"
    assert list(out.users) == ["dave"] and check_password(out.users["dave"], "secret")
    assert out.ssh_enabled
    assert out.wifi_joined, out.wifi_reason
    assert root_cat(card, "/var/lib/cloud/data/instance-id") == "rig-fixture-0001\n"
    assert {"user-data", "network-config", "meta-data"} <= names(card)  # the seed stays


def test_cloud_init_reruns_only_for_a_new_instance_id(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["plain"], tmp_path / "card.img")
    _seed(card, tmp_path)
    assert boot_card(card, ap=AP).hostname == "pi3-cloud"
    changed = (FIXTURES / "cloud/user-data").read_text().replace("pi3-cloud", "pi3-renamed")
    put(card, "user-data", changed, tmp_path)
    same = boot_card(card, ap=AP)
    assert same.hostname == "pi3-cloud"  # same instance-id: per-instance config not re-run
    put(card, "meta-data", "instance-id: rig-fixture-0002\n", tmp_path)
    rerun = boot_card(card, ap=AP)
    assert rerun.hostname == "pi3-renamed"
    assert not rerun.first_boot  # a new instance, not a new card
    assert root_cat(card, "/var/lib/cloud/data/instance-id") == "rig-fixture-0002\n"


def test_cloud_init_user_data_needs_its_header(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(images["plain"], tmp_path / "card.img")
    text = (FIXTURES / "cloud/user-data").read_text().replace("#cloud-config\n", "")
    _seed(card, tmp_path, user_data=text)
    out = boot_card(card, ap=AP)
    assert out.users == {} and not out.ssh_enabled


def test_singular_user_renames_the_uid_1000_user(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Imager's `user:` is the distro's default user: the image's uid-1000 account
    (which OctoPi's services run as) is renamed, not joined by a second one."""
    card = flash(images["plain"], tmp_path / "card.img")
    text = (FIXTURES / "cloud/user-data").read_text()
    single = text.split("users:\n")[0] + (
        "user:\n  name: dave\n  lock_passwd: false\n  passwd: " + SECRET_HASH + "\n"
        "runcmd:\n  - [ systemctl, enable, --now, ssh ]\n"
    )
    _seed(card, tmp_path, user_data=single)
    out = boot_card(card, ap=AP)
    assert list(out.users) == ["dave"] and check_password(out.users["dave"], "secret")
    passwd = root_cat(card, "/etc/passwd")
    assert "dave:x:1000:" in passwd and "\npi:" not in passwd


def test_rig_provisioned_cloud_init_gives_the_rig_user_uid_1000(images, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from twin_support import write_config

    from rig.card.provision import ProvisionSettings, provision_card
    from rig.virtual.twin import access_point

    card = flash(images["plain"], tmp_path / "card.img")
    config = write_config(tmp_path)
    # another name than the image's pi: the rename is what is under test
    settings = dataclasses.replace(ProvisionSettings.from_config(config, "pi3-a"), user="tester")
    provision_card(card, settings, scheme="cloud-init", log=lambda _m: None)
    assert " ds=nocloud;i=rig-" in read(card, "cmdline.txt")
    out = boot_card(card, ap=access_point(config))
    assert out.booted, out.reason
    passwd = root_cat(card, "/etc/passwd")
    assert "tester:x:1000:" in passwd and "\npi:" not in passwd
    assert out.wifi_joined, out.wifi_reason
