"""The generic profile's steps and matrix rules, with the same command lines a device runs.

The device is a home directory on this machine reached through LocalShell (bash, as
SSH would run them); the end-to-end run over real SSH on the virtual rig is in
tests/orchestration/test_generic_virtual.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rig.device.shell import LocalShell
from rig.errors import ConfigError, InfraError, ProductError
from rig.events import EventBus, StepLog
from rig.product import get_profile
from rig.product.generic.profile import GenericProfile, fill
from rig.product.profile import DeviceAddress, ScenarioContext

COMMANDS = {
    "version_command": "cat ~/app/VERSION",
    "update_command": "echo {target_version} > ~/app/new && mv ~/app/new ~/app/VERSION",
    "start_command": "mkdir -p ~/app && echo {start_version} > ~/app/VERSION",
}


def _ctx(tmp_path: Path, start: str | None = "1.0.0", **commands: str) -> ScenarioContext:
    ctx = ScenarioContext(
        device=DeviceAddress("local", "127.0.0.1"),
        scenario_id="one",
        channel="default",
        target_version="2.0.0",
        release_channel="default",
        expect="updated",
        checks=(),
        results=tmp_path / "results",
        log=StepLog(EventBus()),
        start_version=start,
        product="generic",
        release_options={**COMMANDS, **commands},
    )
    return ctx


@pytest.fixture
def profile(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return GenericProfile(shell_factory=lambda ctx: LocalShell(home, name=ctx.device.name))


def test_registered_under_its_name() -> None:
    p = get_profile("generic")
    assert isinstance(p, GenericProfile) and p.name == "generic"
    assert p.channels == ("default",) and p.start_key == "start" and dict(p.checks) == {}
    assert p.accepts_any_image and p.update_modes == ("command",)
    assert p.release_feed("2.0.0", "default", COMMANDS) is None


def test_start_update_verify_collect(tmp_path, profile) -> None:
    ctx = _ctx(tmp_path)
    profile.prepare(ctx)
    assert (tmp_path / "home" / "app" / "VERSION").read_text() == "1.0.0\n"
    assert ctx.facts["start_version"] == "1.0.0"
    profile.update(ctx)
    assert ctx.facts["update_exit"] == 0
    profile.verify(ctx)
    assert ctx.facts["final_version"] == "2.0.0"
    profile.collect(ctx)
    assert json.loads((ctx.results / "facts.json").read_text())["final_version"] == "2.0.0"


def test_a_failing_update_command_is_a_product_failure_with_its_output(tmp_path, profile) -> None:
    ctx = _ctx(tmp_path, update_command="echo 'E: no such version {target_version}' >&2; exit 100")
    profile.prepare(ctx)
    with pytest.raises(ProductError) as info:
        profile.update(ctx)
    assert "failed with exit 100" in info.value.message
    assert "E: no such version 2.0.0" in info.value.message


def test_an_update_that_leaves_another_version_fails_verify(tmp_path, profile) -> None:
    ctx = _ctx(tmp_path, update_command="echo 1.9.9 > ~/app/VERSION")
    profile.prepare(ctx)
    profile.update(ctx)
    with pytest.raises(
        ProductError, match=re.escape("reports '1.9.9' after the update, not the release")
    ):
        profile.verify(ctx)


def test_a_start_command_that_misses_the_start_is_infra(tmp_path, profile) -> None:
    ctx = _ctx(tmp_path, start_command="mkdir -p ~/app && echo 0.9 > ~/app/VERSION")
    with pytest.raises(
        InfraError, match=re.escape("reports '0.9', not the scenario's start '1.0.0'")
    ):
        profile.prepare(ctx)


def test_a_device_already_at_the_release_has_nothing_to_update(tmp_path, profile) -> None:
    (tmp_path / "home" / "app").mkdir()
    (tmp_path / "home" / "app" / "VERSION").write_text("2.0.0\n")
    with pytest.raises(ConfigError, match="already runs the release under test"):
        profile.prepare(_ctx(tmp_path, start=None))


def test_an_empty_version_is_said(tmp_path, profile) -> None:
    with pytest.raises(InfraError, match="version_command printed nothing"):
        profile.prepare(_ctx(tmp_path, start=None, version_command="true"))


def test_placeholders_are_quoted_and_the_shell_keeps_its_braces() -> None:
    command = "echo {target_version} ${HOME} {a,b} {start_version}"
    assert fill(command, target_version="1.0+rig", start_version="1 2") == (
        "echo 1.0+rig ${HOME} {a,b} '1 2'"
    )


def _problems(release: dict, scenarios: list[dict], defaults: dict | None = None):
    data = {
        "release": {"version": "2.0.0", "channel": "default", **release},
        "scenarios": scenarios,
    }
    if defaults:
        data["defaults"] = defaults
    return GenericProfile().matrix_problems(data)


def test_matrix_rules() -> None:
    assert _problems(COMMANDS, [{"id": "a", "image": "x", "start": "1.0.0"}]) == []
    missing = _problems({}, [{"id": "a", "image": "x"}])
    assert [p for p, _ in missing] == ["release.version_command", "release.update_command"]
    assert "is required by the generic profile" in missing[0][1]
    typo = _problems({**COMMANDS, "update_command": "install {target}"}, [])
    assert typo == [
        ("release.update_command", "unknown placeholder {target} (it may use {target_version})")
    ]
    no_start_command = {k: v for k, v in COMMANDS.items() if k != "start_command"}
    assert _problems(no_start_command, [{"id": "a", "start": "1.0"}])[0][0] == "scenarios[0].start"
    offered = _problems(COMMANDS, [{"id": "a", "expect": "not-offered"}])
    assert offered[0][0] == "scenarios[0].expect" and "only expect updated" in offered[0][1]
    # a problem of the defaults is said once, where it is
    twice = _problems(no_start_command, [{"id": "a"}, {"id": "b"}], defaults={"start": "1.0"})
    assert [p for p, _ in twice] == ["defaults.start"]


def test_no_built_in_checks(tmp_path, profile) -> None:
    with pytest.raises(ConfigError, match="no built-in check 'smoke'"):
        profile.check(_ctx(tmp_path), "smoke")
