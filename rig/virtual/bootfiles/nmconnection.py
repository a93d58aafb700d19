"""NetworkManager keyfiles (OctoPi 1.1's wifi.nmconnection, Imager's preconfigured.nmconnection)."""

from __future__ import annotations

import configparser

from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles.wifi import WifiNetwork


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
    ssid = cp.get(wifi, "ssid", fallback=None)
    if not ssid:
        raise BootFileError(f"{source}: Wi-Fi connection without ssid")
    sec = "wifi-security" if cp.has_section("wifi-security") else "802-11-wireless-security"
    if not cp.has_section(sec):
        return WifiNetwork(ssid, None, source)
    mgmt = cp.get(sec, "key-mgmt", fallback="")
    if mgmt != "wpa-psk":
        raise BootFileError(f"{source}: key-mgmt {mgmt!r} is not supported here (wpa-psk)")
    return WifiNetwork(ssid, cp.get(sec, "psk", fallback=None) or "", source)
