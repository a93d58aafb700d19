"""What a matrix may say about OctoPrint: channels, checks, update modes, its own keys.

The matrix loader and the schema read this; nothing outside the profile names a
channel or a check. Light on imports, so validating a matrix loads no HTTP or SSH.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# the update channels OctoPrint's software update plugin knows (settings.py's
# checks.octoprint.prerelease_channels plus stable)
CHANNELS = ("stable", "maintenance", "devel", "next")

# built-in checks and a Pi 3's seconds for each (shared/reference magnitudes)
CHECKS: Mapping[str, float] = MappingProxyType(
    {
        "smoke": 120,
        "octoprint-e2e": 300,
        "plugin-updates": 180,  # a pip install of one small plugin and a restart
    }
)

# older matrices chose the update mode by a check name; they keep working
UPDATE_CHECKS: Mapping[str, str] = MappingProxyType({"update": "browser", "update-api": "api"})

BECAUSE = ("channel", "python", "throttle")

PLUGIN_KEYS = ("file_check", "firmware_check", "pi_support")


class OctoPrintVocabulary:
    """The OctoPrint profile's matrix vocabulary (its class attributes and schema)."""

    title = "OctoPrint"  # how messages name the product
    channels = CHANNELS
    checks = CHECKS
    update_checks = UPDATE_CHECKS
    default_checks = ("update", "smoke")
    update_modes = ("browser", "api")  # the Software Update dialog in Chromium, or its API
    start_key = "octoprint"
    accepts_any_image = False
    phase_seconds: Mapping[str, float] = MappingProxyType(
        {"prepare": 60, "prepare-pinned": 240, "update": 240}
    )

    def scenario_schema(self) -> dict[str, Any]:
        return {
            "octoprint": {
                "$ref": "#/$defs/version",
                "description": "the OctoPrint version to pin before the update; "
                "default: what the image ships",
            },
            "because": {
                "enum": list(BECAUSE),
                "description": "why the release must not reach the device (with expect: "
                "not-offered): its channel filters it out, the device's Python environment "
                "rules it out, or the device is throttled (under-voltage) and refuses",
            },
        }

    def release_schema(self) -> dict[str, Any]:
        return {
            "pip": {
                "type": "string",
                "minLength": 1,
                "description": "where the release installs from, e.g. "
                "https://example.org/OctoPrint-{target_version}.zip; default: the package index",
            },
            "plugins": {
                "type": "object",
                "description": "bundled plugin releases the feed offers under each plugin's "
                'own repository, by check key, e.g. {"file_check": "2025.7.23"}; scenarios '
                "test them with the check plugin-updates",
                "additionalProperties": False,
                "properties": {key: {"$ref": "#/$defs/version"} for key in PLUGIN_KEYS},
            },
        }

    def matrix_problems(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """pip that is neither URL nor requirement; plugin-updates without plugins; a because
        without expect: not-offered."""
        problems: list[tuple[str, str]] = []
        rel = data.get("release") if isinstance(data.get("release"), dict) else {}
        pip = rel.get("pip")
        if (
            isinstance(pip, str)
            and "{target_version}" not in pip
            and "://" not in pip
            and "==" not in pip
        ):
            problems.append(
                (
                    "release.pip",
                    f"{pip!r} is neither a URL nor a requirement; use e.g. "
                    "'OctoPrint=={target_version}' or an archive URL",
                )
            )
        defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
        scenarios = data.get("scenarios") if isinstance(data.get("scenarios"), list) else []
        for i, raw in enumerate(scenarios):
            if not isinstance(raw, dict):
                continue
            merged = {**defaults, **raw}
            checks = merged.get("checks")
            if isinstance(checks, list) and "plugin-updates" in checks and not rel.get("plugins"):
                problems.append(
                    (
                        f"scenarios[{i}].checks",
                        "plugin-updates needs plugin releases to inject: set release.plugins, "
                        'e.g. {"file_check": "2025.7.23"}',
                    )
                )
            expect = merged.get("expect", "updated")
            if merged.get("because") and expect != "not-offered":
                problems.append(
                    (
                        f"scenarios[{i}].because",
                        "says why the release is not offered; set expect: not-offered "
                        f"(expect is {expect!r})",
                    )
                )
        return problems

    def start_version(self, image: Any, virtual: bool) -> str | None:
        """What a fresh card runs: the catalogue's version (the virtual recipe's there)."""
        return image.shipped_version(virtual)
