"""The flash host itself: what installing the rig on it puts where, and checking that it did.

The files here (udev rules, the modules-load entry for ``sg``, the systemd unit, the
example ``/etc/rig/rig.yaml``) are shipped inside the package, so a wheel installs a
flash host as completely as a checkout does. ``install`` writes them; ``checks`` is the
part of ``rig doctor`` that reads them back.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent
GROUP = "rig"
USER = "rig"
HOME = "/var/lib/rig"
RIG_PROGRAM = "/opt/rig/bin/rig"

# where each shipped file goes on the host
RULES = "etc/udev/rules.d/99-rig.rules"
MODULES = "etc/modules-load.d/rig.conf"
UNIT = "etc/systemd/system/rig.service"
CONFIG = "etc/rig/rig.yaml"
CREDENTIALS = "etc/rig/credentials"
