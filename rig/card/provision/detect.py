"""Which scheme a card needs, read from what its boot partition holds.

Markers, most specific first: OctoPi's Wi-Fi templates, cloud-init's NoCloud
files, then the init= of cmdline.txt (``raspberrypi-sys-mods/firstboot`` is
Bookworm and later, ``init_resize.sh`` Buster/Bullseye), then OctoPi's
``octopi.txt``. Each answer carries the reason, shown to the user.
"""

from __future__ import annotations

from .common import CardView


def detect(card: CardView) -> tuple[str, str]:
    """(scheme name, why)."""
    if card.exists("octopi-wpa-supplicant.txt"):
        return "octopi-legacy", "the card has octopi-wpa-supplicant.txt (OctoPi up to 1.0.x)"
    if card.exists("wifi.nmconnection"):
        return "nmconnection", "the card has a wifi.nmconnection template (OctoPi 1.1, Bookworm)"
    nocloud = [n for n in ("user-data", "network-config", "meta-data") if card.exists(n)]
    if nocloud:
        return "cloud-init", f"the card has cloud-init NoCloud files ({', '.join(nocloud)})"
    cmdline = card.text("cmdline.txt") or ""
    octopi = card.exists("octopi.txt")
    if "raspberrypi-sys-mods/firstboot" in cmdline:
        if octopi:
            return "nmconnection", "OctoPi on Bookworm (octopi.txt and the firstboot init)"
        return "custom-toml", "Raspberry Pi OS Bookworm (firstboot init in cmdline.txt)"
    if "init_resize.sh" in cmdline:
        if octopi:
            return "firstrun", "OctoPi on Buster/Bullseye without its Wi-Fi template"
        return "wpa-supplicant", "Raspberry Pi OS Buster/Bullseye (init_resize.sh in cmdline.txt)"
    return "firstrun", "no generation marker found; firstrun.sh works from Bullseye to Trixie"
