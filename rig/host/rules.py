"""The udev rules of one rig: the shipped rules for muxes and YKUSHes, plus its own hubs.

A rule for "every USB hub" would hand the flash host's keyboard hub to group ``rig``;
the installer writes one rule per hub a configured device is powered from instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rig.host import GROUP, SHIPPED


def hub_locations(devices: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(device, hub location) for every device powered by a ``usb-hub`` port."""
    out = []
    for name, dev in sorted(devices.items()):
        power = (dev or {}).get("power") or {}
        if power.get("driver") == "usb-hub" and power.get("location"):
            out.append((name, str(power["location"])))
    return out


def kernel_patterns(location: str) -> list[str]:
    """udev KERNEL globs for a hub at ``location`` and for its opposite-speed half.

    The other half of a USB3 hub has the same port path on the other bus (``1-1.3`` /
    ``2-1.3``), except behind a Raspberry Pi 4's VL805, whose USB2 side sits one hub
    deeper than its USB3 side (``1-1.3`` / ``2-3``).
    """
    _bus, _, path = location.partition("-")
    paths = [path]
    if path.startswith("1."):
        paths.append(path[2:])
    else:
        paths.append(f"1.{path}")
    return [f"[0-9]*-{p}" for p in dict.fromkeys(paths)]


def hub_rules(locations: Iterable[tuple[str, str]]) -> str:
    lines = []
    for device, location in locations:
        for pattern in kernel_patterns(location):
            lines += [
                f"# hub powering {device} ({location}), or its other-speed half",
                f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", KERNEL=="{pattern}", '
                f'ATTR{{bDeviceClass}}=="09", MODE="0660", GROUP="{GROUP}"',
                # Linux >= 6.0: the ports' "disable" attribute switches VBUS and stays off
                f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_interface", DRIVER=="hub", '
                f'KERNEL=="{pattern}:1.0", RUN+="/bin/sh -c \'chgrp {GROUP} '
                f"/sys%p/*-port*/disable; chmod g+w /sys%p/*-port*/disable'\"",
            ]
    return "\n".join(lines)


def render(devices: Mapping[str, Any]) -> str:
    """The complete rules file for a rig with these ``devices`` (rig.yaml's section)."""
    text = (SHIPPED / "99-rig.rules").read_text()
    hubs = hub_locations(devices)
    if hubs:
        text += (
            "\n# --- power: the hubs of this rig's devices (from rig.yaml; "
            "`rig host install` rewrites this part) ---\n" + hub_rules(hubs) + "\n"
        )
    return text
