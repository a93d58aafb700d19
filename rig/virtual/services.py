"""The boot-time software a virtual OctoPi's root file system carries.

A real Pi's first boot is done by programs on its card (sshswitch, userconf,
raspberrypi-net-mods, imager_custom, ...), so what a card does at boot depends
on which of them its image has. The image builder installs a marker file at
each program's real path; the virtual Pi checks for them on the card instead
of trusting a table of generations.
"""

from __future__ import annotations

SERVICES: dict[str, str] = {
    # enables sshd when /boot/ssh or /boot/ssh.txt exists, then deletes it (all)
    "sshswitch": "/lib/systemd/system/sshswitch.service",
    # moves /boot/wpa_supplicant.conf to /etc/wpa_supplicant (Buster, Bullseye)
    "raspberrypi-net-mods": "/lib/systemd/system/raspberrypi-net-mods.service",
    # applies /boot/userconf.txt, failure renames it failed_userconf.txt (Bullseye 2022+);
    # runs only while userconfig.service is enabled (USERCONFIG_WANTS)
    "userconf": "/usr/lib/userconf-pi/userconf",
    # the helper Imager's firstrun.sh calls when present (late Bullseye, Bookworm)
    "imager_custom": "/usr/lib/raspberrypi-sys-mods/imager_custom",
    # applies /boot/firmware/custom.toml (Bookworm)
    "init_config": "/usr/lib/raspberrypi-sys-mods/init_config",
    # OctoPi 1.1: copies /boot/firmware/wifi.nmconnection on every boot
    "copy-network-manager-config": "/opt/custompios/copy-network-manager-config",
    # OctoPi: /boot/octopi-hostname.txt and octopi-password.txt (user pi), every boot
    "change_hostname": "/etc/init.d/change_hostname",
    "change_password": "/etc/init.d/change_password",
    # NoCloud user-data/network-config/meta-data (Trixie)
    "cloud-init": "/usr/bin/cloud-init",
}

# userconfig.service enablement: running userconf (e.g. from firstrun.sh) disables it,
# after which a userconf.txt on the boot partition is no longer read.
USERCONFIG_WANTS = "/etc/systemd/system/multi-user.target.wants/userconfig.service"
USERCONFIG_UNIT = "/lib/systemd/system/userconfig.service"
