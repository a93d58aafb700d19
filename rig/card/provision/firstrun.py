"""An Imager-style `firstrun.sh` plus the `cmdline.txt` suffix that runs it once.

What the seed rig used for Bullseye and Bookworm OctoPi images; it works
from Bullseye to the first Trixie images. The kernel command line gets
``cfg80211.ieee80211_regdom=XX systemd.run=/boot/firstrun.sh
systemd.run_success_action=reboot systemd.unit=kernel-command-line.target``; the
script sets hostname, user, SSH and Wi-Fi, then deletes itself and the suffix.

The script is ours. No setting is ever expanded by the shell: hostname, user
and password hash are single-quoted words, and the Wi-Fi files (a
NetworkManager keyfile on Bookworm, wpa_supplicant.conf before) are rendered
here, with each format's escaping, and embedded as quoted here-documents.
"""

from __future__ import annotations

from .common import Context, FileChange, cmdline_line, keyfile_ssid, shell_quote, ssh_change
from .nmconnection import keyfile
from .wpa_supplicant import network_block

NAME = "firstrun"
FILES = ("firstrun.sh", "cmdline.txt (suffix)", "ssh")
IMAGES = "Raspberry Pi OS / OctoPi Bullseye .. first Trixie (the original rig's default)"

SUFFIX = (
    "systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
    "systemd.unit=kernel-command-line.target"
)


def _heredoc(target: str, lines: list[str], tag: str) -> list[str]:
    assert all(line != tag for line in lines)
    return [f"cat >{target} <<'{tag}'", *lines, tag]


def keyfile_safe(ssid: str) -> bool:
    """Whether imager_custom may paste this SSID into a keyfile unescaped."""
    return keyfile_ssid(ssid) == ssid


def _wifi(ctx: Context) -> list[str]:
    s = ctx.settings
    wpa = [
        "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
        "update_config=1",
        f"country={s.country}",
        "",
        *network_block(ctx),
    ]
    legacy = [
        *_heredoc("/etc/wpa_supplicant/wpa_supplicant.conf", wpa, "RIG_WPA_EOF"),
        "   chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
        "   rfkill unblock wifi",
        "   for filename in /var/lib/systemd/rfkill/*:wlan ; do",
        "      echo 0 > $filename",
        "   done",
    ]
    if keyfile_safe(s.ssid):
        hidden = "-h " if s.hidden else ""
        args = " ".join(shell_quote(v) for v in (s.ssid, ctx.psk_hex, s.country))
        return [
            'if [ -f "$SYSMODS" ]; then',
            f'   "$SYSMODS" set_wlan {hidden}{args}',
            "else",
            *legacy,
            "fi",
        ]
    # an SSID imager_custom would mangle: write the NetworkManager keyfile ourselves
    conn = "/etc/NetworkManager/system-connections/rig-wifi.nmconnection"
    return [
        "if [ -d /etc/NetworkManager/system-connections ]; then",
        *_heredoc(conn, keyfile(ctx), "RIG_NM_EOF"),
        f"   chmod 600 {conn}",
        '   raspi-config nonint do_wifi_country "$WIFI_COUNTRY"',
        "else",
        *legacy,
        "fi",
    ]


def script(ctx: Context) -> str:
    s = ctx.settings
    keys = " ".join(shell_quote(k.strip()) for k in s.ssh_keys)
    lines = [
        "#!/bin/bash",
        "# Written by rig provision: first-boot setup in the style of Raspberry Pi Imager.",
        "# Runs once (systemd.run on the kernel command line), then removes itself.",
        "set +e",
        "",
        f"NEW_HOSTNAME={shell_quote(s.hostname)}",
        f"FIRST_USER={shell_quote(s.user)}",
        f"FIRST_USER_HASH={shell_quote(ctx.password_hash)}",
        f"WIFI_COUNTRY={shell_quote(s.country)}",
        "SYSMODS=/usr/lib/raspberrypi-sys-mods/imager_custom",
        "",
        "# hostname",
        'CURRENT_HOSTNAME=`cat /etc/hostname | tr -d " \\t\\n\\r"`',
        'if [ -f "$SYSMODS" ]; then',
        '   "$SYSMODS" set_hostname "$NEW_HOSTNAME"',
        "else",
        '   echo "$NEW_HOSTNAME" >/etc/hostname',
        '   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t$NEW_HOSTNAME/g" /etc/hosts',
        "fi",
        "",
        "# first user: userconf-pi renames the uid 1000 user and sets the hash",
        "FIRSTUSER=`getent passwd 1000 | cut -d: -f1`",
        "if [ -f /usr/lib/userconf-pi/userconf ]; then",
        '   /usr/lib/userconf-pi/userconf "$FIRST_USER" "$FIRST_USER_HASH"',
        "else",
        '   if [ "$FIRSTUSER" != "$FIRST_USER" ]; then',
        '      usermod -l "$FIRST_USER" "$FIRSTUSER"',
        '      usermod -m -d "/home/$FIRST_USER" "$FIRST_USER"',
        '      groupmod -n "$FIRST_USER" "$FIRSTUSER"',
        "   fi",
        '   echo "$FIRST_USER:$FIRST_USER_HASH" | chpasswd -e',
        "fi",
        "",
        "# ssh",
        'if [ -f "$SYSMODS" ]; then',
        f'   "$SYSMODS" enable_ssh {keys}'.rstrip(),
        "else",
        "   systemctl enable ssh",
        "fi",
        "",
        "# Wi-Fi",
        *_wifi(ctx),
        "",
        "# run once: remove this script and the kernel command line suffix",
        "rm -f /boot/firstrun.sh /boot/firmware/firstrun.sh",
        "if [ -f /boot/firmware/cmdline.txt ]; then",
        "   sed -i 's| systemd.run.*||g' /boot/firmware/cmdline.txt",
        "else",
        "   sed -i 's| systemd.run.*||g' /boot/cmdline.txt",
        "fi",
        "exit 0",
        "",
    ]
    return "\n".join(lines)


def plan(ctx: Context) -> list[FileChange]:
    s = ctx.settings
    # the regulatory domain before the suffix, as Imager puts it: the script's
    # `sed 's| systemd.run.*||g'` cuts everything from the suffix on, and a domain
    # after it would go too, leaving Wi-Fi blocked from the second boot on
    cmdline = f"{cmdline_line(ctx.card)} cfg80211.ieee80211_regdom={s.country} {SUFFIX}\n"
    return [
        FileChange(
            "firstrun.sh", script(ctx).encode(), (ctx.psk_hex, ctx.password_hash), "first boot"
        ),
        FileChange("cmdline.txt", cmdline.encode(), note="runs firstrun.sh once"),
        ssh_change(),
    ]
