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


# environment variables a profile reads, which the daemon passes to its runs
PRODUCT_ENVIRONMENT = ("RIG_OCTOPRINT_CHECKOUT",)  # octoprint-e2e: a clone of OctoPrint

DEFAULT_PRODUCT = "octoprint"  # a matrix without release.product


def get_profile(name: str, *, where: str = "release.product", **options: Any) -> Profile:
    """A ready profile instance for ``name`` (a matrix's ``release.product``)."""
    try:
        target = PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown product {name!r} (known: {', '.join(sorted(PROFILES))})",
            where=where,
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**options)
