"""The package cache for a run (or the daemon): the app, and what a profile is handed.

A profile gets a `DevicePackages` in ``ctx.package_index``: the URL its device's
pip is pointed at, and `keep_built` for the wheels the device built itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from rig.packages.environment import from_user_agent
from rig.packages.index import PackageIndex
from rig.packages.settings import PackageSettings
from rig.packages.store import PackageStore


def index_app(settings: PackageSettings) -> PackageIndex:
    """The index over the cache directory the settings name."""
    return PackageIndex(PackageStore(settings.root, settings.limit_bytes), list(settings.upstreams))


@dataclass
class DevicePackages:
    """The rig's package index as a device reaches it."""

    url: str  # the simple index, e.g. http://192.168.1.2:8765/simple/
    store: PackageStore

    def keep_built(self, user_agent: str, filename: str, data: bytes) -> bool:
        """A wheel the device built, kept for devices of the same environment (the one
        its pip's User-Agent names). False: not kept (not a wheel, known, no environment)."""
        env = from_user_agent(user_agent)
        if env is None:
            return False
        return self.store.keep_built(env, filename, data)
