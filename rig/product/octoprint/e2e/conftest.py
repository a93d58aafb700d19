"""Fixtures of the smoke suite: where OctoPrint is, a watched page, evidence per test."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from rig.checks.suite import CANNOT_START
from rig.device.browser import launch_chromium
from rig.errors import InfraError
from rig.product.octoprint.ui import Trace


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("octoprint")
    group.addoption("--octoprint-url", required=True, help="base URL of the OctoPrint under test")
    group.addoption("--octoprint-user", default="admin")
    group.addoption("--expect-version", default=None, help="the version the UI must show")
    group.addoption("--results-dir", default="smoke-results", help="screenshots and traces")
    group.addoption("--headed", action="store_true", help="show the browser")


@pytest.fixture(scope="session")
def octoprint(request: pytest.FixtureRequest) -> dict:
    opt = request.config.getoption
    return {
        "url": opt("--octoprint-url").rstrip("/"),
        "user": opt("--octoprint-user"),
        "password": os.environ.get("RIG_OCTOPRINT_PASSWORD", "test"),
        "version": opt("--expect-version"),
        "results": Path(opt("--results-dir")),
    }


@pytest.fixture(scope="session")
def browser(request: pytest.FixtureRequest):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        try:
            b = launch_chromium(p, headless=not request.config.getoption("--headed"))
        except InfraError as e:
            # no browser is the rig's problem, not OctoPrint's: end the run with the
            # "could not start" code instead of failing every test
            pytest.exit(str(e).replace("\n", " "), returncode=CANNOT_START)
        yield b
        b.close()


class Watch:
    """Console errors, uncaught page errors and failed requests seen during a test."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page) -> None:
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on(
            "response",
            lambda r: (
                r.status >= 400
                and self.problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
            ),
        )

    def _failed(self, request) -> None:
        # ERR_ABORTED: the browser cancelled it because the page navigated away
        # (the login page's own redirect does this); not a failure of the server
        if "ERR_ABORTED" not in (request.failure or ""):
            self.problems.append(
                f"request failed: {request.method} {request.url} {request.failure}"
            )

    def assert_clean(self) -> None:
        assert not self.problems, "browser saw problems:\n" + "\n".join(self.problems)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def page(browser, octoprint: dict, watch: Watch, request: pytest.FixtureRequest):
    """A fresh context per test, traced; screenshot and trace kept under results/<test>/."""
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    out = octoprint["results"] / name
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    trace = Trace(
        context, out / "trace.zip", screenshots=True, snapshots=True, sources=False
    ).start()
    pg = context.new_page()
    pg.rig_trace = trace  # login() pauses it: no password in a trace
    pg.set_default_timeout(30_000)
    watch.attach(pg)
    try:
        yield pg
    finally:
        try:
            pg.screenshot(path=str(out / "screenshot.png"))
        finally:
            trace.stop()
            context.close()
