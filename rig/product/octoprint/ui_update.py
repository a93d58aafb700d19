"""The update the way the maintainer does it: in a browser, through the notification.

Log in, wait for the "Update Available" notification, click "Update now",
"Proceed" in the confirmation, watch the progress dialog, wait for the server to
come back ("Please reload"), reload, and see the new version in the footer. A
screenshot at each stage and a Playwright trace go into ``results/update/``.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from rig.device.browser import display_available, launch_chromium
from rig.errors import InfraError, ProductError
from rig.product.octoprint.api import refusal_hint
from rig.product.octoprint.ui import UI_TIMEOUT, Trace, login, shown_version, wait_new_ui
from rig.product.profile import ScenarioContext

if TYPE_CHECKING:
    from rig.product.octoprint.profile import OctoPrintProfile

FAILED = re.compile(r"Update failed!|Restart failed")
NOT_STARTED = re.compile(r"Update not started!")


def update_in_browser(
    ctx: ScenarioContext,
    profile: OctoPrintProfile,
    *,
    offer_timeout: float = 120,
    update_timeout: float = 900,
) -> None:
    from playwright.sync_api import sync_playwright

    out = ctx.results / "update"
    out.mkdir(parents=True, exist_ok=True)
    where = f"{ctx.device.name} update (browser)"
    step = 0

    def shot(page, name: str) -> None:
        nonlocal step
        step += 1
        page.screenshot(path=str(out / f"{step:02d}-{name}.png"))

    with sync_playwright() as p:
        # visible only where a person can see it: a headless flash host runs it headless
        browser = launch_chromium(p, headless=not (ctx.interactive and display_available()))
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        # DOM snapshots only: a screencast of a minutes-long wait is tens of MB,
        # and the stage screenshots are taken explicitly
        trace = Trace(context, out / "trace.zip", screenshots=False, snapshots=True)
        page = context.new_page()
        try:
            login(page, ctx.device.base_url, ctx.admin_user, ctx.admin_password)
            trace.start()  # after the login: traces go into the report, the password must not
            notice = page.locator(".ui-pnotify").filter(has_text="Update Available")
            try:
                notice.wait_for(state="visible", timeout=offer_timeout * 1000)
            except Exception as e:
                shot(page, "no-notification")
                raise ProductError(
                    f"no 'Update Available' notification within {offer_timeout:.0f}s",
                    where=where,
                ) from e
            shot(page, "notification")
            notice.get_by_role("button", name="Update now").click()
            # the confirmation's buttons are links styled as buttons
            proceed = page.locator(".modal:visible .modal-footer .btn", has_text="Proceed")
            proceed.wait_for(state="visible", timeout=30_000)
            shot(page, "confirm")
            proceed.click()
            ctx.log("browser: clicked Update now, Proceed")
            page.locator("#settings_plugin_softwareupdate_workingdialog").wait_for(
                state="visible", timeout=60_000
            )
            shot(page, "progress")
            reload = page.locator("#reloadui_overlay")
            login_form = page.locator("#login-user")
            failed = page.locator(".ui-pnotify").filter(has_text=FAILED)
            not_started = page.locator(".ui-pnotify").filter(has_text=NOT_STARTED)
            deadline = time.monotonic() + update_timeout
            while True:
                # the old UI shows "Please reload"; depending on the versions the page
                # may instead reload itself into the new UI or its login page
                if reload.is_visible():
                    shot(page, "please-reload")
                    ctx.log("browser: server restarted, reloading")
                    try:
                        reload.get_by_role("button", name="Reload now").click(timeout=15_000)
                    except Exception as e:  # seen once: the click never landed within 30 s
                        # what the button does (location.reload); noted, not hidden
                        ctx.facts["reload_button_not_clickable"] = str(e).splitlines()[0]
                        ctx.log(f"browser: 'Reload now' not clickable ({e}); reloading the page")
                        page.reload(wait_until="domcontentloaded")
                    break
                if login_form.is_visible():
                    shot(page, "login-after-restart")
                    ctx.log("browser: server restarted, session gone: logging in again")
                    break
                if shown_version(page) == ctx.target_version:
                    ctx.log("browser: the UI reloaded itself into the new version")
                    break
                if not_started.count() and not_started.first.is_visible():
                    # the POST was refused (409: throttled, environment, storage): the
                    # device said no before the release was tried
                    shot(page, "not-started")
                    text = " ".join(not_started.first.inner_text().split())
                    raise InfraError(
                        f"the device refused to start the update in the browser: {text}",
                        where=where,
                        hint=refusal_hint(text),
                    )
                if failed.count() and failed.first.is_visible():
                    shot(page, "failed")
                    text = failed.first.inner_text()
                    output = page.locator(
                        "#settings_plugin_softwareupdate_workingdialog_output"
                    ).inner_text()
                    raise ProductError(
                        f"the update failed in the browser: {text.strip()}\n"
                        + "\n".join(output.splitlines()[-15:]),
                        where=where,
                        hint="see update/ screenshots and trace.zip in the results",
                    )
                if time.monotonic() > deadline:
                    shot(page, "timeout")
                    raise ProductError(
                        f"the server did not come back within {update_timeout:.0f}s of Proceed",
                        where=where,
                    )
                page.wait_for_timeout(500)
            # "Reload now" (or the UI itself) navigates: the old UI, still started up, is
            # no answer; the new version is, after a login where the page asks for one
            shown = wait_new_ui(
                page,
                ctx.device.base_url,
                ctx.admin_user,
                ctx.admin_password,
                ctx.target_version,
                trace=trace,
            )
            shot(page, "reloaded")
            ctx.facts["ui_version_after_update"] = shown
            if shown is None:
                raise InfraError(
                    f"OctoPrint's UI did not start up within {UI_TIMEOUT:.0f}s of the restart",
                    where=where,
                )
            if shown != ctx.target_version:
                raise ProductError(
                    f"after the update the UI shows version {shown}, expected {ctx.target_version}",
                    where=where,
                )
        finally:
            trace.stop()
            browser.close()
    api = profile.api(ctx)
    try:
        api.login()
        profile.wait_for_version(ctx, api, timeout=60)
    finally:
        api.close()
