"""What a card is provisioned with, checked before the card is touched.

Every field remembers where it came from (``wifi.ssid`` in rig.yaml, ``--ssid``
on the command line) so a bad value is reported at its source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rig.config import Secret
from rig.errors import ConfigError

if TYPE_CHECKING:
    from rig.config import RigConfig

USER_RE = re.compile(r"[a-z][a-z0-9-]*")  # what userconf-pi accepts (always fullmatch)
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # one RFC 1123 label
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
HEX64_RE = re.compile(r"^[0-9A-Fa-f]{64}$")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in text)


@dataclass(frozen=True)
class ProvisionSettings:
    """Wi-Fi, first user, hostname and extras for one card."""

    hostname: str
    ssid: str
    psk: Secret  # WPA passphrase (8-63 printable ASCII) or the 64-hex PBKDF2 key
    country: str
    user: str
    password: Secret
    ssh_keys: tuple[str, ...] = ()
    hidden: bool = False
    config_txt: tuple[str, ...] = ()
    scheme: str | None = None  # provision.scheme from the config; None: detect
    origin: dict[str, str] = field(default_factory=dict)  # field -> where it was set

    @classmethod
    def from_config(
        cls, config: RigConfig, device: str | None, hostname: str | None = None
    ) -> ProvisionSettings:
        """Settings for `device` from rig.yaml; the hostname defaults to the device name."""
        prov: dict[str, Any] = dict(config.provision or {})
        src = config.where
        origin = {
            "ssid": f"{src}: wifi.ssid",
            "psk": f"{src}: wifi.psk",
            "country": f"{src}: wifi.country",
            "user": f"{src}: user.name",
            "password": f"{src}: user.password",
            "ssh_keys": f"{src}: user.ssh_keys",
            "config_txt": f"{src}: provision.config_txt",
            "scheme": f"{src}: provision.scheme",
            "hostname": f"{src}: provision.hostname",
        }
        if hostname:
            origin["hostname"] = "--hostname"
        elif prov.get("hostname"):
            hostname = str(prov["hostname"]).replace("{device}", device or "")
        else:
            hostname = device or "raspberrypi"
            origin["hostname"] = "device name" if device else "default hostname"
        return cls(
            hostname=hostname,
            ssid=config.wifi.ssid,
            psk=config.wifi.psk,
            country=config.wifi.country,
            user=config.user.name,
            password=config.user.password,
            ssh_keys=tuple(config.user.ssh_keys),
            hidden=config.wifi.hidden,
            config_txt=tuple(str(line) for line in prov.get("config_txt", ()) or ()),
            scheme=prov.get("scheme"),
            origin=origin,
        )

    def override(self, **changes: Any) -> ProvisionSettings:
        """Command-line overrides; None values are ignored."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        origin = dict(self.origin)
        for key in given:
            origin[key] = f"--{key.replace('_', '-')}"
        if "country" in given:
            given["country"] = str(given["country"]).upper()
        return replace(self, **given, origin=origin)

    def where(self, key: str) -> str:
        return self.origin.get(key, key)

    # --- derived values ------------------------------------------------------

    @property
    def psk_is_key(self) -> bool:
        return bool(HEX64_RE.fullmatch(self.psk.reveal()))

    def validate(self) -> None:
        """ConfigError naming the first bad field; nothing is written before this passes."""

        def bad(key: str, message: str, hint: str = "") -> ConfigError:
            return ConfigError(message, where=self.where(key), hint=hint)

        ssid = self.ssid
        size = len(ssid.encode("utf-8"))
        if not 1 <= size <= 32:
            raise bad("ssid", f"an SSID is 1 to 32 bytes; this one is {size} (UTF-8)")
        if _has_control(ssid):
            raise bad(
                "ssid",
                "the SSID contains control characters (newline, tab, ...), which the "
                "first-boot tools cannot carry safely",
            )
        psk = self.psk.reveal()
        if not HEX64_RE.fullmatch(psk):
            if not 8 <= len(psk) <= 63:
                raise bad(
                    "psk",
                    f"a WPA passphrase is 8 to 63 characters (got {len(psk)}), or give the "
                    "64-hex-digit key",
                )
            if any(not 0x20 <= ord(c) <= 0x7E for c in psk):
                raise bad("psk", "a WPA passphrase is printable ASCII only (no tabs, no umlauts)")
        if not COUNTRY_RE.fullmatch(self.country):
            raise bad(
                "country",
                f"{self.country!r} is not a two-letter country code",
                "e.g. DE, GB, US: Wi-Fi stays blocked until a country is set",
            )
        if not USER_RE.fullmatch(self.user) or len(self.user) > 32:
            raise bad(
                "user",
                f"{self.user!r} is not a valid user name: a lower-case letter, then "
                "lower-case letters, digits or '-', at most 32",
            )
        if self.user == "root":
            raise bad("user", "the first user cannot be root")
        password = self.password.reveal()
        if not password:
            raise bad("password", "the user's password is empty")
        if _has_control(password):
            raise bad("password", "the user's password contains control characters")
        if not HOSTNAME_RE.fullmatch(self.hostname):
            raise bad(
                "hostname",
                f"{self.hostname!r} is not a valid hostname: letters, digits and '-', "
                "1 to 63 characters, not starting or ending with '-'",
            )
        for i, key in enumerate(self.ssh_keys):
            if _has_control(key.strip()) or not key.strip():
                raise bad("ssh_keys", f"ssh key {i + 1} is empty or spans several lines")
        for i, line in enumerate(self.config_txt):
            if _has_control(line) or not line.strip() or ("=" not in line and "[" not in line):
                raise bad(
                    "config_txt",
                    f"entry {i + 1} ({line!r}) is not one config.txt line such as enable_uart=1",
                )
