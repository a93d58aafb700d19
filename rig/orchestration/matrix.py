"""The JSON test matrix: one release and the starting states that must reach it.

The packaged JSON Schema (also ``matrix/schema.json`` for editors) checks the
shape; this module adds what a schema cannot say (unique ids, images that exist,
a start version older than the release) and reports *every* problem at once.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from rig.card.catalog import CANDIDATE, Catalog, load_catalog
from rig.config import read_user_file
from rig.errors import ConfigError, ValidationErrors
from rig.schema import validate

CHANNELS = ("stable", "maintenance", "devel", "next")
DEFAULT_CHECKS = ("update", "smoke")


@dataclass(frozen=True)
class Release:
    version: str
    channel: str
    pip: str | None = None
    name: str | None = None
    plugins: dict[str, str] = field(default_factory=dict)  # bundled plugin key -> release


@dataclass(frozen=True)
class Scenario:
    id: str
    image: str
    channel: str
    checks: tuple[str, ...]
    expect: str = "updated"
    because: str | None = None  # with expect not-offered: channel | python | throttle
    model: str = "pi3"
    octoprint: str | None = None  # None: what the image ships
    device: str | None = None
    description: str = ""

    def start_version(self, catalog: Catalog, virtual: bool) -> str | None:
        if self.octoprint:
            return self.octoprint
        if self.image == CANDIDATE:
            return None
        return catalog.get(self.image).shipped_octoprint(virtual)


@dataclass(frozen=True)
class Matrix:
    path: Path
    release: Release
    scenarios: tuple[Scenario, ...]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def scenario(self, scenario_id: str) -> Scenario:
        for s in self.scenarios:
            if s.id == scenario_id:
                return s
        raise ConfigError(
            f"no scenario {scenario_id!r} (known: {', '.join(s.id for s in self.scenarios)})",
            where=str(self.path),
        )

    def command_line(self, scenario: Scenario) -> str:
        """The exact command that runs this scenario alone."""
        return shlex.join(["rig", "run", str(self.path), "--scenario", scenario.id])

    def up_command_line(self, scenario: Scenario) -> str:
        """The command that brings one device to this scenario's starting state and leaves it up."""
        return shlex.join(["rig", "up", str(self.path), "--scenario", scenario.id])


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def parse_json(text: str, where: str) -> Any:
    """JSON with the line and column of a syntax error, and duplicate keys refused."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON: {e.msg}", where=f"{where}:{e.lineno}:{e.colno}") from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply", where=where) from None
    except _DuplicateKey as e:
        raise ConfigError(
            f"invalid JSON: key {e} appears twice in one object", where=where
        ) from None


def load_matrix(path: str | Path, catalog: Catalog | None = None) -> Matrix:
    """Load, validate and expand defaults; raises ValidationErrors listing every problem."""
    source = Path(path)
    text = read_user_file(source)  # a FIFO, /dev/zero or a huge file: refused, not read
    data = parse_json(text, str(source))
    if not isinstance(data, dict):
        raise ValidationErrors(str(source), [("", "must be an object with release and scenarios")])
    # every problem at once: the schema's and those a schema cannot express (duplicate
    # ids, unknown images, ...), the latter checked on whatever parts are well-formed
    problems = validate(data, "matrix")
    catalog = catalog or load_catalog()
    flagged = {path for path, _ in problems}
    problems += [p for p in _semantic_problems(data, catalog) if p[0] not in flagged]
    if problems:
        raise ValidationErrors(str(source), problems)

    rel = data["release"]
    release = Release(
        rel["version"],
        rel["channel"],
        rel.get("pip"),
        rel.get("name"),
        dict(rel.get("plugins", {})),
    )
    defaults = data.get("defaults", {})
    scenarios = []
    for raw in data["scenarios"]:
        merged = {**defaults, **raw}
        scenarios.append(
            Scenario(
                id=merged["id"],
                image=merged["image"],
                channel=merged.get("channel", "stable"),
                checks=tuple(merged.get("checks", DEFAULT_CHECKS)),
                expect=merged.get("expect", "updated"),
                because=merged.get("because"),
                model=merged.get("model", "pi3"),
                octoprint=merged.get("octoprint"),
                device=merged.get("device"),
                description=merged.get("description", ""),
            )
        )
    return Matrix(source, release, tuple(scenarios), data.get("description", ""), data)


def _version(value: str, where: str, problems: list[tuple[str, str]]) -> Version | None:
    try:
        return Version(value)
    except InvalidVersion:
        problems.append((where, f"{value!r} is not a version (e.g. 1.10.3 or 1.11.0rc3)"))
        return None


def _semantic_problems(data: dict[str, Any], catalog: Catalog) -> list[tuple[str, str]]:
    """Checks beyond the schema; parts of the wrong shape are left to the schema's errors."""
    problems: list[tuple[str, str]] = []
    rel = data.get("release") if isinstance(data.get("release"), dict) else {}
    version = rel.get("version")
    release = _version(version, "release.version", problems) if isinstance(version, str) else None
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
    default_image = defaults.get("image")
    if (
        isinstance(default_image, str)
        and default_image != CANDIDATE
        and default_image not in catalog.images
    ):
        problems.append(("defaults.image", _unknown_image(default_image, catalog)))
    scenarios = data.get("scenarios") if isinstance(data.get("scenarios"), list) else []
    seen: dict[str, int] = {}
    for i, raw in enumerate(scenarios):
        if not isinstance(raw, dict):
            continue
        where = f"scenarios[{i}]"
        merged = {**defaults, **raw}
        sid = raw.get("id")
        if isinstance(sid, str):
            if sid in seen:
                problems.append(
                    (f"{where}.id", f"{sid!r} is already the id of scenarios[{seen[sid]}]")
                )
            seen.setdefault(sid, i)
        image = merged.get("image")
        if image is None:
            problems.append((f"{where}.image", "is required (here or in defaults)"))
        elif (
            isinstance(image, str)
            and image != CANDIDATE
            and image not in catalog.images
            and "image" in raw
        ):
            problems.append((f"{where}.image", _unknown_image(image, catalog)))
        checks = merged.get("checks")
        if isinstance(checks, list) and "plugin-updates" in checks and not rel.get("plugins"):
            problems.append(
                (
                    f"{where}.checks",
                    "plugin-updates needs plugin releases to inject: set release.plugins, "
                    'e.g. {"file_check": "2025.7.23"}',
                )
            )
        if merged.get("because") and merged.get("expect", "updated") != "not-offered":
            problems.append(
                (
                    f"{where}.because",
                    f"says why the release is not offered; set expect: not-offered "
                    f"(expect is {merged.get('expect', 'updated')!r})",
                )
            )
        start = merged.get("octoprint")
        if isinstance(start, str):
            v = _version(start, f"{where}.octoprint", problems)
            expect = merged.get("expect", "updated")
            if v is not None and release is not None and expect == "updated" and v >= release:
                problems.append(
                    (
                        f"{where}.octoprint",
                        f"{start} is not older than the release under test "
                        f"{version}: nothing to update",
                    )
                )
    return problems


def _unknown_image(name: str, catalog: Catalog) -> str:
    return f"{name!r} is not in the image catalogue (known: {', '.join(sorted(catalog.images))})"
