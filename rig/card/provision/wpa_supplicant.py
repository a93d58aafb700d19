"""`wpa_supplicant.conf` on the boot partition: Raspberry Pi OS up to Bullseye.

At first boot the system moves the file to /etc/wpa_supplicant/ (Bookworm
dropped this). It cannot set a hostname; use `firstrun` for that.
"""

from __future__ import annotations

from .common import Context, FileChange, ssh_change, userconf_change, wpa_ssid

NAME = "wpa-supplicant"
FILES = ("wpa_supplicant.conf", "ssh", "userconf.txt")
IMAGES = "Raspberry Pi OS Buster and Bullseye (not OctoPi)"


def network_block(ctx: Context) -> list[str]:
    """One wpa_supplicant network block; SSID hex-encoded unless plain, PSK as the hex key."""
    s = ctx.settings
    lines = [
        "network={",
        f"    ssid={wpa_ssid(s.ssid)}",
        f"    psk={ctx.psk_hex}",
        "    key_mgmt=WPA-PSK",
    ]
    if s.hidden:
        lines.append("    scan_ssid=1")
    return [*lines, "}"]


def plan(ctx: Context) -> list[FileChange]:
    s = ctx.settings
    text = "\n".join(
        [
            "# written by rig provision; moved to /etc/wpa_supplicant/ at first boot",
            "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
            "update_config=1",
            f"country={s.country}",
            "",
            *network_block(ctx),
            "",
        ]
    )
    if s.hostname != "raspberrypi":
        ctx.warn(f"{NAME}: the hostname cannot be set this way (it stays raspberrypi)")
    return [
        FileChange("wpa_supplicant.conf", text.encode(), (ctx.psk_hex,), "Wi-Fi"),
        ssh_change(),
        userconf_change(ctx),
    ]
