"""Files the rig installs on the device (read with importlib.resources, never imported here)."""

from __future__ import annotations

from importlib.resources import files

PLUGIN_NAME = "rig_release_injection"


def plugin_source() -> str:
    """The single-file OctoPrint plugin that points the release check at the rig's feed."""
    return files(__package__).joinpath(f"{PLUGIN_NAME}.py").read_text()
