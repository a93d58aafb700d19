"""The OctoPrint profile points the device's own pip at the cache and collects its wheels.

The "device" is a home directory with a real venv at ~/oprint and the profile's
real command lines (a LocalShell); its pip reads the pip.conf the profile writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from package_rig import Upstream

from rig.asgi import BackgroundServer
from rig.device.shell import LocalShell
from rig.events import EventBus, StepLog
from rig.packages.environment import USER_AGENT_SCRIPT, from_user_agent
from rig.packages.index import PackageIndex
from rig.packages.pipconf import pip_conf
from rig.packages.serve import DevicePackages
from rig.packages.store import PackageStore
from rig.product.octoprint.profile import OctoPrintProfile
from rig.product.profile import DeviceAddress, ScenarioContext

USERS_PIP_CONF = "[global]\ntimeout = 77\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)  # this machine's pip settings are not the device's
    h = tmp_path / "home"
    h.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(h / "oprint")], check=True)
    return h


def context(tmp_path: Path, packages: DevicePackages | None) -> ScenarioContext:
    return ScenarioContext(
        device=DeviceAddress("local", "127.0.0.1"),
        scenario_id="s1",
        channel="stable",
        target_version="1.0",
        release_channel="stable",
        expect="updated",
        checks=(),
        results=tmp_path / "results",
        log=StepLog(EventBus()),
        package_index=packages,
    )


def test_prepare_and_update_pip_use_the_cache_and_the_users_view_comes_back(
    tmp_path, home, upstream: Upstream
):
    store = PackageStore(tmp_path / "cache", 1 << 30)
    server = BackgroundServer(PackageIndex(store, [upstream.url])).start()
    # pip's cache where a Pi's is, ~/.cache/pip (the suite points XDG_CACHE_HOME elsewhere)
    shell = LocalShell(home, env={"XDG_CACHE_HOME": str(home / ".cache")})
    profile = OctoPrintProfile(shell_factory=lambda ctx: shell)
    ctx = context(tmp_path, DevicePackages(f"{server.url}/simple/", store))
    (home / "oprint" / "pip.conf").write_text(USERS_PIP_CONF)  # the image's own
    try:
        profile.point_pip(ctx)
        conf = (home / "oprint" / "pip.conf").read_text()
        assert f"index-url = {server.url}/simple/" in conf
        listed = shell.run("~/oprint/bin/python -m pip config list", quiet=True).stdout
        assert f"global.index-url='{server.url}/simple/'" in listed
        assert "timeout" not in listed  # the user's file is set aside meanwhile
        # the device's pip as prepare and the updater run it: no index on the command line
        shell.run("~/oprint/bin/python -m pip install --disable-pip-version-check rigbuilt==1.0")
        assert store.page("rigbuilt") is not None  # asked through the rig's index
        assert list((home / ".cache" / "pip" / "wheels").rglob("rigbuilt-1.0-*.whl"))

        kept = profile.collect_wheels(ctx)
        assert kept == ["rigbuilt-1.0-py3-none-any.whl"]
        agent = shell.run(f"~/oprint/bin/python -c '{USER_AGENT_SCRIPT}'", quiet=True).stdout
        assert [p.name for p in store.built(from_user_agent(agent), "rigbuilt")] == kept
        assert profile.collect_wheels(ctx) == []  # known: not kept twice
    finally:
        profile.unpoint_pip(ctx)
        server.stop()
    assert (home / "oprint" / "pip.conf").read_text() == USERS_PIP_CONF
    assert not (home / "oprint" / "pip.conf.rig-saved").exists()
    listed = shell.run("~/oprint/bin/python -m pip config list", quiet=True).stdout
    assert "index-url" not in listed and "global.timeout='77'" in listed


def test_without_the_cache_nothing_on_the_device_changes(tmp_path):
    home = tmp_path / "home"
    (home / "oprint").mkdir(parents=True)
    shell = LocalShell(home)
    profile = OctoPrintProfile(shell_factory=lambda ctx: shell)
    ctx = context(tmp_path, None)
    profile.point_pip(ctx)
    assert not (home / "oprint" / "pip.conf").exists()
    assert profile.collect_wheels(ctx) == []
    profile.unpoint_pip(ctx)
    assert not (home / "oprint" / "pip.conf").exists()


def test_a_lan_index_over_http_is_trusted_loopback_needs_nothing():
    assert "trusted-host = 192.168.1.5:8765" in pip_conf("http://192.168.1.5:8765/simple/")
    assert "trusted-host" not in pip_conf("https://cache.example/simple/")
