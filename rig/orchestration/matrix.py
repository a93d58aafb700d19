"""The JSON test matrix: one release and the starting states that must reach it.

The release names its product (``release.product``, default octoprint); the
product's profile supplies the vocabulary: channels, checks, update modes and
its own keys, which the packaged product-neutral JSON Schema is completed with
(`schema_for`). This module adds what a schema cannot say (unique ids, images
that exist and are of the product, a start version older than the release, user
check files that exist) and reports *every* problem at once.
"""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from rig.card.catalog import CANDIDATE, Catalog, load_catalog
from rig.config import read_user_file
from rig.errors import ConfigError, ValidationErrors
from rig.product import DEFAULT_PRODUCT, PROFILES, get_profile
from rig.product.profile import Profile
from rig.schema import load_schema, validate, validator_for

# a checks entry naming the user's own pytest file or directory, not a built-in check
USER_CHECK = r"^(.*\.py|.*/.*)$"
# the neutral keys of a scenario; the rest are the profile's own (Scenario.options)
SCENARIO_KEYS = frozenset(
    ("id", "description", "image", "channel", "checks", "expect", "model", "device", "update")
)
RELEASE_KEYS = frozenset(("product", "version", "channel", "name"))


def is_user_check(entry: str) -> bool:
    """A checks entry that is a path to the user's own pytest checks."""
    return entry.endswith(".py") or "/" in entry


@dataclass(frozen=True)
class Release:
    version: str
    channel: str
    product: str = DEFAULT_PRODUCT
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the profile's own release keys


@dataclass(frozen=True)
class Scenario:
    id: str
    image: str
    channel: str
    checks: tuple[str, ...]  # the profile's built-in checks after the update
    expect: str = "updated"
    model: str = "pi3"
    start: str | None = None  # the start version the profile pins; None: what the image ships
    update_mode: str = ""  # one of the profile's update modes
    user_checks: tuple[Path, ...] = ()  # the user's own pytest files, absolute
    options: dict[str, Any] = field(default_factory=dict, compare=False)  # the profile's keys
    device: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Matrix:
    path: Path
    release: Release
    scenarios: tuple[Scenario, ...]
    profile: Profile = field(compare=False, repr=False)
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

    def start_version(self, scenario: Scenario, catalog: Catalog, virtual: bool) -> str | None:
        """The version the scenario starts from: pinned, else what the image ships."""
        if scenario.start:
            return scenario.start
        if scenario.image == CANDIDATE:
            return None
        return self.profile.start_version(catalog.get(scenario.image), virtual)

    def command_line(self, scenario: Scenario) -> str:
        """The exact command that runs this scenario alone."""
        return shlex.join(["rig", "run", str(self.path), "--scenario", scenario.id])

    def up_command_line(self, scenario: Scenario) -> str:
        """The command that brings one device to this scenario's starting state and leaves it up."""
        return shlex.join(["rig", "up", str(self.path), "--scenario", scenario.id])


@cache
def _schema(product: str) -> dict[str, Any]:
    return schema_for(get_profile(product))


def schema_for(profile: Profile) -> dict[str, Any]:
    """The packaged product-neutral schema completed with the profile's vocabulary."""
    schema = copy.deepcopy(load_schema("matrix"))
    defs = schema["$defs"]
    builtin = sorted({*profile.checks, *getattr(profile, "update_checks", {})})
    defs["channel"] = {"enum": list(profile.channels)}
    defs["update"] = {
        "enum": list(profile.update_modes),
        "description": f"how the update is done (default: {profile.update_modes[0]})",
    }
    yours = "your own pytest file or folder (ending in .py or with a /, relative to the matrix)"
    user_check = {"type": "string", "pattern": USER_CHECK}
    defs["check"] = (
        {
            "anyOf": [{"enum": builtin}, user_check],
            "description": f"a built-in check ({', '.join(builtin)}) or {yours}",
        }
        if builtin
        else {**user_check, "description": f"{profile.name} has no built-in checks: {yours}"}
    )
    schema["properties"]["release"]["properties"].update(profile.release_schema())
    own = profile.scenario_schema()
    schema["properties"]["defaults"]["properties"].update(own)
    defs["scenario"]["properties"].update(own)
    schema["title"] = f"rig test matrix ({profile.name})"
    return schema


@cache
def _validator(product: str) -> Any:
    return validator_for(_schema(product))


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
    rel = data.get("release") if isinstance(data.get("release"), dict) else {}
    product = rel.get("product", DEFAULT_PRODUCT)
    if not isinstance(product, str) or product not in PROFILES:
        known = ", ".join(sorted(PROFILES))
        raise ValidationErrors(
            str(source), [("release.product", f"{product!r} is not a product (known: {known})")]
        )
    profile = get_profile(product)
    # every problem at once: the schema's and those a schema cannot express (duplicate
    # ids, unknown images, ...), the latter checked on whatever parts are well-formed
    problems = validate(data, _validator(product))
    catalog = catalog or load_catalog()
    flagged = {path for path, _ in problems}
    semantic = _semantic_problems(data, catalog, profile, source.parent)
    semantic += profile.matrix_problems(data)
    problems += [p for p in semantic if p[0] not in flagged]
    if problems:
        raise ValidationErrors(str(source), problems)

    release = Release(
        version=rel["version"],
        channel=rel["channel"],
        product=product,
        name=rel.get("name"),
        options={k: v for k, v in rel.items() if k not in RELEASE_KEYS},
    )
    defaults = data.get("defaults", {})
    update_checks = getattr(profile, "update_checks", {})
    scenarios = []
    for raw in data["scenarios"]:
        merged = {**defaults, **raw}
        entries = list(merged.get("checks", profile.default_checks))
        # an old matrix chose the update mode with a check name ("update-api")
        legacy = [update_checks[c] for c in entries if c in update_checks]
        mode = merged.get("update") or next(
            (m for m in legacy if m != profile.update_modes[0]), profile.update_modes[0]
        )
        scenarios.append(
            Scenario(
                id=merged["id"],
                image=merged["image"],
                channel=merged.get("channel", profile.channels[0]),
                checks=tuple(c for c in entries if c not in update_checks and not is_user_check(c)),
                expect=merged.get("expect", "updated"),
                model=merged.get("model", "pi3"),
                start=merged.get(profile.start_key) if profile.start_key else None,
                update_mode=mode,
                user_checks=tuple(
                    (source.parent / c).resolve() for c in entries if is_user_check(c)
                ),
                options={k: v for k, v in merged.items() if k not in SCENARIO_KEYS},
                device=merged.get("device"),
                description=merged.get("description", ""),
            )
        )
    return Matrix(source, release, tuple(scenarios), profile, data.get("description", ""), data)


def _version(value: str, where: str, problems: list[tuple[str, str]]) -> Version | None:
    try:
        return Version(value)
    except InvalidVersion:
        problems.append((where, f"{value!r} is not a version (e.g. 1.10.3 or 1.11.0rc3)"))
        return None


def _semantic_problems(
    data: dict[str, Any], catalog: Catalog, profile: Profile, base: Path
) -> list[tuple[str, str]]:
    """Checks beyond the schema; parts of the wrong shape are left to the schema's errors."""
    problems: list[tuple[str, str]] = []
    rel = data.get("release") if isinstance(data.get("release"), dict) else {}
    version = rel.get("version")
    release = _version(version, "release.version", problems) if isinstance(version, str) else None
    defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
    default_image = defaults.get("image")
    if isinstance(default_image, str):
        problems += _image_problems("defaults.image", default_image, catalog, profile)
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
        elif isinstance(image, str) and "image" in raw:
            problems += _image_problems(f"{where}.image", image, catalog, profile)
        checks = merged.get("checks")
        if isinstance(checks, list):
            origin = f"{where}.checks" if "checks" in raw else "defaults.checks"
            for j, entry in enumerate(checks):
                if isinstance(entry, str) and is_user_check(entry) and not (base / entry).exists():
                    problems.append((f"{origin}[{j}]", f"no such check file {entry!r} (in {base})"))
        start = merged.get(profile.start_key) if profile.start_key else None
        if isinstance(start, str):
            v = _version(start, f"{where}.{profile.start_key}", problems)
            expect = merged.get("expect", "updated")
            if v is not None and release is not None and expect == "updated" and v >= release:
                problems.append(
                    (
                        f"{where}.{profile.start_key}",
                        f"{start} is not older than the release under test "
                        f"{version}: nothing to update",
                    )
                )
    return problems


def _image_problems(
    where: str, name: str, catalog: Catalog, profile: Profile
) -> list[tuple[str, str]]:
    """An image the catalogue does not know, or one of another product."""
    if name == CANDIDATE:
        return []
    if name not in catalog.images:
        return [(where, _unknown_image(name, catalog))]
    product = catalog.images[name].product
    if product and product != profile.name and not profile.accepts_any_image:
        return [
            (
                where,
                f"{name!r} is a {product} image, but the release is of {profile.name} "
                "(release.product)",
            )
        ]
    return []


def _unknown_image(name: str, catalog: Catalog) -> str:
    return f"{name!r} is not in the image catalogue (known: {', '.join(sorted(catalog.images))})"
