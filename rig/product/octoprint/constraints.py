"""What an OctoPrint release needs pinned to start today.

Old releases installed now pull dependencies newer than they were tested with
and die at start-up (1.9.x/1.10.x with limits >= 4: "Invalid rate limiting
strategy fixed-window-elastic-expiry"; 1.9.x with pydantic >= 1.10.13 on
Python 3.11, OctoPrint #4893). A starting state must pin what the image really
shipped; both the profile's prepare step and the virtual images use this table.
"""

from __future__ import annotations

from packaging.version import Version

# (lowest version, first version no longer needing it) -> requirement pins
_PINS: list[tuple[str, str, tuple[str, ...]]] = [
    ("1.9.0", "1.11.0", ("limits<4",)),
    ("1.9.0", "1.10.0", ("pydantic<1.10.13",)),
]


def constraints_for(version: str) -> list[str]:
    """Extra requirements that let OctoPrint ``version`` start with today's index."""
    v = Version(version)
    pins: list[str] = []
    for low, high, reqs in _PINS:
        if Version(low) <= v < Version(high):
            pins.extend(reqs)
    return pins


def requirements_for(version: str) -> list[str]:
    """The pip arguments that install ``version`` in a state that starts."""
    return [f"OctoPrint=={version}", *constraints_for(version)]
