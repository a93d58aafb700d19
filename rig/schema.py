"""JSON Schema validation with located, human-sized messages.

Both rig.yaml and the test matrix are checked against shipped JSON Schemas so
that editors and the loader enforce the same rules; this turns jsonschema's
errors into ``(path, message)`` pairs such as ``scenarios[2].channel``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The packaged schema ``rig/schemas/<name>.schema.json``."""
    text = resources.files("rig").joinpath("schemas", f"{name}.schema.json").read_text()
    return json.loads(text)


def json_path(parts: Iterable[Any]) -> str:
    """``["scenarios", 2, "channel"]`` -> ``scenarios[2].channel``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(error: jsonschema.ValidationError) -> str:
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(
            set(error.instance) - set(error.schema.get("properties", {}))
            if isinstance(error.instance, dict)
            else []
        )
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key(s) {', '.join(map(repr, extra))} (allowed: {allowed})"
    if v == "required":
        return error.message.replace("is a required property", "is required")
    if v == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if v == "type":
        return f"must be {error.validator_value}, not {type(error.instance).__name__}"
    if v == "minItems" and error.validator_value == 1:
        return "must not be empty"
    if v in ("minimum", "maximum"):
        lo = error.schema.get("minimum")
        hi = error.schema.get("maximum")
        if lo is not None and hi is not None:
            return f"must be {lo}..{hi}, not {error.instance!r}"
    if v == "pattern":
        desc = error.schema.get("description") or f"must match {error.validator_value}"
        return f"{error.instance!r}: {desc}"
    if v in ("oneOf", "anyOf"):
        return f"{error.instance!r} is not valid here: " + (
            error.schema.get("description") or "see the schema"
        )
    return error.message


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For oneOf over tagged objects, report the branch that matches the tag."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        # prefer errors from the branch whose discriminator ("driver") matched
        by_branch: dict[int, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            by_branch.setdefault(sub.schema_path[0], []).append(sub)
        for subs in by_branch.values():
            if not any(s.validator == "const" for s in subs):
                return [leaf for s in subs for leaf in _leaf_errors(s)]
    return [error]


def _whole_string(node: Any) -> Any:
    """The schema with each ``pattern``'s final ``$`` as ``\\Z``: in ECMA regexes (editors)
    ``$`` ends the string, in Python's (jsonschema's ``re.search``) it also matches
    before a final newline, so ``"pi\\n"`` passed ``^[a-z]+$``."""
    if isinstance(node, dict):
        out = {k: _whole_string(v) for k, v in node.items()}
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith("\\$"):
            out["pattern"] = pattern[:-1] + "\\Z"
        return out
    if isinstance(node, list):
        return [_whole_string(v) for v in node]
    return node


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema composed at run time (the matrix's, from its profile)."""
    return Draft202012Validator(_whole_string(schema))


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    return validator_for(load_schema(schema_name))


def validate(instance: Any, schema: str | Draft202012Validator) -> list[tuple[str, str]]:
    """Every schema violation of ``instance`` as ``(json path, message)``, sorted by path.

    ``schema``: a packaged schema's name, or a validator from `validator_for`."""
    validator = _validator(schema) if isinstance(schema, str) else schema
    problems: list[tuple[str, str]] = []
    for error in validator.iter_errors(instance):
        for leaf in _leaf_errors(error):
            problems.append((json_path(leaf.absolute_path), _message(leaf)))
    return sorted(set(problems), key=lambda p: p[0])
