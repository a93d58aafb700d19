"""Release channels: what a device's channel setting is, and which releases it sees.

OctoPrint's software update plugin offers a *prerelease* only if its GitHub
``target_commitish`` is in the list of the device's channel (final releases pass on
every channel). The lists come with the device's OctoPrint (``get_settings_defaults``
of ``octoprint/plugins/softwareupdate/__init__.py`` at each tag):

- 1.5.2 … 1.10.x: Stable ``master``; "Maintenance RCs" ``rc/maintenance`` only;
  "Devel RCs" ``rc/maintenance, rc/devel``.
- 1.11.x: Stable ``master, main``; Maintenance ``rc/maintenance, next``; Devel
  ``rc/maintenance, rc/devel, next``.
- 2.x: Stable (branch ``stable``) ``main``; one prerelease channel, branch
  ``prerelease``, ``next``. A device with ``prerelease: true`` but no
  ``prerelease_channel`` sees *every* prerelease, so 2.x needs both.

Real releases are cut from ``main`` (final) and ``next`` (RCs) since the branch
rename of September 2025 (``docs/development/branches.rst`` from 1.11.3 on:
``master`` became ``main``, ``rc/maintenance`` merged into ``next``, ``rc/devel``
removed). Every 2.x release came after the rename (2.0.0rc1 is of April 2026), so
the feed publishes it under its real commitish only, as GitHub has it: a 1.10.x
device on "Maintenance RCs" (``rc/maintenance`` only) is not offered 2.0.0rcN. A 1.x
release under test is published for 1.x devices under the old name too (``main``
as ``master``, ``next`` as ``rc/maintenance``), like the original rig (OctoPrint/
devtools ``fabfile.py``, ``OLD_BRANCH_LOOKUP``): that is how a 1.x candidate tried
as a maintenance RC (the demo's 1.11.8 from 1.10.3) reaches them. The rig's
channel names: stable, maintenance, devel, next.
"""

from __future__ import annotations

from typing import Any

from packaging.version import Version

CHANNELS = ("stable", "maintenance", "devel", "next")

# rig channel -> the 1.x prerelease_channel branch (None: stable)
_V1_BRANCH = {
    "stable": None,
    "maintenance": "rc/maintenance",
    "next": "rc/maintenance",
    "devel": "rc/devel",
}
V2_PRERELEASE = "prerelease"
# rig channel a release is published on -> the branch it is really cut from
REAL_COMMITISH = {
    "stable": "main",
    "maintenance": "next",
    "next": "next",
    "devel": "rc/devel",
}
# what a 1.x device knows those branches as, for a 1.x release under test
OLD_NAMES = {"main": "master", "next": "rc/maintenance"}
AFTER_RENAME = Version("2.0.0.dev0")  # every release from here on: the new names only


def series(version: str) -> int:
    """1 for OctoPrint 1.x, 2 for 2.x and later (where channels were renamed)."""
    return 1 if Version(version).major < 2 else 2


def channel_settings(channel: str, version: str) -> dict[str, Any]:
    """The `plugins.softwareupdate.checks.octoprint` keys that select ``channel``."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if channel == "stable":
        return {"prerelease": False, "prerelease_channel": None}
    if series(version) == 1:
        return {"prerelease": True, "prerelease_channel": _V1_BRANCH[channel]}
    return {"prerelease": True, "prerelease_channel": V2_PRERELEASE}


def published_commitish(
    release_channel: str, device_series: int = 1, release_version: str | None = None
) -> list[str]:
    """The commitish(es) the feed publishes a release under, for a device series.

    The old names only for a 1.x release (``release_version``; None: such a release):
    every 2.x release was cut after the branch rename."""
    real = REAL_COMMITISH[release_channel]
    renamed = release_version is not None and Version(release_version) >= AFTER_RENAME
    if device_series == 1 and real in OLD_NAMES and not renamed:
        return [real, OLD_NAMES[real]]
    return [real]


def accepted_commitish(channel: str, device_version: str) -> list[str]:
    """The commitish list of the device's channel, as its OctoPrint version has it."""
    v = Version(device_version)
    if series(device_version) == 2:
        return ["main"] if channel == "stable" else ["next"]
    with_next = v >= Version("1.11.0.dev0")
    branch = _V1_BRANCH[channel]
    if branch is None:
        return ["master", "main"] if with_next else ["master"]
    lists = {
        "rc/maintenance": ["rc/maintenance"],
        "rc/devel": ["rc/maintenance", "rc/devel"],
    }[branch]
    return [*lists, "next"] if with_next else lists


def offered(
    release_channel: str,
    device_channel: str,
    device_version: str,
    prerelease: bool = True,
    release_version: str | None = None,
) -> bool:
    """Does a device on ``device_channel`` running ``device_version`` see the release?"""
    if not prerelease:
        return True  # final releases reach every channel
    if device_channel == "stable":
        return False
    accepted = accepted_commitish(device_channel, device_version)
    published = published_commitish(release_channel, series(device_version), release_version)
    return any(c in accepted for c in published)
