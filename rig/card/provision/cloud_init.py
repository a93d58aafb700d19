"""cloud-init NoCloud: `user-data`, `network-config`, `meta-data` (Raspberry Pi OS Trixie).

``user-data`` is ``#cloud-config`` (hostname, the first user with a SHA-512
hash, password SSH, a runcmd that enables sshd); ``network-config`` is netplan
version 2 with the access point and ``regulatory-domain``; ``meta-data`` gets
a fresh ``instance-id`` on every provisioning, because cloud-init runs its
first-boot modules again only for an instance id it has not seen.
"""

from __future__ import annotations

import uuid

from .common import Context, FileChange, ssh_change, yaml_str

NAME = "cloud-init"
FILES = ("user-data", "network-config", "meta-data", "ssh")
IMAGES = "Raspberry Pi OS Trixie (October 2025 on)"


def user_data(ctx: Context) -> str:
    s = ctx.settings
    lines = [
        "#cloud-config",
        "# Written by rig provision.",
        f"hostname: {yaml_str(s.hostname)}",
        "manage_etc_hosts: true",
        "ssh_pwauth: true",
        "users:",
        f"  - name: {yaml_str(s.user)}",
        "    groups: [adm, dialout, cdrom, sudo, audio, video, plugdev, games, users, input,"
        " render, netdev, gpio, i2c, spi]",
        "    shell: /bin/bash",
        "    sudo: 'ALL=(ALL) NOPASSWD:ALL'",
        "    lock_passwd: false",
        f"    passwd: {yaml_str(ctx.password_hash)}",
    ]
    if s.ssh_keys:
        lines.append("    ssh_authorized_keys:")
        lines += [f"      - {yaml_str(k.strip())}" for k in s.ssh_keys]
    lines += ["runcmd:", "  - [systemctl, enable, --now, ssh]", ""]
    return "\n".join(lines)


def network_config(ctx: Context) -> str:
    s = ctx.settings
    password = s.psk.reveal() if not s.psk_is_key else ctx.psk_hex
    lines = [
        "# Written by rig provision (netplan version 2).",
        "network:",
        "  version: 2",
        "  wifis:",
        "    wlan0:",
        "      dhcp4: true",
        "      optional: true",
        f"      regulatory-domain: {yaml_str(s.country)}",
        "      access-points:",
        f"        {yaml_str(s.ssid)}:",
        f"          password: {yaml_str(password)}",
    ]
    if s.hidden:
        lines.append("          hidden: true")
    return "\n".join([*lines, ""])


def plan(ctx: Context) -> list[FileChange]:
    s = ctx.settings
    password = s.psk.reveal() if not s.psk_is_key else ctx.psk_hex
    meta = f"instance-id: rig-{uuid.uuid4()}\nlocal-hostname: {yaml_str(s.hostname)}\n"
    return [
        FileChange("user-data", user_data(ctx).encode(), (ctx.password_hash,), "user, ssh"),
        FileChange(
            "network-config",
            network_config(ctx).encode(),
            (yaml_str(password)[1:-1],),
            "Wi-Fi",
        ),
        FileChange("meta-data", meta.encode(), note="fresh instance-id"),
        ssh_change(),  # no userconf.txt: cloud-init creates the user
    ]
