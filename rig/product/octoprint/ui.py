"""Driving OctoPrint's web interface with Playwright: the pieces the update and smoke share."""

from __future__ import annotations

from typing import Any

from rig.errors import InfraError

# The first page load after an install or update bundles OctoPrint's web assets:
# a minute on a loaded 2-core host, minutes on a Pi 3. Waiting less fails good devices.
UI_TIMEOUT = 300.0


def login(page: Any, base_url: str, user: str, password: str, timeout: float = UI_TIMEOUT) -> None:
    """Log in through the login page like a person; the UI is loaded afterwards."""
    page.goto(base_url.rstrip("/") + "/", wait_until="domcontentloaded")
    form = page.locator("#login-user")
    app = page.locator("#navbar")
    form.or_(app).first.wait_for(state="visible", timeout=timeout * 1000)
    if form.is_visible():
        form.fill(user)
        page.locator("#login-password").fill(password)
        page.locator("#login-button").click()
    app.wait_for(state="visible", timeout=timeout * 1000)
    wait_ui_ready(page, timeout)


def wait_ui_ready(page: Any, timeout: float = UI_TIMEOUT) -> None:
    """The client has connected its socket and logged-in state is known."""
    try:
        page.wait_for_function(
            "() => window.OctoPrint && OctoPrint.coreui && OctoPrint.coreui.startedUp",
            timeout=timeout * 1000,
        )
    except Exception as e:
        raise InfraError(f"OctoPrint's UI did not start up: {e}", where=page.url) from e


def footer_version(page: Any) -> str:
    return page.locator("#footer_version .version").inner_text().strip()
