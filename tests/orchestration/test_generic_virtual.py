"""The generic profile end to end: `rig run` of a matrix that never names the product the
virtual Pis happen to ship, on the virtual rig, with the user's own check files.

Everything is the production path: power, mux, writer, provisioning, boot, real SSH to
the virtual Pis (rig/virtual/sshd.py), the generic profile's commands, the user checks
in a pytest subprocess with the rig's plugin, the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from rig.config import VIRTUAL_CONFIG, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "matrix" / "examples" / "generic.json"
CHECKS = REPO / "matrix" / "examples" / "checks"
# the tests' virtual Pis on addresses of their own (RIG_TEST_NET moves them)
TEST_NET = os.environ.get("RIG_TEST_NET", "127.0.77")
pytestmark = pytest.mark.slow


@pytest.fixture
def rig_yaml(tmp_path):
    devices = {
        name: {**dev, "host": f"{TEST_NET}.{20 + i}"}
        for i, (name, dev) in enumerate(VIRTUAL_CONFIG["devices"].items(), start=1)
    }
    path = tmp_path / "rig.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "devices": devices,
                "paths": {"state": str(tmp_path / "state"), "reports": str(tmp_path / "reports")},
                "virtual": {},
            }
        )
    )
    yield path
    from rig.virtual.hw.state import cleanup
    from rig.virtual.twin import stop_twin

    config = load_config(path)
    stop_twin(config)
    cleanup(config.paths.state / "virtual")


def _rig(config: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rig", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_example_matrix_never_names_the_product_the_images_ship() -> None:
    for path in (EXAMPLE, *CHECKS.rglob("*.py")):
        assert "octoprint" not in path.read_text().lower(), path


def test_the_example_matrix_passes_on_the_virtual_rig(rig_yaml, tmp_path) -> None:
    out = tmp_path / "report"
    proc = _rig(rig_yaml, "run", str(EXAMPLE), "--report-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] and [s["outcome"] for s in data["scenarios"]] == ["passed", "passed"]
    for s in data["scenarios"]:
        phases = [p["phase"] for p in s["attempts"][-1]["phases"]]
        assert phases[4:9] == ["boot", "prepare", "update", "verify", "checks"], phases
        assert s["facts"]["final_version"] == "2.0.0"
        assert s["facts"]["start_version"] == s["id"].rsplit("-", 1)[1]
        # the user's checks ran in the scenario, with their own junit in the report
        junit = out / "scenarios" / s["id"] / "user-checks" / "junit.xml"
        suite = ET.parse(junit).getroot().find("testsuite")
        assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0")
        assert suite.get("skipped") == "0"
        assert f"scenarios/{s['id']}/user-checks/junit.xml" in s["files"]
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "0"


def test_failed_user_checks_and_a_wrong_version_fail_their_scenarios(rig_yaml, tmp_path) -> None:
    """One scenario's own check fails (with a page: its screenshot reaches the report),
    the other's update leaves the wrong version: both product failures, exit 1."""
    matrix_dir = tmp_path / "matrix"
    shutil.copytree(CHECKS, matrix_dir / "checks")
    (matrix_dir / "checks" / "test_fails.py").write_text(
        "def test_the_page_says_hello(page):\n"
        "    page.set_content('<h1>goodbye</h1>')\n"
        "    assert page.locator('h1').inner_text() == 'hello'\n"
    )
    data = json.loads(EXAMPLE.read_text())
    data["scenarios"] = [
        {
            "id": "own-check-fails",
            "image": "octopi-1.1.0",
            "start": "1.4.0",
            "checks": ["checks/test_myapp.py", "checks/test_fails.py"],
        },
        {"id": "update-leaves-1.9", "image": "octopi-1.1.0", "start": "1.0.0"},
    ]
    # the second scenario's update "succeeds" but installs the wrong version
    data["release"]["update_command"] = (
        "if grep -q 1.0.0 ~/myapp/VERSION; then echo 1.9.0 > ~/myapp/VERSION; "
        "else echo {target_version} > ~/myapp/VERSION; fi"
    )
    (matrix_dir / "release.json").write_text(json.dumps(data))
    out = tmp_path / "report"
    proc = _rig(rig_yaml, "run", str(matrix_dir / "release.json"), "--report-dir", str(out))
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = {s["id"]: s for s in json.loads((out / "results.json").read_text())["scenarios"]}
    own = results["own-check-fails"]
    assert own["outcome"] == "failed" and len(own["attempts"]) == 1
    assert "user checks failed" in own["message"]
    assert "FAILED test_fails.py::test_the_page_says_hello" in own["message"]
    evidence = "scenarios/own-check-fails/user-checks/test_the_page_says_hello"
    assert f"{evidence}/screenshot.png" in own["files"]
    assert f"{evidence}/trace.zip" in own["files"]
    assert f'src="{evidence}/screenshot.png"' in (out / "report.html").read_text()
    wrong = results["update-leaves-1.9"]
    assert wrong["outcome"] == "failed"
    assert (
        "reports '1.9.0' after the update, not the release under test '2.0.0'" in (wrong["message"])
    )
    phases = [p["phase"] for p in wrong["attempts"][-1]["phases"]]
    assert "checks" not in phases  # nothing to check on a device that did not update
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == "2" and suite.get("errors") == "0"
    types = {f.get("type") for f in suite.iter("failure")}
    assert types == {"product-failure"}


def test_the_checks_run_standalone_against_a_device_left_up(rig_yaml, tmp_path) -> None:
    """`rig up` leaves a device at a scenario's start; `pytest --rig-device` runs the same
    check file against it, finding the device and its user in rig.yaml."""
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rig",
            "--config",
            str(rig_yaml),
            "up",
            str(EXAMPLE),
            "--scenario",
            "bookworm-from-1.4.0",
            "--device",
            "pi3-a",
            "--report-dir",
            str(tmp_path / "up"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        for line in up.stdout:
            lines.append(line)
            if "rig down pi3-a" in line:
                break
        assert up.poll() is None, "".join(lines)
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-rs",
                "--rig-device",
                "pi3-a",
                "--rig-config",
                str(rig_yaml),
                str(CHECKS),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3 passed, 1 skipped" in done.stdout
        assert "standalone: no scenario, no facts" in done.stdout
        down = _rig(rig_yaml, "down", "pi3-a", timeout=400)
        assert down.returncode == 0, down.stdout + down.stderr
        up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, "".join(lines)
