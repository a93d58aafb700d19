"""OctoPi up to 1.0.x: `octopi-wpa-supplicant.txt`, `octopi-hostname.txt`, `octopi-password.txt`.

The image symlinks /etc/wpa_supplicant/wpa_supplicant.conf to the boot file and
reads it on every boot. We fill in the shipped template: every line of it is
kept (the comments users rely on), active ``country=`` lines are commented out,
and our network block plus ``country=`` go in a marked block before the
"###" trailer, so re-provisioning replaces only that block.
"""

from __future__ import annotations

from .common import (
    BEGIN,
    END,
    Context,
    FileChange,
    octopi_hostname_change,
    replace_block,
    ssh_change,
    userconf_change,
)
from .wpa_supplicant import network_block

NAME = "octopi-legacy"
FILES = (
    "octopi-wpa-supplicant.txt",
    "octopi-hostname.txt",
    "octopi-password.txt (user pi only)",
    "ssh",
    "userconf.txt",
)
IMAGES = "OctoPi 0.17, 0.18 (Buster), 1.0 (Bullseye)"

FALLBACK = """\
# Wi-Fi for this OctoPi in wpa_supplicant.conf format, read on every boot.

### wpa_supplicant settings below
ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev
update_config=1
"""


def fill_template(template: str, ctx: Context) -> str:
    lines = []
    inside = False
    for line in template.splitlines():
        if line.strip() in (BEGIN, END):
            inside = line.strip() == BEGIN
        elif line.strip().startswith("country="):
            line = "#" + line
        elif not inside and line.strip().replace(" ", "") == "network={":
            ctx.warn(f"{NAME}: the card already has an active network block; it is kept")
        lines.append(line)
    block = [*network_block(ctx), f"country={ctx.settings.country}"]
    return replace_block("\n".join(lines), block, before="###")


def plan(ctx: Context) -> list[FileChange]:
    s = ctx.settings
    template = ctx.card.text("octopi-wpa-supplicant.txt")
    if template is None:
        ctx.warn(f"{NAME}: no octopi-wpa-supplicant.txt template on the card; writing one")
        template = FALLBACK
    changes = [
        FileChange(
            "octopi-wpa-supplicant.txt",
            fill_template(template, ctx).encode(),
            (ctx.psk_hex,),
            "Wi-Fi (template filled in)",
        ),
        ssh_change(),
        userconf_change(ctx),
    ]
    hostname = octopi_hostname_change(ctx)
    if hostname is not None:
        changes.insert(1, hostname)
    if s.user == "pi":
        password = s.password.reveal()
        changes.append(
            FileChange("octopi-password.txt", f"{password}\n".encode(), (password,), "password")
        )
    else:
        ctx.warn(
            f"{NAME}: user {s.user!r} replaces pi; OctoPi's own services run as pi "
            "(renaming the first user of an OctoPi image broke them before)"
        )
    return changes
