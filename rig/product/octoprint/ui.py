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


# true once the page is either OctoPrint's started-up UI or a login form (its own /login/
# page or the UI's dialog): re-evaluated by Playwright after every navigation
UI_OR_LOGIN = (
    "() => { const f = document.querySelector('#login-user');"
    " if (f && f.offsetParent !== null) return 'login';"
    " return window.OctoPrint && OctoPrint.coreui && OctoPrint.coreui.startedUp ? 'ui' : null }"
)


def wait_ui_or_login(page: Any, timeout: float = UI_TIMEOUT) -> str:
    """After a server restart the page may still be navigating (a reload, a redirect to the
    login page): wait for where it lands, not for what it showed a moment ago."""
    try:
        return page.wait_for_function(UI_OR_LOGIN, timeout=timeout * 1000).json_value()
    except Exception as e:
        raise InfraError(
            f"OctoPrint's UI neither started up nor asked for a login: {e}", where=page.url
        ) from e


def footer_version(page: Any) -> str:
    return page.locator("#footer_version .version").inner_text().strip()
