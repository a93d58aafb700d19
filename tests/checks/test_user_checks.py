"""A scenario's own check files inside a run: the pytest subprocess, its context, its verdict.

The device is a real SSH and HTTP server on loopback (devices.py); the checks run in a
real pytest subprocess with the rig's plugin, exactly as the CHECKS phase runs them.
"""

from __future__ import annotations

import stat
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from devices import ADMIN_PASSWORD, PASSWORD, Device

from rig.checks.context import Credentials, read_handed_over
from rig.checks.run import run_user_checks
from rig.errors import ConfigError, InfraError, ProductError
from rig.events import EventBus, StepLog
from rig.product.profile import DeviceAddress, ScenarioContext


@pytest.fixture
def device(tmp_path):
    d = Device(tmp_path / "device")
    yield d
    d.stop()


def _ctx(device: Device, results: Path, lines: list[str]) -> ScenarioContext:
    bus = EventBus()
    bus.subscribe(lambda e: lines.append(e.message))
    return ScenarioContext(
        device=DeviceAddress(
            "pi3-x",
            "127.0.0.1",
            ssh_port=device.ssh.port,
            http_port=device.http_port,
            user="pi",
            password=PASSWORD,
            host_keys="ignore",
        ),
        scenario_id="from-4-1-to-4-2",
        channel="default",
        target_version="4.2.0",
        release_channel="default",
        expect="updated",
        checks=(),
        results=results,
        log=StepLog(bus, device="pi3-x", scenario="from-4-1-to-4-2"),
        start_version="4.1.0",
        admin_user="boss",
        admin_password=ADMIN_PASSWORD,
        facts={"final_version": "4.2.0", "boot_seconds": 1.5},
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_passing_checks_see_the_scenario_and_leave_junit(tmp_path, device) -> None:
    (device.home / "VERSION").write_text("4.2.0\n")
    seen = tmp_path / "seen-context"
    checks = tmp_path / "matrix" / "checks"
    _write(
        checks / "conftest.py",
        """
        import pytest

        @pytest.fixture
        def installed(ssh):
            return ssh.run("cat VERSION").stdout.strip()
        """,
    )
    first = _write(
        checks / "test_version.py",
        f"""
        import os, stat
        from pathlib import Path

        def test_the_device_runs_the_target(installed, scenario):
            assert installed == scenario.target_version == "4.2.0"

        def test_the_scenario_and_its_facts(scenario, facts, credentials, rig_device):
            assert scenario.id == "from-4-1-to-4-2" and scenario.start_version == "4.1.0"
            assert facts["final_version"] == "4.2.0"
            assert (credentials.user, credentials.password) == ("pi", {PASSWORD!r})
            assert credentials.admin_password == {ADMIN_PASSWORD!r}
            assert rig_device.name == "pi3-x"

        def test_the_context_file_is_private():
            path = Path(os.environ["RIG_CHECK_CONTEXT"])
            Path({str(seen)!r}).write_text(str(path))
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        """,
    )
    second = _write(
        checks / "web" / "test_web.py",
        """
        import httpx

        def test_home_page(base_url):
            assert httpx.get(base_url + "/").status_code == 200
        """,
    )
    lines: list[str] = []
    ctx = _ctx(device, tmp_path / "results", lines)
    junit = run_user_checks(ctx, (first, second.parent))  # a file and a folder of them
    assert junit == tmp_path / "results" / "user-checks" / "junit.xml"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0")
    # the context was handed over in a private file, gone once the suite ended
    handed = Path(seen.read_text())
    assert handed.name == "context.json" and not handed.exists() and not handed.parent.exists()
    assert not list((tmp_path / "results").rglob("context.json"))
    assert any("user checks: pytest exit 0" in line for line in lines)


def test_a_failed_check_is_a_product_failure_without_the_passwords(tmp_path, device) -> None:
    check = _write(
        tmp_path / "checks" / "test_fails.py",
        """
        def test_reads_the_wrong_version(ssh, credentials):
            print("password is", credentials.password, credentials.admin_password)
            assert ssh.run("echo 4.1.0").stdout.strip() == "4.2.0"

        def test_page_is_wrong(page):
            page.goto("/")
            assert page.title() == "not the device"
        """,
    )
    ctx = _ctx(device, tmp_path / "results", [])
    with pytest.raises(ProductError) as info:
        run_user_checks(ctx, (check,))
    assert info.value.exit_code == 1
    message = info.value.message
    assert message.startswith("user checks failed:")
    assert "FAILED test_fails.py::test_reads_the_wrong_version" in message
    assert "test_page_is_wrong" in message
    out = tmp_path / "results" / "user-checks"
    log = (out / "pytest.log").read_text()
    assert "password is *** ***" in log
    assert PASSWORD not in log and ADMIN_PASSWORD not in log
    assert (out / "test_page_is_wrong" / "screenshot.png").stat().st_size > 1000
    assert (out / "test_page_is_wrong" / "trace.zip").stat().st_size > 1000
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "2"


def test_a_check_file_that_does_not_import_is_infra_with_the_cause(tmp_path, device) -> None:
    check = _write(tmp_path / "checks" / "test_broken.py", "import no_such_module_here\n")
    with pytest.raises(InfraError) as info:
        run_user_checks(_ctx(device, tmp_path / "results", []), (check,))
    assert info.value.exit_code == 3
    assert "the user checks could not run (exit 2)" in info.value.message
    assert "No module named 'no_such_module_here'" in info.value.message


def test_an_unreachable_device_is_infra_not_a_failed_check(tmp_path, device) -> None:
    check = _write(tmp_path / "checks" / "test_s.py", "def test_s(ssh):\n    ssh.run('true')\n")
    device.ssh.stop()
    with pytest.raises(InfraError) as info:
        run_user_checks(_ctx(device, tmp_path / "results", []), (check,))
    assert "(exit 3)" in info.value.message and "ssh fixture: pi3-x" in info.value.message


def test_a_context_file_others_can_read_is_refused(tmp_path) -> None:
    path = tmp_path / "context.json"
    path.write_text("{}")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_handed_over(path)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a check context"):
        read_handed_over(path)


def test_credentials_never_show_their_passwords() -> None:
    shown = repr(Credentials("pi", "secret-1", admin_password="secret-2"))
    assert "secret" not in shown and "'pi'" in shown
    assert stat.S_IMODE(0o600) == 0o600
