"""Shared test set-up: every test gets its own state, cache and config lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from disk_support import drop_big_files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_home(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
):
    """No test reads the developer's rig.yaml or writes to their state dir; and every
    test's cards and images go when it ends (see drop_big_files)."""
    base = tmp_path_factory.mktemp("xdg")
    own = [base]
    if "tmp_path" in request.fixturenames:
        own.append(request.getfixturevalue("tmp_path"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.delenv("RIG_CONFIG", raising=False)
    # a CI job running the suite must not collect the summaries of the runs the tests make
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    # keep shared caches (OctoPrint venvs, built images) across tests: they are slow to make
    monkeypatch.setenv(
        "XDG_CACHE_HOME", os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    )
    # the feed serves the check overlay devices in the field get; here a copy of its shape
    # (plugins.octoprint.org is not reachable from the test machines)
    overlay = Path(__file__).parent / "product" / "fixtures" / "update_check_overlay.json"
    monkeypatch.setenv("RIG_CHECK_OVERLAY_URL", f"file://{overlay}")
    yield
    for top in own:
        drop_big_files(top)


@pytest.fixture(scope="session", autouse=True)
def _no_virtual_rig_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """A safety net: a test that forgot `rig twin down` must not leave its devices running."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    import signal

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline]
        if "rig.virtual.twin" in args and any(a.startswith(base) for a in args):
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except OSError:
                pass
