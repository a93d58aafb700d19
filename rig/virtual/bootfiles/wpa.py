"""wpa_supplicant.conf (and OctoPi's octopi-wpa-supplicant.txt): country= and network blocks."""

from __future__ import annotations

from dataclasses import dataclass

from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles.wifi import WifiNetwork


@dataclass(frozen=True)
class WpaConfig:
    country: str | None
    networks: list[WifiNetwork]


def _value(raw: str, where: str) -> str:
    """A quoted string, or an unquoted value (for ssid: hex-encoded bytes)."""
    raw = raw.strip()
    if raw.startswith('"'):
        end = raw.find('"', 1)
        if end < 0:
            raise BootFileError(f"{where}: unterminated quote")
        return raw[1:end]
    return raw.split("#", 1)[0].strip()


def parse_wpa_supplicant(text: str, source: str = "wpa_supplicant.conf") -> WpaConfig:
    """Parse like wpa_supplicant: '#' lines are comments, network={ ... } blocks."""
    country = None
    networks: list[WifiNetwork] = []
    block: dict[str, str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{n}"
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if block is None:
            if s.replace(" ", "") == "network={":
                block = {}
                continue
            key, sep, val = s.partition("=")
            if not sep:
                raise BootFileError(f"{where}: invalid line {s!r}")
            if key.strip() == "country":
                country = _value(val, where)
            continue
        if s == "}":
            networks.append(_network(block, source))
            block = None
            continue
        key, sep, val = s.partition("=")
        if not sep:
            raise BootFileError(f"{where}: invalid line in network block {s!r}")
        key = key.strip()
        if key == "ssid" and not val.strip().startswith('"'):
            try:
                block[key] = bytes.fromhex(_value(val, where)).decode()
            except ValueError:
                raise BootFileError(f"{where}: invalid hex SSID") from None
        elif key == "psk" and val.strip().startswith('"'):
            block[key] = _value(val, where)
        else:
            block[key] = _value(val, where)
    if block is not None:
        raise BootFileError(f"{source}: network block not closed")
    return WpaConfig(country, networks)


def _network(block: dict[str, str], source: str) -> WifiNetwork:
    if "ssid" not in block:
        raise BootFileError(f"{source}: network block without ssid")
    open_net = block.get("key_mgmt", "WPA-PSK").upper() == "NONE"
    return WifiNetwork(
        ssid=block["ssid"],
        psk=None if open_net else block.get("psk"),
        source=source,
        disabled=block.get("disabled") == "1",
    )
