"""Driving OctoPrint's web interface with Playwright: the pieces the update and smoke share."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from rig.errors import InfraError

# The first page load after an install or update bundles OctoPrint's web assets:
# a minute on a loaded 2-core host, minutes on a Pi 3. Waiting less fails good devices.
UI_TIMEOUT = 300.0


class Trace:
    """A browser context's Playwright trace that never holds the password.

    Playwright records every ``fill`` with its value and snapshots the values of
    inputs, and traces go into the report. So the trace stops while the password
    is typed and starts again once the login page is gone: the part before goes to
    ``trace-1.zip`` (``-2`` ...), the rest, at ``stop()``, to ``path`` (trace.zip).
    """

    def __init__(self, context: Any, path: Path, **options: Any) -> None:
        self.context, self.path, self.options = context, path, options
        self.parts = 0
        self.running = False

    def start(self) -> Trace:
        self.context.tracing.start(**self.options)
        self.running = True
        return self

    def stop(self, path: Path | None = None) -> None:
        if self.running:
            self.running = False
            self.context.tracing.stop(path=str(path or self.path))

    @contextmanager
    def paused(self) -> Iterator[None]:
        was_running = self.running
        if was_running:
            self.parts += 1
            self.stop(self.path.with_name(f"{self.path.stem}-{self.parts}{self.path.suffix}"))
        try:
            yield
        finally:
            if was_running:
                self.start()


def login(
    page: Any,
    base_url: str,
    user: str,
    password: str,
    timeout: float = UI_TIMEOUT,
    trace: Trace | None = None,
) -> None:
    """Log in through the login page like a person; the UI is loaded afterwards."""
    page.goto(base_url.rstrip("/") + "/", wait_until="domcontentloaded")
    form = page.locator("#login-user")
    app = page.locator("#navbar")
    form.or_(app).first.wait_for(state="visible", timeout=timeout * 1000)
    if form.is_visible():
        with trace.paused() if trace is not None else nullcontext():
            form.fill(user)
            page.locator("#login-password").fill(password)
            page.locator("#login-button").click()
            app.wait_for(state="visible", timeout=timeout * 1000)  # the login page is gone
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


def wait_new_ui(
    page: Any,
    base_url: str,
    user: str,
    password: str,
    version: str,
    timeout: float = UI_TIMEOUT,
    trace: Trace | None = None,
) -> str | None:
    """After a server restart, the version the started-up UI shows: ``version`` as soon as
    it does, else what it shows when ``timeout`` ends (None: no UI at all).

    The old UI stays up, started, until its reload navigates away; the reload may then land
    on the login page (the restart ended the session). So "a UI is up" proves nothing: the
    wait is for the new version, logging in again wherever the page asks for it.
    """
    deadline = time.monotonic() + timeout
    shown: str | None = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            where = wait_ui_or_login(page, left)
        except InfraError:
            break
        if where == "login":
            login(page, base_url, user, password, max(1.0, deadline - time.monotonic()), trace)
            continue
        shown = shown_version(page)
        if shown == version:
            return shown
        page.wait_for_timeout(min(500, max(1, (deadline - time.monotonic()) * 1000)))
    return shown_version(page) or shown


def shown_version(page: Any) -> str | None:
    """The footer's version if the UI is up, without waiting for it (None while navigating)."""
    try:
        return page.evaluate(
            "() => { const e = document.querySelector('#footer_version .version');"
            " return e && window.OctoPrint && OctoPrint.coreui && OctoPrint.coreui.startedUp"
            " ? e.textContent.trim() : null }"
        )
    except Exception:  # the page is navigating: the evaluation's context went away
        return None
