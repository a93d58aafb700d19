"""The browser update after OctoPrint restarts: the page must land in the new UI.

After "Reload now" the old UI is still there, started up, for a moment; then the
reload navigates, and with the session gone OctoPrint redirects to its /login/
page. A wait that takes the old UI for "the UI is up" then waits on the login page
for a UI that never starts (seen in a suite run as "OctoPrint's UI did not start
up" after the phase's whole wait). The pages here give the browser the same
signals as OctoPrint (``OctoPrint.coreui.startedUp``, ``#footer_version``,
``#login-user``), served on loopback.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from rig.device.browser import launch_chromium
from rig.product.octoprint.ui import wait_new_ui

OLD, NEW = "1.10.3", "1.11.8"

UI = """<!doctype html><html><body><div id="navbar">nav</div>
<div id="footer_version"><span class="version">{version}</span></div>
<script>setTimeout(() => {{ window.OctoPrint = {{coreui: {{startedUp: true}}}} }}, {delay});
</script></body></html>"""

LOGIN = """<!doctype html><html><body><form onsubmit="return false">
<input id="login-user"><input id="login-password" type="password">
<button id="login-button" onclick="document.cookie='session=new; path=/';
location.href='/'">Log in</button></form></body></html>"""


class _Server(http.server.ThreadingHTTPServer):
    restarted = False


class _Pages(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        logged_in = "session=new" in (self.headers.get("Cookie") or "")
        if self.path.startswith("/login"):
            self._send(200, LOGIN)
        elif not self.server.restarted:
            self._send(200, UI.format(version=OLD, delay=0))
        elif not logged_in:  # the restart ended the session: OctoPrint's login redirect
            self.send_response(302)
            self.send_header("Location", "/login/?redirect=%2F")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:  # the first load of the new version bundles its assets: it starts up late
            self._send(200, UI.format(version=NEW, delay=800))

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.slow
def test_the_old_ui_before_its_reload_is_not_taken_for_the_new_one(server: _Server) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{server.server_address[1]}"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_function("() => window.OctoPrint && OctoPrint.coreui.startedUp")
            server.restarted = True
            # what "Reload now" does, a moment later than the wait starts
            page.evaluate("() => setTimeout(() => location.reload(), 700)")
            start = time.monotonic()
            shown = wait_new_ui(page, base, "admin", "secret", NEW, timeout=20)
            assert shown == NEW
            assert time.monotonic() - start < 15
            assert page.locator("#footer_version .version").inner_text() == NEW
        finally:
            browser.close()


@pytest.mark.slow
def test_a_ui_that_stays_at_the_old_version_is_reported_with_what_it_shows(
    server: _Server,
) -> None:
    """No reload comes: the wait ends at its limit with the version the UI shows, for the
    caller's product verdict, instead of an infrastructure error."""
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{server.server_address[1]}"
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(base + "/")
            start = time.monotonic()
            assert wait_new_ui(page, base, "admin", "secret", NEW, timeout=3) == OLD
            assert 2.5 < time.monotonic() - start < 10
        finally:
            browser.close()
