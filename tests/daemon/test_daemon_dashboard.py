"""The dashboard and the approval pages in a real Chromium, with JavaScript switched off."""

from __future__ import annotations

import pytest
from daemon_rig import REPO, add_octopi_release, release_payload, wait_for

from rig.device.browser import launch_chromium


@pytest.mark.slow
def test_dashboard_and_approval_work_in_chromium_without_javascript(rig):
    from playwright.sync_api import expect, sync_playwright

    good = add_octopi_release(rig.github, "1.1.0-1.11.0-green")
    bad = add_octopi_release(rig.github, "1.1.0-1.11.0-red", fail=True)
    rig.start()
    good_id = rig.hook("release", release_payload(good)).json()["job"]
    bad_id = rig.hook("release", release_payload(bad)).json()["job"]
    rig.wait_state(good_id, "awaiting-approval")
    rig.wait_state(bad_id, "failed")
    wait_for("two mails", lambda: len(rig.inbox.messages) == 2)
    link = next(
        rig.approval_link(i)
        for i, m in enumerate(rig.inbox.messages)
        if "tested green" in m["Subject"]
    )

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            context = browser.new_context(java_script_enabled=False)
            page = context.new_page()

            page.goto(rig.url + "/")
            assert page.title() == "dashboard · rig"
            devices = page.locator("table").first
            for name in ("pi3-a", "pi3-b", "pi3-c"):
                expect(devices.get_by_text(name, exact=True)).to_be_visible()
            expect(page.get_by_role("link", name=f"#{good_id}")).to_be_visible()  # queue
            expect(page.get_by_role("link", name=f"#{bad_id}")).to_be_visible()  # history
            expect(page.get_by_text("awaiting-approval").first).to_be_visible()

            # history -> job page -> the report, served by the daemon
            page.get_by_role("link", name="history").click()
            page.get_by_role("link", name=f"#{bad_id}").click()
            page.wait_for_url(f"{rig.url}/jobs/{bad_id}")
            expect(page.get_by_role("cell", name="candidate-smoke")).to_be_visible()
            page.get_by_role("link", name="report.html").click()
            expect(page.get_by_role("heading", name="acceptance: failed")).to_be_visible()

            # the mailed link: a confirmation page, then a real form POST
            page.goto(link)
            job = rig.job(good_id)
            expect(page.get_by_text(job.image_sha256)).to_be_visible()
            assert rig.job(good_id).state == "awaiting-approval"
            page.get_by_role("button", name="Approve and publish").click()
            page.wait_for_url(f"{rig.url}/jobs/{good_id}")
            rig.wait_state(good_id, "published")
            page.reload()
            expect(page.get_by_text("published", exact=True).first).to_be_visible()
            assert len(rig.github.calls_to("PATCH", f"/repos/{REPO}/releases/{good['id']}")) == 1

            # the same link again: refused, politely
            page.goto(link)
            expect(page.get_by_text("already used")).to_be_visible()
        finally:
            browser.close()


def test_dashboard_shows_the_running_jobs_live_phase(tmp_path, github, smtp):
    import httpx
    from daemon_rig import Rig, free_port, write_config

    inbox, smtp_port = smtp
    port, hold = free_port(), tmp_path / "go"
    path = write_config(tmp_path, github, smtp_port, port, tmp_path / "runs.log", hold=str(hold))
    rig = Rig(tmp_path, path, port, github, inbox, tmp_path / "runs.log")
    release = add_octopi_release(github, "1.1.0-1.11.0-live")
    rig.start()
    try:
        job_id = rig.hook("release", release_payload(release)).json()["job"]

        def live() -> str | None:
            text = httpx.get(rig.url + "/").text
            return text if "writing the card" in text else None

        page = wait_for("the live phase on the dashboard", live)
        assert "<strong>flash</strong>" in page and "candidate-smoke" in page
        assert "(test)" in page  # the daemon's own step
        job_page = httpx.get(f"{rig.url}/jobs/{job_id}").text
        assert "<h2>Now</h2>" in job_page and "<strong>flash</strong>" in job_page
        hold.touch()
        rig.wait_state(job_id, "awaiting-approval")
        assert "<h2>Now</h2>" not in httpx.get(f"{rig.url}/jobs/{job_id}").text
    finally:
        hold.touch()
        rig.stop()


def test_dashboard_devices_are_rig_devices_view(tmp_path, github):
    """Lease, quarantine and last run on the dashboard come from devices_view, as `rig devices`."""
    import re

    from daemon_rig import write_config

    from rig.config import load_config
    from rig.daemon import pages
    from rig.daemon.app import device_rows
    from rig.daemon.settings import load_settings
    from rig.orchestration import results
    from rig.orchestration.devices import devices_view
    from rig.orchestration.leases import Leases
    from rig.orchestration.report import RunReport, ScenarioReport
    from rig.root import Rig

    path = write_config(tmp_path, github, 25, 8470, tmp_path / "runs.log")
    settings = load_settings(load_config(path))
    config = settings.rig
    leases = Leases(config.paths.state, holder="a-test")
    try:
        assert leases.acquire("pi3-a", purpose="rig run acceptance.json")
        leases.record("pi3-c", "error", "no-boot", "not reachable")
        leases.record("pi3-c", "error", "no-boot", "not reachable")
        scenario = ScenarioReport(
            "smoke", "", "img", "stable", None, "updated", [], "failed", "", "pi3-b", 9.0, ""
        )
        report = RunReport(
            "r1", "m.json", {}, "", 1.0, 1_764_590_400.0, "failed", 1, [], [scenario]
        )
        results.store(config.paths.state, report, tmp_path / "report.html")
        views = {v["name"]: v for v in devices_view(config, Rig.from_config(config))}
        page = pages.dashboard(device_rows(settings), [], [], [], "")
    finally:
        leases.close()
    rows = {
        cells[0]: cells
        for cells in (
            re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)
        )
        if cells
    }
    assert rows["pi3-a"][5] == "rig run acceptance.json"
    assert rows["pi3-c"][4].startswith("quarantined: ") and "not reachable" in rows["pi3-c"][4]
    assert views["pi3-c"]["quarantine_reason"] in rows["pi3-c"][4]
    assert "failed</span> smoke · 2025-12-01 12:00:00 UTC" in rows["pi3-b"][6]
    assert views["pi3-b"]["last_run"]["run"] == "r1" and rows["pi3-a"][6] == ""
    # the virtual rig's switches are read: off, as `rig devices` says
    assert rows["pi3-a"][2].startswith(f"{views['pi3-a']['power']} (")
