"""The rig's pytest plugin as a user meets it: installed, standalone against a device.

Each case runs a real pytest in a subprocess, as a user's shell would, with the plugin
loaded from the installed entry point; the device is a real SSH and HTTP server on
loopback (devices.py) and the page a real Chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from devices import ADMIN_PASSWORD, PASSWORD, Device


def _pytest(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """pytest as a user runs it: installed plugins load, nothing of the rig's own suite."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")
        and not k.startswith("RIG_CHECK")
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **(env or {})},
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def device(tmp_path):
    d = Device(tmp_path / "device")
    yield d
    d.stop()


def test_a_session_that_does_not_use_it_is_left_alone(tmp_path) -> None:
    """Installed, the plugin adds options but reads nothing and imports nothing heavy;
    a fixture asked for without a device skips, saying how to name one."""
    _write(
        tmp_path / "test_other.py",
        """
        import sys

        def test_nothing_heavy_was_imported():
            heavy = ("playwright", "paramiko", "yaml", "rig.config")
            heavy = [m for m in heavy if m in sys.modules]
            assert not heavy, heavy

        def test_a_device_fixture_without_a_device(rig_device):
            pass
        """,
    )
    done = _pytest(tmp_path, "-rs", "test_other.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "no device under test: pass --rig-device NAME" in done.stdout
    # named explicitly as well (what `rig run` does), it is still one plugin
    again = _pytest(tmp_path, "-p", "rig.checks.plugin", "test_other.py")
    assert again.returncode == 0, again.stdout + again.stderr
    # and switched off by its name
    off = _pytest(tmp_path, "-p", "no:rig.checks.plugin", "test_other.py")
    assert off.returncode == 1 and "fixture 'rig_device' not found" in off.stdout


def test_an_unknown_device_is_a_usage_error_naming_the_config(tmp_path, device) -> None:
    config = device.rig_yaml(tmp_path / "rig.yaml")
    _write(tmp_path / "test_x.py", "def test_x(): pass\n")
    done = _pytest(tmp_path, "--rig-device", "pi9", "--rig-config", str(config), "test_x.py")
    assert done.returncode == 4  # pytest's usage error
    assert f"--rig-device pi9: {config}: no device 'pi9' (configured: dut)" in done.stderr


def test_standalone_against_a_device_of_rig_yaml(tmp_path, device) -> None:
    """`pytest --rig-device NAME` finds the device and its credentials in rig.yaml (here
    through $RIG_CONFIG, as `rig` finds it); ssh runs on the device, base_url is its web
    server, page is a real Chromium there."""
    config = device.rig_yaml(tmp_path / "rig.yaml")
    (device.home / "VERSION").write_text("4.2.0\n")
    _write(
        tmp_path / "mine" / "test_mine.py",
        f"""
        import httpx

        def test_address(rig_device, base_url):
            assert rig_device.name == "dut" and rig_device.host == "127.0.0.1"
            assert base_url == "http://127.0.0.1:{device.http_port}"

        def test_credentials(credentials):
            assert credentials.user == "pi" and credentials.password == {PASSWORD!r}
            assert credentials.admin_user == "boss"
            assert credentials.admin_password == {ADMIN_PASSWORD!r}
            assert {PASSWORD!r} not in repr(credentials)

        def test_ssh_runs_on_the_device(ssh):
            assert ssh.run("cat VERSION").stdout.strip() == "4.2.0"
            assert ssh.run("exit 7", check=False).exit_status == 7

        def test_http(base_url):
            assert "hello from the device" in httpx.get(base_url + "/").text

        def test_page(page):
            page.goto("/")
            assert page.locator("#hello").inner_text() == "hello from the device"

        def test_standalone_has_no_scenario(scenario, facts):
            assert scenario.id is None and facts == {{}}
        """,
    )
    done = _pytest(
        tmp_path,
        "--rig-device",
        "dut",
        "mine/",
        "--junitxml=junit.xml",
        env={"RIG_CONFIG": str(config)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["rig_device"] == "dut" and props["rig_host"] == "127.0.0.1"
    # nothing failed: no evidence kept
    assert not (tmp_path / "rig-results").exists()


def test_a_failed_page_check_leaves_its_screenshot_and_trace(tmp_path, device) -> None:
    config = device.rig_yaml(tmp_path / "rig.yaml")
    _write(
        tmp_path / "test_ui.py",
        """
        def test_passes(page):
            page.goto("/")

        def test_wrong_heading(page):
            page.goto("/")
            assert page.locator("#hello").inner_text() == "another heading"
        """,
    )
    done = _pytest(
        tmp_path,
        "--rig-device",
        "dut",
        "--rig-config",
        str(config),
        "--rig-results",
        "evidence",
        "test_ui.py",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    kept = sorted(
        p.relative_to(tmp_path / "evidence").as_posix()
        for p in (tmp_path / "evidence").rglob("*")
        if p.is_file()
    )
    assert kept == ["test_wrong_heading/screenshot.png", "test_wrong_heading/trace.zip"]
    shot = tmp_path / "evidence" / "test_wrong_heading" / "screenshot.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 1000


def test_an_unreachable_device_ends_the_session_as_could_not_start(tmp_path, device) -> None:
    config = device.rig_yaml(tmp_path / "rig.yaml")
    device.ssh.stop()
    _write(tmp_path / "test_s.py", "def test_s(ssh):\n    ssh.run('true')\n")
    done = _pytest(tmp_path, "--rig-device", "dut", "--rig-config", str(config), "test_s.py")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ssh fixture: dut (ssh pi@127.0.0.1:" in done.stdout + done.stderr
