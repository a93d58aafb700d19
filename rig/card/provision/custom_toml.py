"""`custom.toml`: Raspberry Pi OS Bookworm's first-boot configuration.

Read by raspberrypi-sys-mods' ``init_config`` (from the ``firstboot`` init on
the kernel command line), which hands each value to ``imager_custom``. That
helper pastes the SSID unescaped into a NetworkManager keyfile, so SSIDs a
keyfile cannot hold verbatim (backslash, ``;``, leading/trailing blanks) are
refused here with a hint to use the ``firstrun`` scheme. Passwords go in
pre-hashed (``password_encrypted = true``): the user's as SHA-512 crypt, the
Wi-Fi's as the 64-hex PSK. ``ssh`` and ``userconf.txt`` are written too, so
Bookworm images older than custom.toml support still get the user and SSH.
"""

from __future__ import annotations

from rig.errors import ConfigError

from .common import Context, FileChange, ssh_change, toml_str, userconf_change

NAME = "custom-toml"
FILES = ("custom.toml", "ssh", "userconf.txt")
IMAGES = "Raspberry Pi OS Bookworm"


def check(ctx: Context) -> None:
    s = ctx.settings
    if any(c in s.ssid for c in "\\;") or s.ssid != s.ssid.strip():
        raise ConfigError(
            f"SSID {s.ssid!r} cannot pass through custom.toml: Raspberry Pi OS writes it "
            "into a NetworkManager keyfile without escaping",
            where=s.where("ssid"),
            hint="use --scheme firstrun, which writes the keyfile itself",
        )


def render(ctx: Context) -> str:
    s = ctx.settings
    keys = ", ".join(toml_str(k.strip()) for k in s.ssh_keys)
    lines = [
        "# Written by rig provision; applied once at first boot by raspberrypi-sys-mods.",
        "config_version = 1",
        "",
        "[system]",
        f"hostname = {toml_str(s.hostname)}",
        "",
        "[user]",
        f"name = {toml_str(s.user)}",
        f"password = {toml_str(ctx.password_hash)}",
        "password_encrypted = true",
        "",
        "[ssh]",
        "enabled = true",
        "password_authentication = true",
        f"authorized_keys = [{keys}]",
        "",
        "[wlan]",
        f"ssid = {toml_str(s.ssid)}",
        f"password = {toml_str(ctx.psk_hex)}",
        "password_encrypted = true",
        f"hidden = {'true' if s.hidden else 'false'}",
        f"country = {toml_str(s.country)}",
        "",
    ]
    return "\n".join(lines)


def plan(ctx: Context) -> list[FileChange]:
    check(ctx)
    return [
        FileChange(
            "custom.toml", render(ctx).encode(), (ctx.psk_hex, ctx.password_hash), "first boot"
        ),
        # early Bookworm images ignore custom.toml: they still get the user and SSH
        ssh_change(),
        userconf_change(ctx),
    ]
