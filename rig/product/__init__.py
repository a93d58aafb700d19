"""Product profiles: everything that knows what the software under test is.

A dict from profile name to class is all the registry a handful of products need.
"""

from __future__ import annotations

import importlib
from typing import Any

from rig.errors import ConfigError
from rig.product.profile import Profile

# profile name -> "module:Class", imported on demand so a profile's dependencies
# load only when it is used
PROFILES = {
    "octoprint": "rig.product.octoprint.profile:OctoPrintProfile",
    "generic": "rig.product.generic.profile:GenericProfile",
}


def get_profile(name: str, **options: Any) -> Profile:
    """A ready profile instance for ``name`` (e.g. from a device's ``profile:`` key)."""
    try:
        target = PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown product profile {name!r}",
            where="devices.*.profile",
            hint="known: " + ", ".join(sorted(PROFILES)),
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**options)
