"""Hostile SSIDs and passphrases: every scheme must write them so that the format's own
reader (wpa_supplicant syntax, GKeyFile, TOML, YAML, bash) gets back exactly the
value, and nothing else. Readers here are independent of the writer: tomllib,
PyYAML, configparser, and bash itself running the lines of firstrun.sh."""

from __future__ import annotations

import configparser
import hashlib
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import provision_cards as cards  # loaded by conftest.py
import pytest
import yaml

from rig.card.provision import ProvisionSettings, provision_card
from rig.config import Secret
from rig.errors import ConfigError

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)

SSIDS = [
    'my "net"',
    "back\\slash\\",
    "$(reboot)",
    "`id`;rm -rf /",
    "it's mine",
    "Ünïcödé ☕ net",
    "semi;colon;",
    " lead and trail ",
    "#not-a-comment",
    "a'b\"c$d`e\\f",
    "🍕" * 8,  # 32 bytes of UTF-8
    "[wifi-security]",
    "x" * 32,
    'psk="x"',
]
PSKS = [
    'pa"ss\\wo$rd`x`',
    "it's a pass",
    " spaced out ",
    "#!$%&'()*+,-./:;<=>?@[\\]^_`{|}~ 0",
    "$(reboot)$(reboot)",
]
GENERATION = {
    "octopi-legacy": "octopi-1.0.0",
    "wpa-supplicant": "raspios-bullseye",
    "firstrun": "octopi-1.0.0",
    "nmconnection": "octopi-1.1.0",
    "custom-toml": "raspios-bookworm",
    "cloud-init": "raspios-trixie",
}
KEYFILE_UNSAFE = re.compile(r"[\\;]|^\s|\s$")


def make_settings(ssid: str, psk: str, password: str = "pw'\"$`\\x") -> ProvisionSettings:
    return ProvisionSettings(
        hostname="octo-test",
        ssid=ssid,
        psk=Secret(psk),
        country="DE",
        user="pi",
        password=Secret(password),
    )


def pbkdf2(ssid: str, psk: str) -> str:
    return hashlib.pbkdf2_hmac("sha1", psk.encode(), ssid.encode(), 4096, 32).hex()


def wpa_networks(text: str) -> list[dict[str, str]]:
    """Active network blocks of a wpa_supplicant file; every other line must be
    a comment, blank, or a plain key=value."""
    nets, cur = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "network={":
            assert cur is None
            cur = {}
        elif line == "}":
            nets.append(cur)
            cur = None
        else:
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[a-z_]+", key), f"stray line {raw!r}"
            if cur is not None:
                assert key not in cur, f"duplicate {key}"
                cur[key] = value
    assert cur is None
    return nets


def wpa_ssid_value(value: str) -> str:
    if value.startswith('"'):
        assert value.endswith('"') and '"' not in value[1:-1]
        return value[1:-1]
    return bytes.fromhex(value).decode()


def keyfile(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), strict=True)
    cp.optionxform = str
    cp.read_string(text)
    return cp


def keyfile_ssid_value(value: str) -> str:
    if value.endswith(";"):
        return bytes(int(b) for b in value.rstrip(";").split(";")).decode()
    return value


def bash(script: str, tmp_path: Path) -> str:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout


def firstrun_wifi(script: str, tmp_path: Path) -> tuple[str, str]:
    """Run the Wi-Fi lines of firstrun.sh in bash with a stub for imager_custom, or
    with the here-documents redirected into tmp_path; return (ssid, psk) it set."""
    stub = tmp_path / "imager_custom"
    stub.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    stub.chmod(0o755)
    set_wlan = [ln for ln in script.splitlines() if "set_wlan" in ln]
    if set_wlan:
        out = bash(f"SYSMODS={stub}\n{set_wlan[0]}", tmp_path)
        args = out.split("\0")[:-1]
        assert args[0] == "set_wlan" and args[-1] == "DE"
        return args[-3], args[-2]
    # no imager_custom route: run the NetworkManager here-document into a file
    m = re.search(r"^cat >(\S+nmconnection) <<'(\w+)'\n.*?^\2$", script, re.M | re.S)
    assert m, "no keyfile here-document"
    target = tmp_path / "conn.nmconnection"
    bash(m.group(0).replace(m.group(1), str(target), 1), tmp_path)
    cp = keyfile(target.read_text())
    m2 = re.search(r"^cat >(\S+wpa_supplicant.conf) <<'(\w+)'\n.*?^\2$", script, re.M | re.S)
    wpa = tmp_path / "wpa.conf"
    bash(m2.group(0).replace(m2.group(1), str(wpa), 1), tmp_path)
    (net,) = wpa_networks(wpa.read_text())
    ssid = keyfile_ssid_value(cp["wifi"]["ssid"])
    assert wpa_ssid_value(net["ssid"]) == ssid and net["psk"] == cp["wifi-security"]["psk"]
    return ssid, cp["wifi-security"]["psk"]


def read_back(scheme: str, card, tmp_path: Path) -> tuple[str, str]:
    """(ssid, psk) as each format's reader sees them."""
    if scheme in ("octopi-legacy", "wpa-supplicant"):
        name = "octopi-wpa-supplicant.txt" if scheme == "octopi-legacy" else "wpa_supplicant.conf"
        (net,) = wpa_networks(card.mtype(name).decode())
        return wpa_ssid_value(net["ssid"]), net["psk"]
    if scheme == "nmconnection":
        cp = keyfile(card.mtype("wifi.nmconnection").decode())
        assert cp.sections() == ["connection", "wifi", "wifi-security", "ipv4", "ipv6"]
        return keyfile_ssid_value(cp["wifi"]["ssid"]), cp["wifi-security"]["psk"]
    if scheme == "custom-toml":
        doc = tomllib.loads(card.mtype("custom.toml").decode())
        assert set(doc) == {"config_version", "system", "user", "ssh", "wlan"}
        return doc["wlan"]["ssid"], doc["wlan"]["password"]
    if scheme == "cloud-init":
        net = yaml.safe_load(card.mtype("network-config"))
        aps = net["network"]["wifis"]["wlan0"]["access-points"]
        assert len(aps) == 1
        ((ssid, ap),) = aps.items()
        user = yaml.safe_load(card.mtype("user-data"))
        assert set(user) == {"hostname", "manage_etc_hosts", "ssh_pwauth", "user", "runcmd"}
        return ssid, ap["password"]
    if scheme == "firstrun":
        script = card.mtype("firstrun.sh").decode()
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
        assigned = bash(
            "\n".join(ln for ln in script.splitlines() if re.match(r"[A-Z_]+='", ln))
            + '\nprintf "%s\\0" "$NEW_HOSTNAME" "$FIRST_USER" "$WIFI_COUNTRY"',
            tmp_path,
        )
        assert assigned.split("\0")[:-1] == ["octo-test", "pi", "DE"]
        return firstrun_wifi(script, tmp_path)
    raise AssertionError(scheme)


@pytest.fixture(scope="module")
def base_cards(tmp_path_factory):
    """One pristine card per scheme; tests copy it (mkfs once, not 70 times)."""
    out = {}
    for scheme, gen in GENERATION.items():
        d = tmp_path_factory.mktemp(scheme)
        out[scheme] = cards.build_card(d, generation=gen, fat=16, size_mib=8)
    return out


def fresh(base, tmp_path):
    path = tmp_path / "card.img"
    shutil.copyfile(base.path, path)
    return cards.Card(path, base.start, base.size)


@pytest.mark.parametrize("scheme", list(GENERATION))
@pytest.mark.parametrize("ssid", SSIDS, ids=range(len(SSIDS)))
def test_hostile_ssid(scheme, ssid, base_cards, tmp_path):
    card = fresh(base_cards[scheme], tmp_path)
    psk = PSKS[len(ssid) % len(PSKS)]
    s = make_settings(ssid, psk)
    if scheme == "custom-toml" and KEYFILE_UNSAFE.search(ssid):
        before = card.sha256()
        with pytest.raises(ConfigError, match=r"custom\.toml") as e:
            provision_card(card.path, s, scheme=scheme)
        assert "firstrun" in e.value.hint
        assert card.sha256() == before
        return
    provision_card(card.path, s, scheme=scheme)
    got_ssid, got_psk = read_back(scheme, card, tmp_path)
    assert got_ssid == ssid
    assert got_psk in (psk, pbkdf2(ssid, psk))
    card.fsck(tmp_path)


@pytest.mark.parametrize("psk", PSKS, ids=range(len(PSKS)))
def test_hostile_passphrase_in_clear_formats(psk, base_cards, tmp_path):
    """cloud-init carries the passphrase itself (netplan); octopi-password.txt the
    user's password: both must come back byte for byte."""
    card = fresh(base_cards["cloud-init"], tmp_path)
    provision_card(card.path, make_settings("net", psk), scheme="cloud-init")
    assert read_back("cloud-init", card, tmp_path) == ("net", psk)
    card = fresh(base_cards["octopi-legacy"], tmp_path)
    provision_card(card.path, make_settings("net", "password", password=psk))
    assert card.mtype("octopi-password.txt") == (psk + "\n").encode()
    user_line = card.mtype("userconf.txt").decode()
    assert re.fullmatch(r"pi:\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{86}\n", user_line)


def test_hostile_ssh_key_and_hidden_network(base_cards, tmp_path):
    card = fresh(base_cards["cloud-init"], tmp_path)
    key = 'ssh-ed25519 AAAA"quoted" $(whoami) it\'s'
    s = make_settings("net", "password1")
    s = ProvisionSettings(**{**s.__dict__, "ssh_keys": (key,), "hidden": True})
    provision_card(card.path, s, scheme="cloud-init")
    user = yaml.safe_load(card.mtype("user-data"))
    assert user["user"]["ssh_authorized_keys"] == [key]
    net = yaml.safe_load(card.mtype("network-config"))
    assert net["network"]["wifis"]["wlan0"]["access-points"]["net"]["hidden"] is True
    card = fresh(base_cards["custom-toml"], tmp_path)
    provision_card(card.path, s, scheme="custom-toml")
    doc = tomllib.loads(card.mtype("custom.toml").decode())
    assert doc["ssh"]["authorized_keys"] == [key] and doc["wlan"]["hidden"] is True
