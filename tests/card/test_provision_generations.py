"""Provision one card per generation, each with the boot files that generation ships,
and compare what mtools reads back with fixtures written by hand from the real
formats. Hashes are checked with `openssl passwd -6` (not our code) before they are
put into the fixture; the PSK is the IEEE 802.11i test vector (SSID "IEEE",
passphrase "password")."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.card.provision import ProvisionSettings, provision_card
from rig.config import load_config

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None or shutil.which("openssl") is None,
    reason="mtools, dosfstools and openssl are needed",
)

PASSWORD = "raspberry-rig"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRigTestKeyNotRealAtAll rig@test"
HASH_RE = re.compile(r"\$6\$([./0-9A-Za-z]{1,16})\$[./0-9A-Za-z]{86}")


def settings(tmp_path: Path, *, keys: bool = False, extra: str = "") -> ProvisionSettings:
    """Settings the way the rig gets them: from a rig.yaml."""
    cfg = tmp_path / "rig.yaml"
    key_list = f", ssh_keys: [{KEY!r}]" if keys else ""
    lines = [
        "wifi: {ssid: IEEE, psk: password, country: GB}",
        f"user: {{name: pi, password: {PASSWORD}{key_list}}}",
        "provision:",
        "  hostname: octo-test",
        "  config_txt: [enable_uart=1, boot_delay=3]",
        extra,
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return ProvisionSettings.from_config(load_config(cfg), "pi3-a")


def verified_hash(text: str) -> str:
    """The SHA-512 crypt hash in `text`, after openssl confirmed it is PASSWORD's."""
    m = HASH_RE.search(text)
    assert m, f"no $6$ hash in {text!r}"
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", m.group(1), PASSWORD],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == m.group(0), "the hash does not match the password"
    return m.group(0)


def fill(fixture: bytes, written: bytes) -> bytes:
    """Put the checked run-specific values (hash, uuid, instance id) into a fixture."""
    text = written.decode()
    out = fixture.decode()
    if "@HASH@" in out:
        out = out.replace("@HASH@", verified_hash(text))
    if "@UUID@" in out:
        m = re.search(r"^uuid=(\S+)$", text, re.M)
        assert m and uuid.UUID(m.group(1))
        out = out.replace("@UUID@", m.group(1))
    if "@INSTANCE@" in out:
        m = re.search(r"^instance-id: (rig-[0-9a-f-]{36})$", text, re.M)
        assert m, "meta-data needs a fresh rig instance-id"
        out = out.replace("@INSTANCE@", m.group(1))
    return out.encode()


# generation, FAT, boot start (MiB), expected scheme, files -> fixture (scheme dir, name)
GENERATIONS = [
    (
        "octopi-0.18.0",
        16,
        4,
        "octopi-legacy",
        {
            "octopi-wpa-supplicant.txt": ("octopi-legacy", "octopi-wpa-supplicant.txt"),
            "octopi-hostname.txt": ("octopi-legacy", "octopi-hostname.txt"),
            "octopi-password.txt": ("octopi-legacy", "octopi-password.txt"),
            "userconf.txt": ("common", "userconf.txt"),
        },
    ),
    (
        "octopi-1.0.0",
        32,
        4,
        "octopi-legacy",
        {
            "octopi-wpa-supplicant.txt": ("octopi-legacy", "octopi-wpa-supplicant.txt"),
            "octopi-hostname.txt": ("octopi-legacy", "octopi-hostname.txt"),
            "octopi-password.txt": ("octopi-legacy", "octopi-password.txt"),
            "userconf.txt": ("common", "userconf.txt"),
            "config.txt": ("common", "config.txt"),
        },
    ),
    (
        "octopi-1.1.0",
        32,
        4,
        "nmconnection",
        {
            "wifi.nmconnection": ("nmconnection", "wifi.nmconnection"),
            "cmdline.txt": ("nmconnection", "cmdline.txt"),
            "octopi-hostname.txt": ("octopi-legacy", "octopi-hostname.txt"),
            "userconf.txt": ("common", "userconf.txt"),
        },
    ),
    (
        "raspios-bullseye",
        16,
        4,
        "wpa-supplicant",
        {
            "wpa_supplicant.conf": ("wpa-supplicant", "wpa_supplicant.conf"),
            "userconf.txt": ("common", "userconf.txt"),
        },
    ),
    (
        "raspios-bookworm",
        32,
        8,
        "custom-toml",
        {
            "custom.toml": ("custom-toml", "custom.toml"),
            "userconf.txt": ("common", "userconf.txt"),
        },
    ),
    (
        "raspios-trixie",
        32,
        8,
        "cloud-init",
        {
            "user-data": ("cloud-init", "user-data"),
            "network-config": ("cloud-init", "network-config"),
            "meta-data": ("cloud-init", "meta-data"),
        },
    ),
]


@pytest.mark.parametrize(
    ("generation", "fat", "start", "scheme", "files"), GENERATIONS, ids=[g[0] for g in GENERATIONS]
)
def test_generation(tmp_path, generation, fat, start, scheme, files):
    card = cards.build_card(tmp_path, generation=generation, fat=fat, start_mib=start)
    shipped = {n: card.mtype(n) for n in card.names() if n != "overlays"}
    s = settings(tmp_path, keys=scheme in ("custom-toml", "cloud-init"))

    result = provision_card(card.path, s)

    assert result.scheme == scheme
    for name, (fixture_dir, fixture) in files.items():
        written = card.mtype(name)
        assert written == fill(cards.expected(fixture_dir, fixture), written), name
        assert result.file(name).content == written
    assert card.mtype("ssh") == b""
    config = card.mtype("config.txt").decode()
    assert config.startswith(shipped["config.txt"].decode().rstrip("\n"))
    assert config.endswith("[all]\nenable_uart=1\nboot_delay=3\n# --- rig provision: end ---\n")
    cmdline = card.mtype("cmdline.txt").decode()
    assert cmdline.count("\n") == 1 and "root=PARTUUID=1234abcd-02" in cmdline
    changed = {f.path for f in result.changed} | {"config.txt", "cmdline.txt"}
    for name, data in shipped.items():  # everything else is exactly as shipped
        if name not in changed and name not in files:
            assert card.mtype(name) == data, name
    card.fsck(tmp_path)

    # provisioning again with the same settings changes nothing (cloud-init: a new instance)
    before = card.sha256()
    again = provision_card(card.path, s)
    if scheme == "cloud-init":  # a new instance id, in meta-data and on the cmdline
        assert {f.path for f in again.changed} == {"meta-data", "cmdline.txt"}
        assert card.mtype("meta-data") != result.file("meta-data").content
        iid = card.mtype("meta-data").decode().split()[1]
        assert card.mtype("cmdline.txt").decode().rstrip("\n").endswith(f" ds=nocloud;i={iid}")
    else:
        assert again.changed == []
        assert card.sha256() == before


def test_firstrun_on_bullseye_octopi(tmp_path):
    """The original rig's default: firstrun.sh plus the one-line cmdline.txt suffix."""
    card = cards.build_card(tmp_path, generation="octopi-1.0.0", fat=16)
    s = settings(tmp_path)
    result = provision_card(card.path, s, scheme="firstrun")
    assert result.scheme == "firstrun" and "command line" in result.reason
    script = card.mtype("firstrun.sh")
    assert script == fill(cards.expected("firstrun", "firstrun.sh"), script)
    assert card.mtype("cmdline.txt") == cards.expected("firstrun", "cmdline.txt")
    subprocess.run(["bash", "-n"], input=script, check=True)
    assert provision_card(card.path, s, scheme="firstrun").changed == []

    # switching the card to another scheme removes our script and the suffix again
    back = provision_card(card.path, s)
    assert back.scheme == "octopi-legacy"
    assert "firstrun.sh" not in card.names()
    assert card.mtype("cmdline.txt") == cards.boot_file("octopi-1.0.0", "cmdline.txt").replace(
        b"{disk_id}", b"1234abcd"
    )
    card.fsck(tmp_path)


def test_firstrun_keeps_the_wifi_country_after_its_own_cleanup(tmp_path):
    """firstrun.sh ends with `sed -i 's| systemd.run.*||g'` on cmdline.txt (Imager's
    script, and ours): run the real sed on what we wrote, the domain must survive."""
    card = cards.build_card(tmp_path, generation="octopi-1.0.0", fat=16)
    provision_card(card.path, settings(tmp_path), scheme="firstrun")
    written = card.mtype("cmdline.txt")
    after = subprocess.run(
        ["sed", "s| systemd.run.*||g"], input=written, capture_output=True, check=True
    ).stdout.decode()
    assert "systemd.run" not in after
    assert "cfg80211.ieee80211_regdom=GB" in after
    assert "root=PARTUUID=1234abcd-02" in after and after.count("\n") == 1


def test_scheme_from_config_and_explicit_override(tmp_path):
    card = cards.build_card(tmp_path, generation="raspios-bookworm", fat=32, start_mib=8)
    s = settings(tmp_path, extra="  scheme: firstrun")
    assert provision_card(card.path, s, dry_run=True).scheme == "firstrun"
    r = provision_card(card.path, s, scheme="cloud-init", dry_run=True)
    assert r.scheme == "cloud-init" and r.reason == "given on the command line"


def test_octopi_password_only_for_pi(tmp_path):
    card = cards.build_card(tmp_path, generation="octopi-1.0.0", fat=32)
    s = settings(tmp_path).override(user="octo")
    result = provision_card(card.path, s)
    assert "octopi-password.txt" not in card.names()
    assert card.mtype("userconf.txt").startswith(b"octo:$6$")
    assert any("services run as pi" in w for w in result.warnings)


@pytest.mark.parametrize("generation", ["octopi-1.0.0", "octopi-1.1.0"])
def test_no_hostname_file_when_the_root_already_has_the_hostname(tmp_path, generation):
    """A starting-state snapshot got its hostname written into its root file system; OctoPi's
    change_hostname reboots whenever octopi-hostname.txt exists (even with the same name,
    guysoft/OctoPi src/modules/octopi/filesystem/root/etc/init.d/change_hostname): a Pi 3
    boot for nothing. The other files are written as always."""
    card = cards.build_card(tmp_path, generation=generation, fat=32)
    s = settings(tmp_path)
    said: list[str] = []
    provision_card(card.path, s, hostname_on_root=True, log=said.append)
    assert "octopi-hostname.txt" not in card.names()
    assert "ssh" in card.names() and "userconf.txt" in card.names()
    assert any("octopi-hostname.txt" in line for line in said), said
    # and without it the file is there, as for a card from the pristine image
    provision_card(card.path, s)
    assert card.mtype("octopi-hostname.txt") == b"octo-test\n"


def test_hostname_defaults_to_the_device_name(tmp_path):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("wifi: {ssid: IEEE, psk: password, country: GB}\n")
    s = ProvisionSettings.from_config(load_config(cfg), "pi3-b")
    assert s.hostname == "pi3-b"
    assert ProvisionSettings.from_config(load_config(cfg), "pi3-b", "other").hostname == "other"


def test_psk_given_as_hex_key(tmp_path):
    card = cards.build_card(tmp_path, generation="raspios-bullseye", fat=16)
    key = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    s = settings(tmp_path, extra="").override(psk=type(settings(tmp_path).psk)(key.upper()))
    provision_card(card.path, s)
    assert card.mtype("wpa_supplicant.conf") == cards.expected(
        "wpa-supplicant", "wpa_supplicant.conf"
    )


def test_catalog_names_only_known_schemes():
    from rig.card.catalog import load_catalog
    from rig.card.provision import SCHEMES

    catalog = load_catalog()
    assert catalog.images
    for image in catalog.images.values():
        assert image.scheme in SCHEMES, image.name
    assert set(SCHEMES) == {
        "octopi-legacy",
        "wpa-supplicant",
        "firstrun",
        "nmconnection",
        "custom-toml",
        "cloud-init",
    }


def test_a_user_filled_template_keeps_its_network_with_a_warning(tmp_path):
    template = cards.boot_file("octopi-1.0.0", "octopi-wpa-supplicant.txt").replace(
        b'#network={\n#  ssid="put SSID here"\n#  psk="put password here"\n#}',
        b'network={\n  ssid="Home"\n  psk="home-passphrase"\n}',
        1,
    )
    assert b'ssid="Home"' in template
    card = cards.build_card(
        tmp_path, {"octopi-wpa-supplicant.txt": template}, generation="octopi-1.0.0", fat=16
    )
    result = provision_card(card.path, settings(tmp_path))
    text = card.mtype("octopi-wpa-supplicant.txt").decode()
    assert 'ssid="Home"' in text and 'ssid="IEEE"' in text
    assert any("active network block" in w for w in result.warnings)
    again = provision_card(card.path, settings(tmp_path))
    assert again.changed == []
