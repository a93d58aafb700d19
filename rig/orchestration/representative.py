"""Is a scenario's result representative of the real image?

A scenario on a device whose Python differs from the real image's (the virtual
OctoPi 0.18.0 runs Bullseye's 3.9 because Buster's 3.7 is no longer in the
archive) proves nothing about the real image for anything that depends on the
Python: which releases pip accepts, which wheels exist. Such a result is kept,
but marked in the table, the report and JUnit, never passed silently.
"""

from __future__ import annotations

from typing import Any


def _minor(version: str) -> str:
    return ".".join(str(version).split(".")[:2])


def not_representative(image_python: str | None, facts: dict[str, Any]) -> str:
    """Why the result does not stand for the real image ("" when it does or is unknown)."""
    seen = facts.get("system_python_version") or facts.get("python_version")
    if not image_python or not seen:
        return ""
    if _minor(seen) == _minor(image_python):
        return ""
    return (
        f"not representative: the device runs Python {_minor(seen)}, "
        f"the real image ships Python {_minor(image_python)}"
    )
