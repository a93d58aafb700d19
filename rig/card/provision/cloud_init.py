"""cloud-init NoCloud: `user-data`, `network-config`, `meta-data` (Raspberry Pi OS Trixie).

Shaped as Raspberry Pi Imager writes them (rpi-imager ``customization_generator.cpp``,
``downloadthread.cpp``): ``user-data`` is ``#cloud-config`` (hostname, the default
user renamed through singular ``user:`` with a SHA-512 hash, password SSH, a runcmd
that enables sshd); ``network-config`` is netplan version 2 with ``eth0`` kept and
the access point with ``regulatory-domain``; ``meta-data`` gets a fresh
``instance-id`` on every provisioning (cloud-init runs its first-boot modules again
only for an instance id it has not seen), repeated as ``ds=nocloud;i=`` in
cmdline.txt.
"""

from __future__ import annotations

import uuid

from .common import Context, FileChange, cmdline_line, ssh_change, yaml_str

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
        # singular `user:`, as Imager writes it: the image's default (uid 1000) user gets
        # this name and keeps its groups; OctoPi's services run as uid 1000. A `users:`
        # list would add a second, group-less account beside it.
        "user:",
        f"  name: {yaml_str(s.user)}",
        "  shell: /bin/bash",
        "  lock_passwd: false",
        f"  passwd: {yaml_str(ctx.password_hash)}",
        "  sudo: ALL=(ALL) NOPASSWD:ALL",
    ]
    if s.ssh_keys:
        lines.append("  ssh_authorized_keys:")
        lines += [f"    - {yaml_str(k.strip())}" for k in s.ssh_keys]
    lines += ["runcmd:", "  - [systemctl, enable, --now, ssh]", ""]
    return "\n".join(lines)


def network_config(ctx: Context) -> str:
    s = ctx.settings
    password = s.psk.reveal() if not s.psk_is_key else ctx.psk_hex
    lines = [
        "# Written by rig provision (netplan version 2).",
        "network:",
        "  version: 2",
        # kept beside Wi-Fi, as Imager does: a network-config replaces the distro's
        "  ethernets:",
        "    eth0:",
        "      dhcp4: true",
        "      dhcp6: true",
        "      optional: true",
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
    instance = f"rig-{uuid.uuid4()}"
    meta = f"instance-id: {instance}\nlocal-hostname: {yaml_str(s.hostname)}\n"
    # as Imager: the datasource and instance on the kernel command line, so cloud-init
    # checks its cache against it instead of searching for the seed on every boot
    cmdline = f"{cmdline_line(ctx.card)} ds=nocloud;i={instance}\n"
    return [
        FileChange("user-data", user_data(ctx).encode(), (ctx.password_hash,), "user, ssh"),
        FileChange(
            "network-config",
            network_config(ctx).encode(),
            (yaml_str(password)[1:-1],),
            "Wi-Fi",
        ),
        FileChange("meta-data", meta.encode(), note="fresh instance-id"),
        FileChange("cmdline.txt", cmdline.encode(), note="ds=nocloud;i=<instance-id>"),
        ssh_change(),  # no userconf.txt: cloud-init creates the user
    ]
