"""The CHECKS phase hands a scenario's own check files to pytest after the built-in checks.

A whole pipeline on a loopback 'device' (a real SSH and HTTP server, tests/checks/devices.py)
with the generic profile over real SSH; only the card and power steps are no-ops, as there
is no card here (the virtual rig's run covers them: test_generic_virtual.py).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checks"))
from devices import PASSWORD, Device

from rig.events import EventBus, StepLog
from rig.orchestration.pipeline import DeviceKit, ScenarioPipeline
from rig.product.generic.profile import GenericProfile
from rig.product.profile import DeviceAddress, ScenarioContext

RELEASE = {
    "start_command": "echo {start_version} > VERSION",
    "update_command": "echo {target_version} > VERSION",
    "version_command": "cat VERSION",
}


class _Power:
    def off(self) -> None:
        pass

    def cycle(self) -> None:
        raise AssertionError("the device answered: no power cycle")


@pytest.fixture
def device(tmp_path):
    d = Device(tmp_path / "device")
    yield d
    d.stop()


def _run(tmp_path: Path, device: Device, check_source: str, checks=()):
    check = tmp_path / "matrix" / "checks" / "test_mine.py"
    check.parent.mkdir(parents=True)
    check.write_text(check_source)
    ctx = ScenarioContext(
        device=DeviceAddress(
            "pi3-x",
            "127.0.0.1",
            ssh_port=device.ssh.port,
            http_port=device.http_port,
            password=PASSWORD,
            host_keys="ignore",
        ),
        scenario_id="mine",
        channel="default",
        target_version="2.0.0",
        release_channel="default",
        expect="updated",
        checks=tuple(checks),
        results=tmp_path / "results",
        log=StepLog(),
        start_version="1.0.0",
        product="generic",
        release_options=RELEASE,
        user_checks=(check,),
    )
    kit = DeviceKit(
        "pi3-x",
        _Power(),
        None,
        "127.0.0.1",
        device.ssh.port,
        to_host=lambda log: tmp_path / "no-card",
        to_dut=lambda log: None,
        write=lambda disk, log: {},
        provision=lambda disk, log: {},
    )
    attempt = ScenarioPipeline(kit, ctx, GenericProfile(), EventBus()).run()
    return attempt, ctx


def test_user_checks_run_in_the_checks_phase_after_verify(tmp_path, device) -> None:
    attempt, ctx = _run(
        tmp_path,
        device,
        "def test_version(ssh, scenario, facts):\n"
        "    assert ssh.run('cat VERSION').stdout.strip() == scenario.target_version\n"
        "    assert facts['final_version'] == '2.0.0'\n",
    )
    assert attempt.outcome == "passed", attempt.message
    phases = [(p.phase, p.outcome) for p in attempt.phases]
    assert phases[5:9] == [("prepare", "ok"), ("update", "ok"), ("verify", "ok"), ("checks", "ok")]
    suite = ET.parse(ctx.results / "user-checks" / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")


def test_a_failed_user_check_fails_the_scenario(tmp_path, device) -> None:
    attempt, _ = _run(
        tmp_path,
        device,
        "def test_version(ssh):\n    assert ssh.run('cat VERSION').stdout.strip() == '3.0'\n",
    )
    assert attempt.outcome == "failed"
    assert "pi3-x: checks: user checks failed:" in attempt.message
    assert "FAILED test_mine.py::test_version" in attempt.message
    assert [p.outcome for p in attempt.phases if p.phase == "checks"] == ["failed"]
