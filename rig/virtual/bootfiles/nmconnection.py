"""NetworkManager keyfiles (OctoPi 1.1's wifi.nmconnection, Imager's preconfigured.nmconnection)."""

from __future__ import annotations

import configparser
import re

from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles.wifi import WifiNetwork

BYTE_LIST = re.compile(r"(\d{1,3};)+(\d{1,3})?")
ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(value: str) -> str:
    """GKeyFile escapes: \\s \\n \\t \\r \\\\."""
    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(0)), value)


def _ssid(raw: str) -> str:
    """A keyfile SSID: plain string, or NetworkManager's byte list ``114;105;103;``."""
    if BYTE_LIST.fullmatch(raw):
        return bytes(int(b) for b in raw.strip(";").split(";")).decode(errors="replace")
    return _unescape(raw)


def parse_nmconnection(text: str, source: str = "wifi.nmconnection") -> WifiNetwork | None:
    """The Wi-Fi network a keyfile defines, or None (all commented out, not Wi-Fi)."""
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=("#", ";"), strict=True)
    cp.optionxform = str  # keys are case-sensitive in keyfiles
    try:
        cp.read_string(text, source)
    except configparser.Error as e:
        raise BootFileError(f"{source}: not a valid keyfile: {e}") from None
    if not cp.has_section("connection"):
        return None
    if cp.get("connection", "type", fallback="") not in ("wifi", "802-11-wireless"):
        return None
    if cp.get("connection", "autoconnect", fallback="true").lower() in ("false", "no", "0"):
        return None
    wifi = "wifi" if cp.has_section("wifi") else "802-11-wireless"
    raw_ssid = cp.get(wifi, "ssid", fallback=None)
    ssid = _ssid(raw_ssid) if raw_ssid else None
    if not ssid:
        raise BootFileError(f"{source}: Wi-Fi connection without ssid")
    sec = "wifi-security" if cp.has_section("wifi-security") else "802-11-wireless-security"
    if not cp.has_section(sec):
        return WifiNetwork(ssid, None, source)
    mgmt = cp.get(sec, "key-mgmt", fallback="")
    if mgmt != "wpa-psk":
        raise BootFileError(f"{source}: key-mgmt {mgmt!r} is not supported here (wpa-psk)")
    return WifiNetwork(ssid, _unescape(cp.get(sec, "psk", fallback=None) or ""), source)
