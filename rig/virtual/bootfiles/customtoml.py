"""custom.toml: Raspberry Pi OS Bookworm's declarative first-boot settings."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from rig.virtual.bootfiles import BootFileError


@dataclass
class CustomConfig:
    hostname: str | None = None
    user: str | None = None
    password: str | None = None
    password_encrypted: bool = False
    ssh_enabled: bool | None = None
    ssh_password_auth: bool | None = None
    ssh_keys: list[str] = field(default_factory=list)
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    wifi_hidden: bool = False
    wifi_country: str | None = None
    keymap: str | None = None
    timezone: str | None = None


def _typed(section: dict, key: str, typ: type, where: str):  # type: ignore[no-untyped-def]
    if key not in section:
        return None
    value = section[key]
    if not isinstance(value, typ):
        raise BootFileError(f"custom.toml: {where}.{key} must be {typ.__name__}")
    return value


def parse_custom_toml(text: str) -> CustomConfig:
    """Parse and check custom.toml; BootFileError for what init_config rejects."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BootFileError(f"custom.toml: {e}") from None
    if data.get("config_version") != 1:
        raise BootFileError("custom.toml: config_version = 1 is required")
    cfg = CustomConfig()
    system = data.get("system", {})
    cfg.hostname = _typed(system, "hostname", str, "system")
    user = data.get("user", {})
    cfg.user = _typed(user, "name", str, "user")
    cfg.password = _typed(user, "password", str, "user")
    cfg.password_encrypted = bool(_typed(user, "password_encrypted", bool, "user"))
    ssh = data.get("ssh", {})
    cfg.ssh_enabled = _typed(ssh, "enabled", bool, "ssh")
    cfg.ssh_password_auth = _typed(ssh, "password_authentication", bool, "ssh")
    keys = _typed(ssh, "authorized_keys", list, "ssh") or []
    cfg.ssh_keys = [str(k) for k in keys]
    wlan = data.get("wlan", {})
    cfg.wifi_ssid = _typed(wlan, "ssid", str, "wlan")
    cfg.wifi_psk = _typed(wlan, "password", str, "wlan")
    encrypted = _typed(wlan, "password_encrypted", bool, "wlan")
    if cfg.wifi_psk is not None and encrypted and len(cfg.wifi_psk) != 64:
        raise BootFileError("custom.toml: wlan.password_encrypted needs the 64-hex key")
    cfg.wifi_hidden = bool(_typed(wlan, "hidden", bool, "wlan"))
    cfg.wifi_country = _typed(wlan, "country", str, "wlan")
    locale = data.get("locale", {})
    cfg.keymap = _typed(locale, "keymap", str, "locale")
    cfg.timezone = _typed(locale, "timezone", str, "locale")
    return cfg
