"""rig.yaml: lookup order, the virtual default, located errors, secrets kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rig.config import Secret, find_config, load_config
from rig.errors import ConfigError, ValidationErrors

GOOD = """
devices:
  pi3-a:
    model: pi3
    power: {driver: usb-hub, location: "1-1.3", port: 1}
    mux: {driver: usb-sd-mux, serial: "000000000042"}
    host: octopi-a.local
  pi3-b:
    power: {driver: ykush, serial: YK21234, port: 2}
    mux: {driver: sdwire, serial: sd-wire_11}
  pi3-c:
    power: {driver: command, on: "relay on 3", off: "relay off 3", timeout: 5}
    mux: {driver: usb-sd-mux, serial: "000000000043"}
wifi: {ssid: Lab, psk: {secret: wifi_psk}, country: DE}
user: {name: pi, password: {secret: pi_password}}
secrets: secrets.yaml
paths: {images: cache, state: state, reports: out}
"""


def _write(
    tmp_path: Path, text: str, secrets: str | None = "wifi_psk: s3cret-psk\npi_password: hunter22\n"
):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(text)
    if secrets is not None:
        s = tmp_path / "secrets.yaml"
        s.write_text(secrets)
        s.chmod(0o600)
    return cfg


def test_no_file_anywhere_is_the_virtual_rig(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config() is None
    config = load_config()
    assert config.virtual and config.source is None
    assert sorted(config.devices) == ["pi3-a", "pi3-b", "pi3-c"]
    hosts = {d.host for d in config.devices.values()}
    assert len(hosts) == 3


def test_lookup_order(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    user_cfg = Path(os.environ["XDG_CONFIG_HOME"]) / "rig" / "rig.yaml"
    user_cfg.parent.mkdir(parents=True)
    user_cfg.write_text("{}")
    assert find_config() == user_cfg
    (tmp_path / "rig.yaml").write_text("{}")
    assert find_config() == Path("rig.yaml")
    env_cfg = tmp_path / "env.yaml"
    env_cfg.write_text("{}")
    monkeypatch.setenv("RIG_CONFIG", str(env_cfg))
    assert find_config() == env_cfg
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("{}")
    assert find_config(explicit) == explicit
    with pytest.raises(ConfigError, match="--config"):
        find_config(tmp_path / "missing.yaml")


def test_good_config_loads_with_secrets(tmp_path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert not config.virtual
    a = config.device("pi3-a")
    assert (a.power.driver, a.power.location, a.power.port) == ("usb-hub", "1-1.3", 1)
    assert config.device("pi3-b").mux.serial == "sd-wire_11"
    assert config.device("pi3-c").power.timeout == 5
    assert config.wifi.psk.reveal() == "s3cret-psk"
    assert config.paths.images == tmp_path / "cache"
    # secrets never show themselves
    assert "s3cret" not in repr(config) and "hunter22" not in repr(config)
    assert "hunter22" not in str(config.user.password)


def test_secret_from_environment_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RIG_SECRET_WIFI_PSK", "from-env-psk")
    config = load_config(_write(tmp_path, GOOD))
    assert config.wifi.psk == Secret("from-env-psk")


def test_world_readable_secrets_refused(tmp_path) -> None:
    cfg = _write(tmp_path, GOOD)
    (tmp_path / "secrets.yaml").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(cfg)


def test_missing_secret_is_named(tmp_path) -> None:
    cfg = _write(tmp_path, GOOD, secrets="wifi_psk: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "pi_password" in str(info.value) and "user.password" in str(info.value)


def test_unknown_device_is_named(tmp_path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="pi3-a, pi3-b, pi3-c"):
        config.device("pi3-z")


BAD = [
    (
        "port-range",
        GOOD.replace("port: 1}", "port: 0}"),
        "devices.pi3-a.power.port",
        "must be 1..15",
    ),
    ("ykush-port", GOOD.replace("port: 2}", "port: 7}"), "devices.pi3-b.power.port", "1..4"),
    (
        "unknown-driver",
        GOOD.replace("driver: sdwire", "driver: sdmux3000"),
        "devices.pi3-b.mux.driver",
        "sdmux3000",
    ),
    (
        "missing-location",
        GOOD.replace('location: "1-1.3", ', ""),
        "devices.pi3-a.power",
        "location",
    ),
    ("bad-location", GOOD.replace('"1-1.3"', '"usb3"'), "devices.pi3-a.power.location", "bus-port"),
    ("typo-key", GOOD.replace("host: octopi", "hots: octopi"), "devices.pi3-a", "hots"),
    ("command-without-off", GOOD.replace(', off: "relay off 3"', ""), "devices.pi3-c.power", "off"),
    ("country", GOOD.replace("country: DE", "country: Germany"), "wifi.country", "two-letter"),
    ("user-name", GOOD.replace("name: pi,", "name: Pi User,"), "user.name", "lower case"),
    ("top-typo", GOOD + "\nwfi: {}\n", "(top)", "wfi"),
    ("device-name", GOOD.replace("  pi3-a:", "  'Pi 3 A':"), "devices", "Pi 3 A"),
    (
        "shared-port",
        GOOD.replace(
            "YK21234, port: 2",
            "YK21234, port: 2}\n    mux: {driver: sdwire, serial: x}\n"
            "  pi3-d:\n    power: {driver: ykush, serial: YK21234, port: 2",
        ),
        "devices.pi3-d.power",
        "same port",
    ),
    (
        "shared-mux",
        GOOD.replace('"000000000043"', '"000000000042"'),
        "devices.pi3-c.mux",
        "same mux",
    ),
]


@pytest.mark.parametrize(("name", "text", "where", "word"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_located(tmp_path, name, text, where, word) -> None:
    cfg = _write(tmp_path, text)
    with pytest.raises(ValidationErrors) as info:
        load_config(cfg)
    message = str(info.value)
    assert str(cfg) in message
    assert any(p == where and word.lower() in m.lower() for p, m in info.value.problems) or (
        where in message and word.lower() in message.lower()
    ), message


def test_yaml_syntax_error_has_line_and_column(tmp_path) -> None:
    cfg = _write(tmp_path, "devices:\n  pi3-a: {power: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert f"{cfg}:3:" in str(info.value)


def test_config_error_exits_2(tmp_path, capsys) -> None:
    from rig.cli import main

    cfg = _write(tmp_path, GOOD.replace("port: 1}", "port: 99}"))
    rc = main(
        [
            "--config",
            str(cfg),
            "matrix",
            "show",
            str(Path(__file__).parents[2] / "matrix/demo.json"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "devices.pi3-a.power.port" in err and "s3cret" not in err


def test_secrets_come_from_systemd_credentials(tmp_path, monkeypatch) -> None:
    """The flash host's unit loads /etc/rig/credentials as `LoadCredential=rig:DIR`, so
    systemd presents each file as rig_<name>; a single `LoadCredential=NAME:FILE` as NAME.
    Wi-Fi and user secrets must be found there like the daemon's."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "rig_wifi_psk").write_text("psk-from-credential\n")  # written with echo
    (creds / "pi_password").write_text("pw-from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    for name in ("WIFI_PSK", "PI_PASSWORD"):
        monkeypatch.delenv(f"RIG_SECRET_{name}", raising=False)
    cfg = _write(tmp_path, GOOD.replace("secrets: secrets.yaml\n", ""), secrets=None)
    config = load_config(cfg)
    assert config.wifi.psk.reveal() == "psk-from-credential"
    assert config.user.password.reveal() == "pw-from-credential"

    from rig.daemon.settings import find_secret

    (creds / "rig_webhook_secret").write_text("hook-secret-of-16-chars")
    assert find_secret(config, "webhook_secret").reveal() == "hook-secret-of-16-chars"


def test_a_missing_secret_names_every_place_it_may_come_from(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = _write(tmp_path, GOOD.replace("secrets: secrets.yaml\n", ""), secrets=None)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "wifi.psk" in info.value.where
    assert "RIG_SECRET_WIFI_PSK" in info.value.hint and "credential" in info.value.hint
