"""The matrix loader: good matrices load, every bad one exits 2 with a located message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.card.catalog import load_catalog
from rig.cli import main
from rig.errors import ConfigError, ValidationErrors
from rig.orchestration.matrix import load_matrix

REPO = Path(__file__).resolve().parents[2]
GOOD = [REPO / "matrix" / "demo.json", *sorted((REPO / "matrix" / "examples").glob("*.json"))]


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_shipped_matrices_load(path: Path) -> None:
    matrix = load_matrix(path)
    assert matrix.scenarios
    catalog = load_catalog()
    for s in matrix.scenarios:
        assert s.image in catalog.images
        assert s.update_mode in matrix.profile.update_modes, s.id
        assert set(s.checks) <= set(matrix.profile.checks), s.id


def test_demo_has_three_scenarios_with_defaults_applied() -> None:
    m = load_matrix(REPO / "matrix" / "demo.json")
    assert len(m.scenarios) >= 3
    first = m.scenarios[0]
    # the old check name "update" chose the update mode; it is no check of its own
    assert first.checks == ("smoke",)
    assert first.update_mode == "browser"
    assert m.scenario("octopi-0.18.0-stable-not-offered").update_mode == "api"
    assert first.model == "pi3"
    assert any(s.expect == "not-offered" for s in m.scenarios)


def test_example_is_a_realistic_release_matrix() -> None:
    m = load_matrix(REPO / "matrix" / "examples" / "octoprint-1.11.0rc3.json")
    assert 8 <= len(m.scenarios) <= 10
    assert {s.image for s in m.scenarios} == {"octopi-0.18.0", "octopi-1.0.0", "octopi-1.1.0"}
    assert {"stable", "maintenance", "devel"} <= {s.channel for s in m.scenarios}


BASE = {
    "release": {"version": "1.11.0rc3", "channel": "maintenance"},
    "scenarios": [
        {"id": "a", "image": "octopi-1.0.0", "octoprint": "1.10.3", "channel": "maintenance"}
    ],
}


def _with(**changes):
    data = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        target = data
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = keys[-1]
        if value is _DELETE:
            del target[last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return json.dumps(data)


_DELETE = object()

# (name, file text, the JSON path the message must name, a word the message must contain)
BAD = [
    ("malformed", '{"release": {"version": "1.0",}', ":1:", "invalid JSON"),
    ("not-object", "[]", "(top)", "object"),
    ("no-release", _with(release=_DELETE), "(top)", "release"),
    ("no-scenarios", _with(scenarios=_DELETE), "(top)", "scenarios"),
    ("empty-scenarios", _with(scenarios=[]), "scenarios", "empty"),
    ("unknown-top-key", _with(relase={}), "(top)", "relase"),
    ("unknown-scenario-key", _with(scenarios__0__chanel="stable"), "scenarios[0]", "chanel"),
    ("unknown-channel", _with(scenarios__0__channel="beta"), "scenarios[0].channel", "beta"),
    ("release-channel", _with(release__channel="rc"), "release.channel", "rc"),
    ("bad-version", _with(release__version="one.two"), "release.version", "version"),
    (
        "bad-start-version",
        _with(scenarios__0__octoprint="1.10.x"),
        "scenarios[0].octoprint",
        "version",
    ),
    ("version-type", _with(release__version=1.11), "release.version", "string"),
    ("unknown-image", _with(scenarios__0__image="octopi-9.9.9"), "scenarios[0].image", "catalogue"),
    ("bad-expect", _with(scenarios__0__expect="maybe"), "scenarios[0].expect", "not-offered"),
    ("bad-because", _with(scenarios__0__because="luck"), "scenarios[0].because", "throttle"),
    (
        "because-needs-not-offered",
        _with(scenarios__0__because="python", scenarios__0__expect="updated"),
        "scenarios[0].because",
        "expect: not-offered",
    ),
    ("bad-check", _with(scenarios__0__checks=["update", "fly"]), "scenarios[0].checks[1]", "fly"),
    ("checks-type", _with(scenarios__0__checks="smoke"), "scenarios[0].checks", "array"),
    ("bad-id", _with(scenarios__0__id="Has Spaces"), "scenarios[0].id", "lower case"),
    ("no-image", _with(scenarios__0__image=_DELETE), "scenarios[0].image", "required"),
    ("not-older", _with(scenarios__0__octoprint="1.11.0"), "scenarios[0].octoprint", "not older"),
    ("duplicate-key", '{"release": {"version": "1", "version": "2"}}', "", "twice"),
    ("bad-model", _with(scenarios__0__model="pi2"), "scenarios[0].model", "pi3"),
    ("bad-pip", _with(release__pip="just some words"), "release.pip", "URL"),
]


@pytest.mark.parametrize(("name", "text", "where", "word"), BAD, ids=[b[0] for b in BAD])
def test_bad_matrix_is_located(tmp_path, capsys, name, text, where, word) -> None:
    f = tmp_path / f"{name}.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_matrix(f)
    message = str(info.value)
    assert where in message, message
    assert word.lower() in message.lower(), message
    assert main(["matrix", "validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and word.lower() in err.lower()


def test_duplicate_ids_name_both(tmp_path) -> None:
    data = json.loads(_with())
    data["scenarios"].append(dict(data["scenarios"][0]))
    f = tmp_path / "dup.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValidationErrors) as info:
        load_matrix(f)
    assert ("scenarios[1].id", "'a' is already the id of scenarios[0]") in info.value.problems


def test_every_error_is_reported_at_once(tmp_path) -> None:
    data = json.loads(_with(scenarios__0__channel="beta"))
    data["release"]["version"] = "x"
    data["scenarios"].append({"id": "b", "image": "nope"})
    f = tmp_path / "many.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValidationErrors) as info:
        load_matrix(f)
    paths = {p for p, _ in info.value.problems}
    assert {"release.version", "scenarios[0].channel"} <= paths


def test_semantic_errors_are_all_reported(tmp_path) -> None:
    data = json.loads(_with())
    data["scenarios"].append({"id": "a", "image": "nope"})
    data["scenarios"].append({"id": "c", "image": "octopi-1.0.0", "octoprint": "2.0.0"})
    f = tmp_path / "sem.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValidationErrors) as info:
        load_matrix(f)
    paths = [p for p, _ in info.value.problems]
    assert paths == ["scenarios[1].id", "scenarios[1].image", "scenarios[2].octoprint"]


def test_show_prints_table_and_command_lines(capsys) -> None:
    path = str(REPO / "matrix" / "demo.json")
    assert main(["matrix", "show", path]) == 0
    out = capsys.readouterr().out
    m = load_matrix(path)
    for s in m.scenarios:
        assert s.id in out
        assert f"rig run {path} --scenario {s.id}" in out


def test_show_markdown_and_json(capsys) -> None:
    path = str(REPO / "matrix" / "demo.json")
    assert main(["matrix", "show", path, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| id | device | image |" in md
    assert md.count("- [ ] `rig run") == len(load_matrix(path).scenarios)
    assert main(["matrix", "show", path, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["release"]["version"] == "1.11.8"
    assert data["scenarios"][0]["command"].startswith("rig run ")


def test_start_version_comes_from_the_image_when_not_pinned(capsys) -> None:
    path = str(REPO / "matrix" / "demo.json")
    main(["matrix", "show", path, "--format", "json"])
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["scenarios"]}
    catalog = load_catalog()
    assert rows["octopi-1.1.0-devel"]["start"] == (
        catalog.get("octopi-1.1.0").virtual.version + " (image)"
    )


def test_missing_file_is_a_usage_error(capsys, tmp_path) -> None:
    assert main(["matrix", "validate", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_schema_and_semantic_errors_are_reported_together(tmp_path) -> None:
    """A wrong channel (schema) and a duplicate id plus an unknown image (semantics) in one
    file: the user sees all three in one go, not the second kind after fixing the first."""
    data = json.loads(_with(scenarios__0__channel="beta"))
    data["scenarios"].append({"id": "a", "image": "no-such-image"})
    f = tmp_path / "mixed.json"
    f.write_text(json.dumps(data))
    with pytest.raises(ValidationErrors) as info:
        load_matrix(f)
    paths = [p for p, _ in info.value.problems]
    assert "scenarios[0].channel" in paths
    assert "scenarios[1].id" in paths and "scenarios[1].image" in paths


def test_semantic_checks_survive_a_malformed_matrix(tmp_path) -> None:
    """Wrong types everywhere are the schema's to report; the semantic pass must not crash."""
    f = tmp_path / "types.json"
    f.write_text(
        json.dumps(
            {
                "release": {"version": 11, "channel": "stable", "pip": 3},
                "defaults": [],
                "scenarios": [7, {"id": 5, "image": ["x"], "octoprint": 1}],
            }
        )
    )
    with pytest.raises(ValidationErrors) as info:
        load_matrix(f)
    assert len(info.value.problems) >= 4
    assert all(what for _, what in info.value.problems)


def test_matrix_validate_refuses_what_is_not_a_small_regular_file(tmp_path, capsys):
    """A FIFO (hung main), /dev/zero (read forever), 100k-deep JSON (RecursionError), a
    directory, a 5 MB file, bytes that are not UTF-8: each a located exit 2, at once."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "matrix.fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    big = tmp_path / "big.json"
    big.write_text(" " * (5 << 20) + "{}")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"release": "\xe9"}')
    cases = {
        fifo: "not a regular file",
        Path("/dev/zero"): "not a regular file",
        deep: "nested too deeply",
        tmp_path: "not a regular file",
        big: "larger than",
        latin: "not UTF-8",
    }
    for path, why in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "rig", "matrix", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, (path, done.stderr[-300:])
        assert why in done.stderr and str(path) in done.stderr, (path, done.stderr[-300:])
        assert "Traceback" not in done.stderr
