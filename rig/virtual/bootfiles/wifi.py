"""Wi-Fi networks as configured on a card, and whether one matches the access point."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class AccessPoint:
    """The virtual Wi-Fi a device can join: exact SSID, passphrase and country."""

    ssid: str
    psk: str  # the passphrase, or the 64-hex key itself
    country: str

    def key(self) -> str:
        """The 256-bit key both sides derive; what really has to match."""
        return self.psk.lower() if HEX64.fullmatch(self.psk) else psk_key(self.psk, self.ssid)


@dataclass(frozen=True)
class WifiNetwork:
    """One configured network: ``psk`` is a passphrase or the 64-hex PBKDF2 key."""

    ssid: str
    psk: str | None  # None: open network (key_mgmt=NONE)
    source: str  # file the network came from, for messages
    disabled: bool = False


def psk_key(passphrase: str, ssid: str) -> str:
    """The WPA key wpa_passphrase prints: PBKDF2-HMAC-SHA1, 4096 rounds, 32 bytes."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def network_matches(net: WifiNetwork, ap: AccessPoint) -> tuple[bool, str]:
    """(joins, why not). The AP is WPA-PSK: an open network never authenticates."""
    if net.disabled:
        return False, f"{net.source}: network {net.ssid!r} is disabled"
    if net.ssid != ap.ssid:
        return False, f"{net.source}: SSID {net.ssid!r} is not the access point's"
    if net.psk is None:
        return False, f"{net.source}: {net.ssid!r} is configured as an open network"
    if HEX64.fullmatch(net.psk):
        key = net.psk.lower()
    elif 8 <= len(net.psk) <= 63:
        key = psk_key(net.psk, net.ssid)
    else:
        return False, f"{net.source}: PSK must be 8..63 characters or 64 hex digits"
    ok = key == ap.key()
    return (True, "") if ok else (False, f"{net.source}: wrong PSK for {net.ssid!r}")
