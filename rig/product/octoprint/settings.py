"""The config profile that makes an OctoPrint install testable, and how it is applied.

Written as a deep-merge overlay into ``~/.octoprint/config.yaml`` by a tiny script
run with the device's own Python (PyYAML ships with OctoPrint), so every version
keeps the keys it already had (secret key, API keys) and gets ours on top. A
``None`` in the overlay deletes the key (e.g. ``prerelease_channel`` on stable).
"""

from __future__ import annotations

from typing import Any

from rig.product.octoprint.channels import channel_settings
from rig.product.octoprint.injection import PLUGIN_NAME

RESTART_COMMAND = "sudo service octoprint restart"

# wizards a fresh install would show, with the versions 1.9-1.11 ask for
SEEN_WIZARDS = {
    "corewizard": 4,
    "classicwebcam": 1,
    "softwareupdate": 1,
    "backup": None,
    "tracking": None,
    "file_check": 1,
}


def config_overlay(
    *,
    channel: str,
    device_version: str,
    pip: str | None,
    target_version: str,
    feed_url: str | None,
    plugin_packages: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What prepare merges into config.yaml for a scenario.

    ``plugin_packages`` maps a bundled plugin's check key to its package: its update
    installs from the package index, not the GitHub archive the plugin names (as
    OctoPrint's devtools rig overrides the check's pip URL)."""
    octoprint_check: dict[str, Any] = {
        **channel_settings(channel, device_version),
        "pip": pip or "OctoPrint=={target_version}",
    }
    checks: dict[str, Any] = {"octoprint": octoprint_check}
    for key, package in (plugin_packages or {}).items():
        checks[key] = {"pip": f"{package}=={{target_version}}"}
    softwareupdate: dict[str, Any] = {"checks": checks}
    plugins: dict[str, Any] = {
        "tracking": {"enabled": False},
        "announcements": {"enabled_channels": [], "forced_channels": []},
        "virtual_printer": {"enabled": True},
        "softwareupdate": softwareupdate,
    }
    if feed_url:
        feed = feed_url.rstrip("/")
        softwareupdate["check_overlay_url"] = f"{feed}/overlay.json"
        plugins[PLUGIN_NAME] = {"feed_url": feed}
        plugins["pluginmanager"] = {
            "repository": f"{feed}/plugins.json",
            "notices": f"{feed}/notices.json",
        }
        plugins["health_check"] = {"checks": {"python_eol": {"url": f"{feed}/python-eol"}}}
    return {
        "server": {
            "firstRun": False,
            "seenWizards": dict(SEEN_WIZARDS),
            "onlineCheck": {"enabled": False},
            "commands": {
                "serverRestartCommand": RESTART_COMMAND,
                "systemRestartCommand": "sudo shutdown -r now",
                "systemShutdownCommand": "sudo shutdown -h now",
            },
        },
        "plugins": plugins,
        # CSRF protection and the login rate limiter stay as a user has them (OctoPrint's
        # defaults: on): the rig tests the product, not a weakened copy of it. None deletes a
        # switch an older profile or a user's config turned off.
        "devel": {"enableRateLimiter": None, "enableCsrfProtection": None},
    }


def leave_overlay() -> dict[str, Any]:
    """What a card keeps of the rig after its run: nothing that points at the rig's feed.

    Merged before power-off so a card powered on again starts like a user's install of
    the same version and channel: OctoPrint's own release check, check overlay, plugin
    repository, notices, Python EOL table and announcements; the per-run admin password
    stays (known only to the person who ran it).
    """
    return {
        "plugins": {
            PLUGIN_NAME: None,
            "softwareupdate": {
                "check_overlay_url": None,
                "checks": {
                    key: {"pip": None}
                    for key in ("octoprint", "file_check", "firmware_check", "pi_support")
                },
            },
            "pluginmanager": {"repository": None, "notices": None},
            "health_check": {"checks": {"python_eol": {"url": None}}},
            "announcements": {"enabled_channels": None, "forced_channels": None},
        },
        "devel": {"enableRateLimiter": None, "enableCsrfProtection": None},
    }


# Runs on the device with OctoPrint's venv Python: merge a JSON overlay into config.yaml.
MERGE_SCRIPT = '''\
"""rig: merge a JSON overlay into OctoPrint's config.yaml (None deletes a key)."""
import json, os, sys, yaml

def merge(base, overlay):
    for key, value in overlay.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        elif isinstance(value, dict):
            merged = merge({}, value)
            if merged:  # deleting below a missing key creates nothing
                base[key] = merged
        else:
            base[key] = value
    return base

path, overlay_path = sys.argv[1], sys.argv[2]
config = {}
if os.path.exists(path):
    with open(path) as f:
        config = yaml.safe_load(f) or {}
with open(overlay_path) as f:
    merge(config, json.load(f))
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".rig-tmp", "w") as f:
    yaml.safe_dump(config, f, default_flow_style=False, allow_unicode=True)
os.replace(path + ".rig-tmp", path)
'''
