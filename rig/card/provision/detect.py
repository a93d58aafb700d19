"""Which scheme a card needs, read from what it holds.

Markers, most specific first: OctoPi's Wi-Fi templates and cloud-init's NoCloud
files on the boot partition (what first boot will actually read); then the root
partition's ``/etc/octopi_version`` and ``/etc/os-release`` codename; then the
init= of cmdline.txt (``raspberrypi-sys-mods/firstboot`` is Bookworm and later,
``init_resize.sh`` Buster/Bullseye) and OctoPi's ``octopi.txt``. Each answer
carries the reason, shown to the user.
"""

from __future__ import annotations

import re

from rig.errors import ConfigError

from .common import CardView


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def root_facts(card: CardView) -> tuple[str | None, str | None]:
    """(OctoPi version, os-release codename) from the root file system, when readable."""
    octopi = card.root_text("/etc/octopi_version")
    release = card.root_text("/etc/os-release") or ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", release, re.M)
    return (octopi.strip() or None) if octopi else None, m.group(1) if m else None


# Imager's newest customisation: one rpi-preseed.toml on the boot partition, applied by
# the image's rpi-preseed.service (rpi-imager downloadthread.cpp, init_format rpi-preseed)
PRESEED_UNITS = (
    "/usr/lib/systemd/system/rpi-preseed.service",
    "/lib/systemd/system/rpi-preseed.service",
)


def uses_rpi_preseed(card: CardView) -> str | None:
    """Why the card takes Imager's rpi-preseed format, or None."""
    if card.exists("rpi-preseed.toml"):
        return "the card has an rpi-preseed.toml"
    for unit in PRESEED_UNITS:
        if card.root_text(unit) is not None:
            return f"its root file system has {unit}"
    return None


def detect(card: CardView) -> tuple[str, str]:
    """(scheme name, why); a card only Imager's rpi-preseed format configures is refused."""
    preseed = uses_rpi_preseed(card)
    if preseed:
        raise ConfigError(
            f"this image is configured through Raspberry Pi Imager's rpi-preseed.toml "
            f"({preseed}), which rig provision does not write yet",
            where="provision",
            hint="provision it once with Raspberry Pi Imager, or name an older scheme "
            "explicitly (--scheme firstrun or cloud-init) if the image still honours it",
        )
    octopi_version, codename = root_facts(card)
    # OctoPi-UpToDate images are OctoPi with a newer product; its Pi support reads this file
    build = (card.root_text("/etc/octopiuptodate_build") or "").strip()
    facts = ", ".join(
        x
        for x in (
            f"OctoPi {octopi_version}" if octopi_version else "",
            f"OctoPi-UpToDate build {build}" if build else "",
            f"Debian {codename}" if codename else "",
        )
        if x
    )
    seen = f"; root file system: {facts}" if facts else ""
    if card.exists("octopi-wpa-supplicant.txt"):
        return "octopi-legacy", f"the card has octopi-wpa-supplicant.txt{seen}"
    if card.exists("wifi.nmconnection"):
        return "nmconnection", f"the card has a wifi.nmconnection template{seen}"
    nocloud = [n for n in ("user-data", "network-config", "meta-data") if card.exists(n)]
    if nocloud:
        return "cloud-init", f"the card has cloud-init NoCloud files ({', '.join(nocloud)}){seen}"
    octopi = card.exists("octopi.txt") or octopi_version is not None
    if octopi_version:
        if _version(octopi_version) >= (1, 1):
            return "nmconnection", f"OctoPi {octopi_version} uses NetworkManager{seen}"
        return "octopi-legacy", f"OctoPi {octopi_version} reads octopi-wpa-supplicant.txt{seen}"
    if codename in ("buster", "bullseye"):
        return ("firstrun" if octopi else "wpa-supplicant"), f"Raspberry Pi OS {codename}{seen}"
    if codename == "bookworm":
        return ("nmconnection" if octopi else "custom-toml"), f"Raspberry Pi OS bookworm{seen}"
    if codename == "trixie":
        return "firstrun", f"Raspberry Pi OS trixie without cloud-init files{seen}"
    cmdline = card.text("cmdline.txt") or ""
    if "raspberrypi-sys-mods/firstboot" in cmdline:
        if octopi:
            return "nmconnection", "OctoPi on Bookworm (octopi.txt and the firstboot init)"
        return "custom-toml", "Raspberry Pi OS Bookworm (firstboot init in cmdline.txt)"
    if "init_resize.sh" in cmdline:
        if octopi:
            return "firstrun", "OctoPi on Buster/Bullseye without its Wi-Fi template"
        return "wpa-supplicant", "Raspberry Pi OS Buster/Bullseye (init_resize.sh in cmdline.txt)"
    return "firstrun", "no generation marker found; firstrun.sh works from Bullseye to Trixie"
