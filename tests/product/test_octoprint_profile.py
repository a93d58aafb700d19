"""The OctoPrint profile against real OctoPrint servers started here.

One device per OctoPrint version per module (each prepare restarts it, as on a
real device); the tests in a module run in order and build on each other the way
a scenario does: prepare, channel switch, offer, update, verify.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from rig.errors import ProductError
from rig.product import get_profile
from rig.product.octoprint.feed import InjectedRelease
from rig.product.octoprint.profile import OctoPrintProfile

pytestmark = pytest.mark.slow

OLD = "1.10.3"
TARGET = "1.11.8"


def test_get_profile_returns_the_octoprint_profile():
    assert isinstance(get_profile("octoprint"), OctoPrintProfile)


def test_prepare_brings_old_version_to_its_starting_state(old_rig):
    ctx = old_rig.ctx(channel="maintenance")
    old_rig.profile.prepare(ctx)
    assert ctx.facts["octoprint_version"] == OLD
    assert ctx.facts["octopi_version"] == "1.0.0"
    assert ctx.facts["python_version"].startswith("3.")
    assert ctx.facts["pip_version"]
    # what the device says it runs (here: this machine, where the local device runs)
    lines = Path("/etc/os-release").read_text().splitlines()
    osr = dict(line.split("=", 1) for line in lines if "=" in line)
    assert ctx.facts["os_release"] == osr["PRETTY_NAME"].strip('"')
    assert ctx.facts["system_python_version"].count(".") == 2
    config = yaml.safe_load((old_rig.device.home / ".octoprint/config.yaml").read_text())
    assert config["server"]["firstRun"] is False
    check = config["plugins"]["softwareupdate"]["checks"]["octoprint"]
    assert check["prerelease"] is True
    assert check["prerelease_channel"] == "rc/maintenance"
    assert check["pip"] == "OctoPrint=={target_version}"
    assert (old_rig.device.home / ".octoprint/plugins/rig_release_injection.py").exists()
    # the admin user works and the injected feed is what the device asks, with the field's
    # check overlay applied: it moves the octoprint check from 1.10's foosel to OctoPrint
    requests = old_rig.feed.app.state.requests
    assert "/overlay.json" in requests
    assert "/releases/OctoPrint/OctoPrint" in requests
    assert "/releases/foosel/OctoPrint" not in requests


def test_maintenance_channel_sees_maintenance_but_not_devel_rcs(old_rig):
    profile = old_rig.profile
    old_rig.inject(TARGET, "devel")
    profile.update(old_rig.ctx(channel="maintenance", expect="not-offered"))
    old_rig.inject(TARGET, "maintenance")
    with pytest.raises(ProductError, match="is offered on channel maintenance"):
        profile.update(old_rig.ctx(channel="maintenance", expect="not-offered"))


def test_an_rc_published_only_on_next_is_not_offered_to_1_10_on_maintenance(old_rig):
    # 1.10's Maintenance RCs accept rc/maintenance only; next arrived in 1.11.0
    old_rig.feed.app.state.release = InjectedRelease(TARGET, "maintenance", commitish=("next",))
    ctx = old_rig.ctx(channel="maintenance", expect="not-offered")
    old_rig.profile.update(ctx)
    assert ctx.facts["offered_version"] != TARGET


def test_channel_switch_to_stable_hides_rcs_and_shows_releases(old_rig):
    profile = old_rig.profile
    ctx = old_rig.ctx(channel="stable", expect="not-offered")
    profile.prepare(ctx)
    config = yaml.safe_load((old_rig.device.home / ".octoprint/config.yaml").read_text())
    check = config["plugins"]["softwareupdate"]["checks"]["octoprint"]
    assert check["prerelease"] is False
    assert "prerelease_channel" not in check
    profile.update(ctx)  # the maintenance RC is not offered on stable
    assert ctx.facts["offered_version"] != TARGET
    old_rig.inject(TARGET, "stable")
    with pytest.raises(ProductError, match="must not be"):
        profile.update(ctx)


def test_update_through_api_reaches_target_and_verifies(old_rig):
    ctx = old_rig.ctx(channel="stable", checks=(), update_mode="api")
    old_rig.profile.update(ctx)
    old_rig.profile.verify(ctx)
    assert ctx.facts["final_version"] == TARGET
    assert ctx.facts["restarts"] == 1
    old_rig.profile.collect(ctx)
    assert (old_rig.results / "octoprint.log").stat().st_size > 0
    assert (old_rig.results / "plugin_softwareupdate_console.log").exists()
    old_rig.ctx_after_update = ctx


def test_verify_catches_wrong_version(old_rig):
    ctx = old_rig.ctx(target_version="1.11.9")
    ctx.facts.update(old_rig.ctx_after_update.facts)
    with pytest.raises(ProductError, match=r"runs 1\.11\.8, expected 1\.11\.9"):
        old_rig.profile.verify(ctx)


def test_verify_catches_a_new_error_line(old_rig):
    ctx = old_rig.ctx()
    ctx.facts.update(old_rig.ctx_after_update.facts)
    log = old_rig.device.home / ".octoprint/logs/octoprint.log"
    with log.open("a") as f:
        f.write("2026-01-01 00:00:00,000 - octoprint.plugins.foo - ERROR - it broke\n")
    with pytest.raises(ProductError, match="it broke"):
        old_rig.profile.verify(ctx)


def test_smoke_passes_on_the_updated_device(old_rig):
    ctx = old_rig.ctx(checks=("smoke",))
    ctx.facts["final_version"] = TARGET
    old_rig.profile.check(ctx, "smoke")
    smoke = old_rig.results / "smoke"
    for test in ("test_login_shows_version", "test_print_on_virtual_printer"):
        assert (smoke / test / "screenshot.png").stat().st_size > 1000
        assert (smoke / test / "trace.zip").stat().st_size > 1000
    assert 'failures="0"' in (smoke / "junit.xml").read_text()


def test_smoke_fails_when_the_ui_shows_another_version(old_rig):
    from rig.product.octoprint.e2e import run_smoke

    with pytest.raises(ProductError, match="test_login_shows_version"):
        run_smoke(
            old_rig.device.base_url,
            user="admin",
            password="rig-admin-password",
            results=old_rig.results / "smoke-wrong",
            expect_version="9.9.9",
            keyword="login",
        )


BROKEN_PLUGIN = """
import os

import octoprint.plugin

__plugin_name__ = "Broken page (rig test)"
__plugin_pythoncompat__ = ">=3,<4"


class Broken(octoprint.plugin.AssetPlugin):
    def get_asset_folder(self):
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "rig_broken_static")

    def get_assets(self):
        return {"js": ["js/rig_broken_page.js"]}


__plugin_implementation__ = Broken()
"""


def test_prepare_current_version_offers_nothing_newer(current_rig):
    ctx = current_rig.ctx(channel="devel", expect="not-offered")
    current_rig.profile.prepare(ctx)
    assert ctx.facts["octoprint_version"] == TARGET
    current_rig.profile.update(ctx)  # 1.11.8 is what it runs: not an update
    assert ctx.facts["check_status"] == "current"
    current_rig.profile.verify(ctx)  # still the start version, no restart, no errors


def test_rig_e2e_command_passes_against_a_healthy_octoprint(current_rig, tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("RIG_OCTOPRINT_PASSWORD", "rig-admin-password")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rig",
            "e2e",
            current_rig.device.base_url,
            "--expect-version",
            TARGET,
            "--results",
            str(tmp_path / "e2e"),
            "-k",
            "settings",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "e2e" / "test_settings_open_and_close" / "trace.zip").exists()


def test_smoke_fails_on_a_broken_page(current_rig):
    from rig.product.octoprint.e2e import run_smoke

    plugins = current_rig.device.home / ".octoprint/plugins"
    (plugins / "rig_broken_static/js").mkdir(parents=True)
    (plugins / "rig_broken_static/js/rig_broken_page.js").write_text(
        'throw new Error("rig test: this page is broken");\n'
    )
    (plugins / "rig_broken_page.py").write_text(BROKEN_PLUGIN)
    shell = current_rig.device.shell()
    shell.run("sudo service octoprint restart")
    api = current_rig.profile.api(current_rig.ctx())
    try:
        api.wait_ready()
    finally:
        api.close()
    with pytest.raises(ProductError, match="test_login_shows_version"):
        run_smoke(
            current_rig.device.base_url,
            user="admin",
            password="rig-admin-password",
            results=current_rig.results / "smoke-broken",
            expect_version=TARGET,
            keyword="login",
        )
    log = (current_rig.results / "smoke-broken" / "pytest.log").read_text()
    assert "this page is broken" in log


CHECKOUT = os.environ.get(
    "RIG_OCTOPRINT_CHECKOUT", os.path.expanduser("~/.cache/rig/octoprint-checkout")
)


@pytest.mark.skipif(
    not os.path.exists(os.path.join(CHECKOUT, "tests/playwright/playwright.config.js")),
    reason="no OctoPrint checkout (set RIG_OCTOPRINT_CHECKOUT to a clone at the tested tag)",
)
def test_octoprint_own_suite_runs_against_the_device(current_rig, tmp_path):
    from rig.product.octoprint.upstream import run_upstream

    junit = run_upstream(
        current_rig.device.base_url,
        user="admin",
        password="rig-admin-password",
        results=tmp_path / "octoprint-e2e",
        checkout=CHECKOUT,
        grep="[Ll]ogin",
    )
    report = junit.read_text()
    assert 'failures="0"' in report
    assert "<testcase" in report


def test_a_failing_update_is_a_product_failure(current_rig):
    current_rig.inject("1.11.9", "stable")  # offered, but no such package to install
    ctx = current_rig.ctx(target_version="1.11.9", start_version=None)
    with pytest.raises(ProductError, match="the update failed"):
        current_rig.profile.update(ctx)


def test_without_an_updatelog_a_failed_pip_run_fails_at_once(current_rig, monkeypatch):
    """OctoPrint before 1.7.0 (OctoPi 0.18.0 ships 1.5.2) has no updatelog endpoint: the
    failure must still be seen when pip fails, from octoprint.log, not at the timeout."""
    import time

    from rig.product.octoprint.api import OctoPrintAPI

    monkeypatch.setattr(OctoPrintAPI, "updatelog", lambda self: None)  # the 1.5.2 API
    current_rig.inject("1.11.9", "stable")  # offered, but no such package to install
    ctx = current_rig.ctx(target_version="1.11.9", start_version=None)
    start = time.monotonic()
    with pytest.raises(ProductError, match="Update of octoprint can not be performed"):
        current_rig.profile.update(ctx)
    assert time.monotonic() - start < 120  # the limit for a Pi 3 is 1200 s
    assert ctx.facts["update_timeout"] == 1200


def test_update_time_limit_follows_model_and_python():
    from rig.product.octoprint.profile import update_timeout

    assert update_timeout("pi3", "3.11.2") == 1200
    assert update_timeout("pi3", "3.7.3") > 900 * 2  # OctoPi 0.18.0: wheels built on a Pi 3
    assert update_timeout("pi4", "3.11.2") < update_timeout("pi3", "3.11.2")
    assert update_timeout("unknown-board", None) == 1200


def test_update_in_the_browser_reaches_target(browser_rig):
    profile = browser_rig.profile
    ctx = browser_rig.ctx(
        channel="maintenance", release_channel="maintenance", update_mode="browser"
    )
    browser_rig.inject(TARGET, "maintenance")
    profile.prepare(ctx)
    profile.update(ctx)
    assert ctx.facts["ui_version_after_update"] == TARGET
    profile.verify(ctx)
    shots = sorted(p.name for p in (browser_rig.results / "update").glob("*.png"))
    assert any("notification" in s for s in shots)
    assert any("confirm" in s for s in shots)
    assert (browser_rig.results / "update" / "trace.zip").exists()


def test_a_failing_update_in_the_browser_is_a_product_failure(browser_rig):
    browser_rig.inject("1.11.9", "stable")  # offered, nothing to install: pip fails
    ctx = browser_rig.ctx(target_version="1.11.9", start_version=None, update_mode="browser")
    ctx.results = browser_rig.results / "failing"
    with pytest.raises(ProductError, match="the update failed in the browser"):
        browser_rig.profile.update(ctx)
    assert any("failed" in p.name for p in (ctx.results / "update").glob("*.png"))
