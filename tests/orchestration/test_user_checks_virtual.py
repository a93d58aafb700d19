"""A user's own check file next to the OctoPrint profile's built-in ones, inside `rig run` on
the virtual rig: the check logs in with the run's generated admin password (handed over in
the context file, never printed) over the API and in the rig's Chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from rig.config import VIRTUAL_CONFIG, load_config

TEST_NET = os.environ.get("RIG_TEST_NET", "127.0.77")
pytestmark = pytest.mark.slow

CHECK = """
import httpx


def test_the_admin_logs_in_over_the_api(base_url, credentials, facts, scenario):
    with httpx.Client(base_url=base_url, timeout=60) as http:
        http.get("/")  # the CSRF cookie, which the login must echo (protection stays on)
        csrf = next(v for k, v in http.cookies.items() if k.startswith("csrf_token"))
        login = http.post(
            "/api/login",
            json={"user": credentials.admin_user, "pass": credentials.admin_password},
            headers={"X-CSRF-Token": csrf},
        )
        assert login.status_code == 200, login.text
        version = http.get("/api/version", headers={"X-CSRF-Token": csrf})
    assert version.json()["server"] == scenario.target_version == facts["final_version"]


def test_the_login_page_in_the_browser(page, credentials):
    page.goto("/", wait_until="domcontentloaded", timeout=300_000)
    page.locator("#login-user").fill(credentials.admin_user)
    page.locator("#login-password").fill(credentials.admin_password)
    page.locator("#login-button").click()
    page.locator("#navbar").wait_for(timeout=300_000)
"""


@pytest.fixture
def rig_yaml(tmp_path):
    devices = {
        name: {**dev, "host": f"{TEST_NET}.{40 + i}"}
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


def test_a_user_check_beside_the_octoprint_profile(rig_yaml, tmp_path) -> None:
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "test_admin.py").write_text(textwrap.dedent(CHECK))
    matrix = tmp_path / "release.json"
    matrix.write_text(
        json.dumps(
            {
                "release": {
                    "version": "1.11.8",
                    "channel": "maintenance",
                    "pip": "OctoPrint=={target_version}",
                },
                "scenarios": [
                    {
                        "id": "own-check",
                        "image": "octopi-1.1.0",
                        "channel": "maintenance",
                        "update": "api",
                        "checks": ["checks/test_admin.py"],
                    }
                ],
            }
        )
    )
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "rig", "--config", str(rig_yaml), "run", str(matrix)),
            *("--report-dir", str(out), "--device", "pi3-a"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = out / "scenarios" / "own-check" / "user-checks"
    suite = ET.parse(results / "junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    # the password was generated for this run: the check got it, no file of the report has it
    data = json.loads((out / "results.json").read_text())
    assert data["scenarios"][0]["outcome"] == "passed"
    assert not list(Path(out).rglob("context.json"))
