"""Release channels: what a device's channel setting is, and which releases it sees.

OctoPrint 1.x offers a release on a channel only if the release's GitHub
``target_commitish`` is in that channel's list (stable: master/main; "Maintenance
RCs": rc/maintenance, next; "Devel RCs": rc/maintenance, rc/devel, next).
OctoPrint 2.x has one stable channel (commitish main) and one prerelease channel
(commitish next). The rig's channel names: stable, maintenance, devel, next.
"""

from __future__ import annotations

from typing import Any

from packaging.version import Version

CHANNELS = ("stable", "maintenance", "devel", "next")

# rig channel -> (1.x prerelease_channel branch or None for stable)
_V1_BRANCH = {
    "stable": None,
    "maintenance": "rc/maintenance",
    "next": "rc/maintenance",
    "devel": "rc/devel",
}
# rig channel a release is published on -> its target_commitish
_V1_COMMITISH = {
    "stable": "master",
    "maintenance": "rc/maintenance",
    "next": "rc/maintenance",
    "devel": "rc/devel",
}
_V2_COMMITISH = {"stable": "main", "maintenance": "next", "next": "next", "devel": "next"}


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
    return {"prerelease": True}


def target_commitish(release_channel: str, device_series: int = 1) -> str:
    """The commitish a release published on ``release_channel`` carries on GitHub."""
    table = _V1_COMMITISH if device_series == 1 else _V2_COMMITISH
    return table[release_channel]


def offered(release_channel: str, device_channel: str) -> bool:
    """Does a device on ``device_channel`` see a release published on ``release_channel``?"""
    if release_channel == "stable":
        return True  # final releases reach every channel
    if device_channel == "stable":
        return False
    if device_channel == "devel":
        return True
    return release_channel in ("maintenance", "next")
