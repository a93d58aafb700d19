"""Wi-Fi at boot: joined only when SSID, PSK and country match the access point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from virtual_cards import (
    AP,
    FIXTURES,
    append_cmdline,
    cached_image,
    flash,
    names,
    put,
    put_fixture,
    root_cat,
)

from rig.virtual.bootfiles.wifi import AccessPoint, psk_key
from rig.virtual.firstboot import boot_card


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    return {g: cached_image(f"octopi-{g}") for g in ("0.18.0", "1.0.0", "1.1.0")}


@pytest.fixture
def card(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(images: dict[str, Path], gen: str) -> Path:
        return flash(images[gen], tmp_path / f"card-{gen}.img")

    return make


def test_psk_key_matches_openssl_kdf() -> None:
    # value computed independently with `openssl kdf ... PBKDF2` (see fixtures/README.md)
    from virtual_cards import HEXKEY

    assert psk_key("correct horse 42", "rig-test-net") == HEXKEY


@pytest.mark.parametrize(
    ("fixture", "joined", "why"),
    [
        ("wpa/passphrase.txt", True, ""),
        ("wpa/hexkey.txt", True, ""),
        ("wpa/hex-ssid.txt", True, ""),
        ("wpa/two-networks.txt", True, ""),
        ("wpa/wrong-psk.txt", False, "wrong PSK"),
        ("wpa/no-country.txt", False, "country"),
        ("wpa/wrong-country.txt", False, "US does not match"),
        ("wpa/unclosed.txt", False, "not closed"),
    ],
)
@pytest.mark.parametrize("gen", ["0.18.0", "1.0.0"])
def test_octopi_wpa_supplicant_txt(images, card, tmp_path, gen, fixture, joined, why) -> None:  # type: ignore[no-untyped-def]
    c = card(images, gen)
    put_fixture(c, fixture, "octopi-wpa-supplicant.txt", tmp_path)
    out = boot_card(c, ap=AP)
    assert out.booted, out.reason
    assert out.wifi_joined is joined, out.wifi_reason
    assert why in out.wifi_reason
    # read on every boot, never moved away
    assert "octopi-wpa-supplicant.txt" in names(c)


def test_shipped_template_joins_nothing(images, card) -> None:  # type: ignore[no-untyped-def]
    for gen in ("0.18.0", "1.0.0", "1.1.0"):
        out = boot_card(card(images, gen), ap=AP)
        assert out.booted and not out.wifi_joined
        assert "no Wi-Fi network configured" in out.wifi_reason


def test_octopi_wpa_file_is_read_on_every_boot(images, card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "1.0.0")
    put_fixture(c, "wpa/passphrase.txt", "octopi-wpa-supplicant.txt", tmp_path)
    assert boot_card(c, ap=AP).wifi_joined
    put_fixture(c, "wpa/wrong-psk.txt", "octopi-wpa-supplicant.txt", tmp_path)
    second = boot_card(c, ap=AP)
    assert not second.first_boot and not second.wifi_joined
    put_fixture(c, "wpa/hexkey.txt", "octopi-wpa-supplicant.txt", tmp_path)
    assert boot_card(c, ap=AP).wifi_joined


def test_other_access_point_is_not_joined(images, card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "1.0.0")
    put_fixture(c, "wpa/passphrase.txt", "octopi-wpa-supplicant.txt", tmp_path)
    out = boot_card(c, ap=AccessPoint("rig-test-net", "another passphrase", "DE"))
    assert not out.wifi_joined and "wrong PSK" in out.wifi_reason
    out = boot_card(c, ap=AccessPoint("other-net", "correct horse 42", "DE"))
    assert not out.wifi_joined and "SSID" in out.wifi_reason


def test_wpa_supplicant_conf_is_moved_to_etc(images, card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "0.18.0")
    put_fixture(c, "wpa/hexkey.txt", "wpa_supplicant.conf", tmp_path)
    out = boot_card(c, ap=AP)
    assert out.wifi_joined, out.wifi_reason
    assert "wpa_supplicant.conf" not in names(c)
    assert "psk=01a89ea4" in root_cat(c, "/etc/wpa_supplicant/wpa_supplicant.conf")
    # the move replaced OctoPi's link: its boot file no longer counts
    put_fixture(c, "wpa/wrong-psk.txt", "octopi-wpa-supplicant.txt", tmp_path)
    assert boot_card(c, ap=AP).wifi_joined


@pytest.mark.parametrize(
    ("fixture", "regdom", "joined", "why"),
    [
        ("nm/passphrase.nmconnection", "DE", True, ""),
        ("nm/hexkey.nmconnection", "DE", True, ""),
        ("nm/byte-ssid.nmconnection", "DE", True, ""),
        ("nm/wrong-psk.nmconnection", "DE", False, "wrong PSK"),
        ("nm/passphrase.nmconnection", None, False, "country"),
        ("nm/passphrase.nmconnection", "GB", False, "GB does not match"),
    ],
)
def test_wifi_nmconnection(images, card, tmp_path, fixture, regdom, joined, why) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "1.1.0")
    put_fixture(c, fixture, "wifi.nmconnection", tmp_path)
    if regdom:
        append_cmdline(c, f" cfg80211.ieee80211_regdom={regdom}", tmp_path)
    out = boot_card(c, ap=AP)
    assert out.booted, out.reason
    assert out.wifi_joined is joined, out.wifi_reason
    assert why in out.wifi_reason
    copied = root_cat(c, "/etc/NetworkManager/system-connections/wifi.nmconnection")
    assert copied.endswith((FIXTURES / fixture).read_text())
    assert "wifi.nmconnection" in names(c)


def test_wifi_nmconnection_is_copied_on_every_boot(images, card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "1.1.0")
    put_fixture(c, "nm/passphrase.nmconnection", "wifi.nmconnection", tmp_path)
    append_cmdline(c, " cfg80211.ieee80211_regdom=DE", tmp_path)
    assert boot_card(c, ap=AP).wifi_joined
    put_fixture(c, "nm/wrong-psk.nmconnection", "wifi.nmconnection", tmp_path)
    assert not boot_card(c, ap=AP).wifi_joined
    put(
        c,
        "wifi.nmconnection",
        (Path(__file__).parent / "fixtures/nm/hexkey.nmconnection").read_text(),
        tmp_path,
    )
    assert boot_card(c, ap=AP).wifi_joined


def test_wpa_supplicant_conf_is_ignored_on_bookworm(images, card, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = card(images, "1.1.0")
    put_fixture(c, "wpa/passphrase.txt", "wpa_supplicant.conf", tmp_path)
    out = boot_card(c, ap=AP)
    assert out.booted and not out.wifi_joined
    assert "wpa_supplicant.conf" in names(c)  # nothing on Bookworm moves it
