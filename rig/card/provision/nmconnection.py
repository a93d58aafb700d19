"""NetworkManager `wifi.nmconnection`: OctoPi 1.1 (Bookworm).

OctoPi copies the boot partition's keyfile to /etc/NetworkManager/
system-connections/ on every boot. The shipped template's comment lines are
kept; its active lines are replaced by our marked block. A keyfile cannot
carry the Wi-Fi country, so ``cfg80211.ieee80211_regdom=XX`` goes on the
single line of cmdline.txt.
"""

from __future__ import annotations

import uuid

from .common import (
    BEGIN,
    END,
    Context,
    FileChange,
    cmdline_line,
    keyfile_ssid,
    octopi_hostname_change,
    ssh_change,
    userconf_change,
)

NAME = "nmconnection"
FILES = ("wifi.nmconnection", "cmdline.txt (regdom)", "octopi-hostname.txt", "ssh", "userconf.txt")
IMAGES = "OctoPi 1.1 (Bookworm, NetworkManager)"


def keyfile(ctx: Context) -> list[str]:
    s = ctx.settings
    conn_id = uuid.uuid5(uuid.NAMESPACE_URL, f"rig-wifi:{s.hostname}:{s.ssid}")
    lines = [
        "[connection]",
        "id=rig-wifi",
        f"uuid={conn_id}",
        "type=wifi",
        "autoconnect=true",
        "",
        "[wifi]",
        "mode=infrastructure",
        f"ssid={keyfile_ssid(s.ssid)}",
    ]
    if s.hidden:
        lines.append("hidden=true")
    return [
        *lines,
        "",
        "[wifi-security]",
        "key-mgmt=wpa-psk",
        f"psk={ctx.psk_hex}",
        "",
        "[ipv4]",
        "method=auto",
        "",
        "[ipv6]",
        "addr-gen-mode=default",
        "method=auto",
    ]


def fill_template(template: str | None, ctx: Context) -> str:
    comments: list[str] = []
    inside = False
    for line in (template or "").splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside and (not line.strip() or line.lstrip().startswith(("#", ";"))):
            comments.append(line)
    while comments and not comments[-1].strip():
        comments.pop()
    body = [BEGIN, *keyfile(ctx), END]
    return "\n".join([*comments, *([""] if comments else []), *body]) + "\n"


def plan(ctx: Context) -> list[FileChange]:
    s = ctx.settings
    text = fill_template(ctx.card.text("wifi.nmconnection"), ctx)
    cmdline = f"{cmdline_line(ctx.card)} cfg80211.ieee80211_regdom={s.country}\n"
    changes = [
        FileChange("wifi.nmconnection", text.encode(), (ctx.psk_hex,), "Wi-Fi"),
        FileChange("cmdline.txt", cmdline.encode(), note="Wi-Fi country"),
        ssh_change(),
        userconf_change(ctx),
    ]
    if ctx.card.exists("octopi.txt"):
        hostname = octopi_hostname_change(ctx)
        if hostname is not None:
            changes.insert(2, hostname)
    else:
        ctx.warn(f"{NAME}: not an OctoPi card, the hostname is not set by this scheme")
    return changes
