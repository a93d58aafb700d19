"""The smoke check when it cannot start: an infrastructure error that says why, in one line.

Nothing here needs an OctoPrint: each case fails before the first page is loaded, which is
exactly what a fresh machine without pytest, without a browser, or with a clashing pytest
plugin did (exit 1 'smoke checks failed:' with nothing after the colon, before).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rig.errors import InfraError
from rig.product.octoprint.e2e import run_smoke

REPO = Path(__file__).resolve().parents[2]
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers


def test_without_pytest_the_check_is_an_infra_error_naming_it(tmp_path) -> None:
    """A real interpreter without pytest (a venv without pip or packages) runs the check."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    script = textwrap.dedent(
        f"""
        from rig.errors import InfraError
        from rig.product.octoprint.e2e import run_smoke
        try:
            run_smoke({NOWHERE!r}, user="admin", password="pw", results={str(tmp_path / "r")!r})
        except InfraError as e:
            print("INFRA", e.exit_code, e.message)
        """
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.startswith("INFRA 3 "), done.stdout + done.stderr
    assert "pytest is not installed" in done.stdout


def _clashing_plugin(tmp_path: Path) -> Path:
    """An installed pytest plugin (entry point in a dist-info) that adds its own --headed,
    as pytest-playwright does."""
    site = tmp_path / "site"
    dist = site / "clashing_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clashing-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nclash = clashing_plugin\n")
    (site / "clashing_plugin.py").write_text(
        "def pytest_addoption(parser):\n    parser.addoption('--headed', action='store_true')\n"
    )
    return site


def test_the_plugin_double_really_clashes_with_the_suite(tmp_path, monkeypatch) -> None:
    """Without isolation the plugin breaks the suite's option parsing: the double is real."""
    site = _clashing_plugin(tmp_path)
    suite = REPO / "rig" / "product" / "octoprint" / "e2e" / "test_smoke.py"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(suite),
            "-p",
            "no:cacheprovider",
            "--co",
            "-q",
            f"--octoprint-url={NOWHERE}",
        ],
        capture_output=True,
        text=True,
        env={**_env_without_autoload_flag(), "PYTHONPATH": str(site)},
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "--headed" in said and "dest 'headed'" in said, said


def _env_without_autoload_flag() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}


def test_installed_plugins_do_not_reach_the_suite_and_no_browser_is_infra(
    tmp_path, monkeypatch
) -> None:
    """With the clashing plugin installed and no browser: the suite still starts (our
    conftest runs), and the missing browser ends it as an infrastructure error with the
    cause in one line."""
    monkeypatch.setenv("PYTHONPATH", str(_clashing_plugin(tmp_path)))
    monkeypatch.setenv("RIG_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(InfraError) as info:
        run_smoke(NOWHERE, user="admin", password="pw", results=tmp_path / "r", timeout=120)
    message = info.value.message
    assert "no-such-chromium" in message and "does not exist" in message
    assert "headed" not in message
    assert info.value.exit_code == 3
    assert (tmp_path / "r" / "pytest.log").read_text()


def test_a_suite_that_cannot_be_collected_is_infra_with_the_cause(tmp_path, monkeypatch) -> None:
    """PYTEST_ADDOPTS from a developer's shell must not reach the suite either."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "--no-such-option")
    monkeypatch.setenv("RIG_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(InfraError) as info:
        run_smoke(NOWHERE, user="admin", password="pw", results=tmp_path / "r", timeout=120)
    assert "no-such-option" not in info.value.message
    assert "no-such-chromium" in info.value.message


def test_octoprint_own_suite_without_node_is_infra_naming_it(tmp_path, monkeypatch) -> None:
    from rig.product.octoprint.upstream import run_upstream

    suite = tmp_path / "OctoPrint" / "tests" / "playwright"
    suite.mkdir(parents=True)
    (suite / "playwright.config.js").write_text("module.exports = {};\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a machine without Node.js
    with pytest.raises(InfraError) as info:
        run_upstream(
            NOWHERE, user="a", password="b", results=tmp_path / "r", checkout=suite.parents[1]
        )
    assert "node is not installed" in info.value.message
