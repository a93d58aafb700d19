"""`rig run --interactive`: stop before the update and hand the device to a person.

The original manual workflow: the scenario is prepared, then the device opens in
a visible browser; the run goes on (with the update) when the person closes the
browser window. Without a display the URL is printed and the rig waits for Enter.
"""

from __future__ import annotations

import os
import sys
import threading

from rig.errors import ConfigError
from rig.product.profile import ScenarioContext

_one_at_a_time = threading.Lock()  # several devices: one person, one window at a time


def hand_over(ctx: ScenarioContext, timeout: float = 3600) -> None:
    url = ctx.device.base_url
    with _one_at_a_time:
        if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            from playwright.sync_api import sync_playwright

            from rig.device.browser import launch_chromium

            with sync_playwright() as p:
                browser = launch_chromium(p, headless=False)
                page = browser.new_page()
                page.goto(url)
                ctx.log(f"{ctx.device.name} is open at {url}; close the window to continue")
                closed = threading.Event()
                browser.on("disconnected", lambda _: closed.set())
                page.on("close", lambda _: closed.set())
                while not closed.wait(0.5):
                    timeout -= 0.5
                    if timeout <= 0:
                        break
                if browser.is_connected():
                    browser.close()
            return
        if not sys.stdin or not sys.stdin.isatty():
            raise ConfigError(
                "--interactive needs a display or a terminal",
                where="rig run --interactive",
                hint="run it on a desktop, over `ssh -X`, or in a terminal",
            )
        print(f"\n{ctx.device.name} ({ctx.scenario_id}) is prepared: open {url}")
        input("press Enter to go on with the update ... ")
