"""The boot-file interpreters on their own: hand-written inputs, no card needed."""

from __future__ import annotations

import pytest

from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles.cloudinit import parse_cloud_init
from rig.virtual.bootfiles.cmdline import add_param, params, strip_systemd_run
from rig.virtual.bootfiles.customtoml import parse_custom_toml
from rig.virtual.bootfiles.nmconnection import parse_nmconnection
from rig.virtual.bootfiles.userconf import check_password, parse_userconf
from rig.virtual.bootfiles.wifi import AccessPoint, WifiNetwork, network_matches
from rig.virtual.bootfiles.wpa import parse_wpa_supplicant

AP = AccessPoint("rig-test-net", "correct horse 42", "DE")
HEXKEY = "01a89ea46658f5dfcd99cf0763c45979ab27bb1ed2df5fab1a73a67ab5383b78"  # openssl kdf
# `openssl passwd -5 -salt fixturesalt secret` and `openssl passwd -1 -salt fixture secret`
SHA256 = "$5$fixturesalt$yQ9wI.JJHWDU4H4JdHHQk6QqyKfhqdp60cw72YP8Ab4"
MD5 = "$1$fixture$54oOozwK4IYJYhbde0cvJ0"


def test_wpa_blocks_comments_and_options() -> None:
    conf = parse_wpa_supplicant(
        'country=GB\n#network={\n#ssid="x"\n#}\n'
        'network={\n ssid="open"\n key_mgmt=NONE\n}\n'
        'network={\n ssid="off"\n psk="12345678"\n disabled=1\n}\n'
        'network = {\n\tssid="rig-test-net" # trailing comment\n\tpsk="correct horse 42"\n}\n'
    )
    assert conf.country == "GB"
    assert [n.ssid for n in conf.networks] == ["open", "off", "rig-test-net"]
    assert conf.networks[0].psk is None
    assert not network_matches(conf.networks[0], AccessPoint("open", "x" * 8, "GB"))[0]
    assert "disabled" in network_matches(conf.networks[1], AccessPoint("off", "12345678", "GB"))[1]
    assert network_matches(conf.networks[2], AP)[0]


def test_psk_length_rules() -> None:
    assert not network_matches(WifiNetwork("rig-test-net", "short", "t"), AP)[0]
    assert not network_matches(WifiNetwork("rig-test-net", "x" * 64, "t"), AP)[0]


@pytest.mark.parametrize(
    "text", ['network={\nssid="a"\n', "network={\npsk\n}\n", "garbage line\n", "network={\n}\n"]
)
def test_wpa_rejects(text: str) -> None:
    with pytest.raises(BootFileError):
        parse_wpa_supplicant(text)


def test_nmconnection_variants() -> None:
    assert parse_nmconnection("# [connection]\n# type=wifi\n") is None
    assert parse_nmconnection("[connection]\ntype=ethernet\n") is None
    off = "[connection]\ntype=wifi\nautoconnect=false\n[wifi]\nssid=a\n"
    assert parse_nmconnection(off) is None
    net = parse_nmconnection(
        "[connection]\ntype=802-11-wireless\n[802-11-wireless]\nssid=\\sspace\n"
        "[802-11-wireless-security]\nkey-mgmt=wpa-psk\npsk=a\\\\b\\tc\n"
    )
    assert net is not None and net.ssid == " space" and net.psk == "a\\b\tc"
    with pytest.raises(BootFileError, match="key-mgmt"):
        parse_nmconnection(
            "[connection]\ntype=wifi\n[wifi]\nssid=a\n[wifi-security]\nkey-mgmt=sae\n"
        )
    with pytest.raises(BootFileError):
        parse_nmconnection("[connection]\ntype=wifi\n[connection]\n")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (f"bob:{SHA256}\n", True),
        (f"b0b-2:{MD5}", True),
        (f"root:{SHA256}", False),
        (f"Bob:{SHA256}", False),
        (f"9bob:{SHA256}", False),
        (f"bob_x:{SHA256}", False),
        ("bob:plaintext", True),
        (f"bob:{SHA256}\nalice:{SHA256}\n", False),
        (f"{'a' * 33}:{SHA256}", False),
        ("", False),
    ],
)
def test_userconf_rules(text: str, ok: bool) -> None:
    if ok:
        _name, hash_ = parse_userconf(text)
        usable = hash_.startswith("$")  # plain text is stored as-is and matches nothing
        assert check_password(hash_, "secret") is usable
        assert not check_password(hash_, "Secret")
        assert not check_password(hash_, hash_)
    else:
        with pytest.raises(BootFileError):
            parse_userconf(text)


def test_check_password_rejects_garbage() -> None:
    assert not check_password("!", "")
    assert not check_password("*", "secret")
    assert not check_password("$6$broken", "secret")


def test_custom_toml() -> None:
    cfg = parse_custom_toml(
        'config_version = 1\n[user]\nname = "u"\npassword = "pw"\npassword_encrypted = false\n'
        '[wlan]\nssid = "s"\npassword = "p"\ncountry = "DE"\n'
    )
    assert cfg.user == "u" and cfg.password == "pw" and not cfg.password_encrypted
    assert (cfg.wifi_ssid, cfg.wifi_psk, cfg.wifi_country) == ("s", "p", "DE")
    for bad in (
        'config_version = 1\n[ssh]\nenabled = "yes"\n',
        '[system]\nhostname = "x"\n',
        'config_version = 1\n[wlan]\nssid = "s"\npassword = "p"\npassword_encrypted = true\n',
        "config_version = 1\n[system\n",
    ):
        with pytest.raises(BootFileError):
            parse_custom_toml(bad)


def test_cloud_init_forms() -> None:
    cfg = parse_cloud_init(
        "instance-id: i-1\n",
        "#cloud-config\nusers:\n  - default\n  - name: e\n    plain_text_passwd: pw\n"
        "    lock_passwd: false\nruncmd:\n  - systemctl enable ssh\n",
        "version: 2\nwifis:\n  wlan0:\n    access-points:\n      open-net: {}\n",
    )
    assert cfg.instance_id == "i-1" and cfg.ssh_enabled
    assert cfg.users[0].name == "e" and cfg.users[0].plain_password == "pw"
    assert cfg.wifi == [("open-net", None)] and cfg.wifi_country is None
    with pytest.raises(BootFileError, match="instance-id"):
        parse_cloud_init("local-hostname: x\n", None, None)
    with pytest.raises(BootFileError, match="version 2"):
        parse_cloud_init("instance-id: a\n", None, "network:\n  version: 1\n")


def test_cmdline_edits() -> None:
    line = "console=tty1 root=PARTUUID=0badcafe-02 rootwait\n"
    run = (
        line.rstrip("\n")
        + " systemd.run=/boot/firstrun.sh systemd.unit=x cfg80211.ieee80211_regdom=DE\n"
    )
    assert strip_systemd_run(run) == line
    kept = add_param(run, "cfg80211.ieee80211_regdom", "GB")
    assert strip_systemd_run(kept) == line.rstrip("\n") + " cfg80211.ieee80211_regdom=GB\n"
    assert params("a=1 b\nsecond=line ignored")["a"] == "1"
    assert "second" not in params("a=1 b\nsecond=line ignored")


def test_access_point_given_as_key() -> None:
    hex_ap = AccessPoint("rig-test-net", HEXKEY, "DE")
    assert network_matches(WifiNetwork("rig-test-net", "correct horse 42", "t"), hex_ap)[0]
    assert network_matches(WifiNetwork("rig-test-net", HEXKEY.upper(), "t"), hex_ap)[0]
    assert not network_matches(WifiNetwork("rig-test-net", "correct horse 43", "t"), hex_ap)[0]
