"""Bad input is refused before the card is touched (proven by hashing the image), with
the field named; partition problems are reported clearly; dry runs write nothing and
show no secret."""

from __future__ import annotations

import hashlib

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.card.fat import open_boot_partition
from rig.card.provision import ProvisionSettings, provision_card
from rig.config import Secret
from rig.errors import ConfigError, InfraError

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)


def good(**changes) -> ProvisionSettings:
    base = {
        "hostname": "octo-test",
        "ssid": "IEEE",
        "psk": Secret("password"),
        "country": "GB",
        "user": "pi",
        "password": Secret("raspberry-rig"),
        "origin": {"ssid": "rig.yaml: wifi.ssid", "psk": "rig.yaml: wifi.psk"},
    }
    base.update(changes)
    return ProvisionSettings(**base)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return cards.build_card(tmp_path_factory.mktemp("v"), generation="octopi-1.0.0", fat=16)


BAD = [
    ("ssid", {"ssid": ""}, "1 to 32 bytes"),
    ("ssid", {"ssid": "x" * 33}, "1 to 32 bytes"),
    ("ssid", {"ssid": "ü" * 17}, "34"),  # 17 characters, 34 bytes
    ("ssid", {"ssid": "net\nnetwork={"}, "control characters"),
    ("ssid", {"ssid": "tab\there"}, "control characters"),
    ("psk", {"psk": Secret("short")}, "8 to 63"),
    ("psk", {"psk": Secret("x" * 64)}, "8 to 63"),  # 64 characters but not hex
    ("psk", {"psk": Secret("pässwörter")}, "printable ASCII"),
    ("psk", {"psk": Secret("line\nbreak!")}, "printable ASCII"),
    ("country", {"country": "G"}, "two-letter"),
    ("country", {"country": "gb"}, "two-letter"),
    ("country", {"country": "GBR"}, "two-letter"),
    ("user", {"user": "Pi"}, "user name"),
    ("user", {"user": "1pi"}, "user name"),
    ("user", {"user": "pi_user"}, "user name"),
    ("user", {"user": "a" * 33}, "user name"),
    ("user", {"user": "root"}, "root"),
    ("password", {"password": Secret("")}, "empty"),
    ("password", {"password": Secret("two\nlines")}, "control"),
    ("hostname", {"hostname": "-octo"}, "hostname"),
    ("hostname", {"hostname": "octo_pi"}, "hostname"),
    ("hostname", {"hostname": "o" * 64}, "hostname"),
    ("config_txt", {"config_txt": ("enable_uart=1\ndtoverlay=evil",)}, "config.txt"),
    ("config_txt", {"config_txt": ("just words",)}, "config.txt"),
]


@pytest.mark.parametrize(
    ("field", "change", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_names_the_field_and_leaves_the_card(pristine, field, change, message):
    before = pristine.sha256()
    with pytest.raises(ConfigError) as e:
        provision_card(pristine.path, good(**change))
    assert message in str(e.value)
    assert field in e.value.where or field.replace("_", "-") in e.value.where
    assert pristine.sha256() == before


def test_where_points_at_the_config_key(pristine):
    with pytest.raises(ConfigError) as e:
        provision_card(pristine.path, good(ssid="y" * 40))
    assert e.value.where == "rig.yaml: wifi.ssid"
    with pytest.raises(ConfigError) as e:
        provision_card(pristine.path, good().override(country="X1"))
    assert e.value.where == "--country"


def test_good_edge_values_pass(pristine, tmp_path):
    card = tmp_path / "c.img"
    card.write_bytes(pristine.path.read_bytes())
    edge = good(
        ssid="ü" * 16,  # exactly 32 bytes
        psk=Secret("~" * 63),
        user="a" + "-" * 31,
        hostname="o" * 63,
    )
    result = provision_card(card, edge)
    assert result.scheme == "octopi-legacy"


def test_unknown_scheme_is_a_config_error(pristine):
    before = pristine.sha256()
    with pytest.raises(ConfigError, match="unknown provisioning scheme") as e:
        provision_card(pristine.path, good(scheme="kickstart"))
    assert "cloud-init" in e.value.hint
    assert pristine.sha256() == before


def test_full_partition_fails_cleanly(tmp_path):
    card = cards.build_card(tmp_path, generation="octopi-1.0.0", fat=16, size_mib=8)
    with open_boot_partition(card.path, write=False) as vol:
        free = vol.free_bytes
    card.mcopy_in("filler.bin", b"\0" * (free - 512))  # room for one new file, not three
    before = card.sha256()
    with pytest.raises(InfraError, match="boot partition is full") as e:
        provision_card(card.path, good())
    assert e.value.hint
    assert card.sha256() == before
    card.fsck(tmp_path)
    # the dry run finds the same problem without writing
    with pytest.raises(InfraError, match="full"):
        provision_card(card.path, good(), dry_run=True)


def test_gpt_card_is_refused(tmp_path):
    card = cards.build_card(tmp_path, generation="octopi-1.0.0", fat=32)
    with open(card.path, "r+b") as f:
        f.seek(0x1BE + 4)
        f.write(b"\xee")
    before = card.sha256()
    with pytest.raises(ConfigError, match="GPT"):
        provision_card(card.path, good())
    assert card.sha256() == before


def test_cmdline_without_root_is_refused(tmp_path):
    card = cards.build_card(
        tmp_path, {"cmdline.txt": b"console=tty1 quiet\n", "config.txt": b""}, fat=16
    )
    before = card.sha256()
    with pytest.raises(ConfigError, match="root="):
        provision_card(card.path, good(), scheme="firstrun")
    assert card.sha256() == before


def test_dry_run_writes_nothing_and_masks_secrets(pristine):
    before = pristine.sha256()
    result = provision_card(pristine.path, good(), dry_run=True)
    assert pristine.sha256() == before
    assert result.dry_run and {f.action for f in result.files} == {"written"}
    shown = result.describe(contents=True)
    key = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    userconf = result.file("userconf.txt").content.decode()
    assert "raspberry-rig" not in shown and key not in shown
    assert userconf.split(":", 1)[1].strip() not in shown
    assert "********" in shown and "would be written" in shown
    assert "octopi-wpa-supplicant.txt" in shown


def test_cmdline_stays_one_line_when_it_had_two(tmp_path):
    card = cards.build_card(
        tmp_path,
        {
            "cmdline.txt": b"console=tty1 root=PARTUUID=1234abcd-02 rootwait\n\nstray line\n",
            "config.txt": b"",
        },
        fat=16,
    )
    provision_card(card.path, good(), scheme="firstrun")
    text = card.mtype("cmdline.txt").decode()
    assert text.count("\n") == 1 and text.startswith("console=tty1 root=PARTUUID=1234abcd-02")


def test_results_never_carry_secrets_into_reports(pristine, tmp_path):
    """Runners put results into reports via asdict/repr/str: only paths, actions, sizes."""
    import dataclasses
    import json

    card = tmp_path / "c.img"
    card.write_bytes(pristine.path.read_bytes())
    result = provision_card(card, good(psk=Secret("wifi-secret-42")))
    userconf_hash = result.file("userconf.txt").content.decode().split(":", 1)[1].strip()
    key = hashlib.pbkdf2_hmac("sha1", b"wifi-secret-42", b"IEEE", 4096, 32).hex()
    assert key.encode() in result.file("octopi-wpa-supplicant.txt").content
    for shown in (
        repr(result),
        str(dataclasses.asdict(result)),
        json.dumps(result.summary()),
        result.describe(),
    ):
        for secret in ("raspberry-rig", "wifi-secret-42", key, userconf_hash):
            assert secret not in shown
    assert {f["path"] for f in result.summary()["files"]} >= {"userconf.txt", "ssh"}
