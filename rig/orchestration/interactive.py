"""`rig run --interactive` and `rig up`: hand a prepared device to the person at the desk.

The manual workflow: the scenario is prepared, the person gets the device's URL
and the credentials, looks around, and either lets the rig do the update
(Enter, or "continue" on the rig's hand-over page) or does it in their own
browser and lets the rig verify it ("v" + Enter, or "I updated it"). With a
display a visible Chromium opens on the device as well (closing it continues);
without one the update then runs headless, as every run does.

The flash host is usually headless and the person sits at another machine: a
device only the flash host reaches (the virtual rig's loopback addresses) is
forwarded to the flash host's own address, which is what the person is shown.
"""

from __future__ import annotations

import ipaddress
import secrets
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rig.asgi import BackgroundServer
from rig.device.browser import display_available
from rig.orchestration.forward import TcpForward
from rig.product.profile import ScenarioContext

if TYPE_CHECKING:
    from rig.orchestration.runner import Credentials

_one_at_a_time = threading.Lock()  # several devices: one person, one hand-over at a time

UPDATE, VERIFY = "update", "verify"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class DeviceAccess:
    """The device's URL as the person's machine reaches it (forwarded where needed)."""

    def __init__(self, ctx: ScenarioContext, bind: str) -> None:
        d = ctx.device
        self.forward: TcpForward | None = None
        self.url = d.base_url
        if _is_loopback(d.host) and bind != d.host:
            self.forward = TcpForward(bind, d.host, d.http_port).start()
            self.url = f"http://{self.forward.host}:{self.forward.port}"

    def close(self) -> None:
        if self.forward is not None:
            self.forward.stop()

    def __enter__(self) -> DeviceAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(ctx: ScenarioContext, creds: Credentials, url: str, *, show_secrets: bool) -> str:
    """What the person needs to work on the device: where, and how to log in."""
    d = ctx.device
    admin_pw = creds.admin_password if show_secrets else "(shown only on a terminal)"
    user_pw = creds.device_password if show_secrets else "(rig.yaml user.password)"
    origin = "generated for this run" if creds.admin_generated else "rig.yaml admin.password"
    ssh_port = "" if d.ssh_port == 22 else f" -p {d.ssh_port}"
    return "\n".join(
        [
            f"{d.name} ({ctx.scenario_id}) is in its starting state",
            f"  open       {url}",
            f"  log in     {creds.admin_user} / {admin_pw}   ({origin})",
            f"  ssh        ssh{ssh_port} {creds.device_user}@{d.host}   password {user_pw}",
        ]
    )


def _page(token: str, device: str, choose: Callable[[str], None]):
    """The rig's hand-over page: two buttons (POST), no JavaScript."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    form = (
        '<form method="post" action="/{t}/{a}" style="display:inline">'
        '<button type="submit">{label}</button></form>'
    )

    async def show(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"<!doctype html><title>rig: {device}</title><h1>{device}</h1>"
            "<p>The device is in its starting state.</p><p>"
            + form.format(t=token, a="continue", label="Continue: the rig does the update")
            + " "
            + form.format(t=token, a="verify", label="I updated it: the rig verifies")
            + "</p>"
        )

    async def act(request: Request) -> HTMLResponse:
        action = request.path_params["action"]
        choice = UPDATE if action == "continue" else VERIFY
        choose(choice)
        what = "does the update" if choice == UPDATE else "verifies your update"
        return HTMLResponse(f"<!doctype html><p>{device}: the rig goes on and {what}.</p>")

    return Starlette(
        routes=[
            Route(f"/{token}/", show),
            Route(f"/{token}/{{action:str}}", act, methods=["POST"]),
        ]
    )


def _stdin_line(timeout: float) -> str | None:
    """A line from the terminal if one is typed within ``timeout`` seconds."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    return sys.stdin.readline()


def hand_over(
    ctx: ScenarioContext,
    creds: Credentials,
    bind: str,
    cancel: threading.Event,
    timeout: float = 3600,
) -> str:
    """Show the device to the person and wait; returns "update" or "verify"."""
    with _one_at_a_time:
        terminal = bool(sys.stdin) and sys.stdin.isatty()
        display = display_available()
        chosen: list[str] = []
        decided = threading.Event()

        def choose(choice: str) -> None:
            if not chosen:
                chosen.append(choice)
            decided.set()

        token = secrets.token_urlsafe(9)
        with DeviceAccess(ctx, bind) as access:
            page = BackgroundServer(_page(token, ctx.device.name, choose), bind, 0).start()
            try:
                link = f"{page.url}/{token}/"
                print(
                    "\n"
                    + describe(ctx, creds, access.url, show_secrets=sys.stdout.isatty())
                    + f"\n  then       {link}  (continue, or: I updated it)",
                    flush=True,
                )
                if terminal:
                    print(
                        "  or here    Enter: the rig does the update · "
                        "v + Enter: you updated it, the rig verifies",
                        flush=True,
                    )
                ctx.log(f"handed over at {access.url}; waiting for the person")
                if display:
                    _visible_browser(access.url, link, decided, choose, cancel, timeout)
                else:
                    _wait(terminal, decided, choose, cancel, timeout)
            finally:
                page.stop()
        choice = chosen[0] if chosen else UPDATE
        ctx.log(
            "the person continues: the rig does the update"
            if choice == UPDATE
            else "the person did the update: the rig verifies"
        )
        return choice


def _wait(
    terminal: bool,
    decided: threading.Event,
    choose: Callable[[str], None],
    cancel: threading.Event,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not decided.is_set() and not cancel.is_set():
        if time.monotonic() >= deadline:  # as when the window is closed: the run goes on
            print(f"  nobody answered within {timeout:.0f}s: the rig does the update", flush=True)
            return
        if terminal:
            line = _stdin_line(0.5)
            if line is not None:
                choose(VERIFY if line.strip().lower().startswith("v") else UPDATE)
        else:
            decided.wait(0.5)


def _visible_browser(
    url: str,
    link: str,
    decided: threading.Event,
    choose: Callable[[str], None],
    cancel: threading.Event,
    timeout: float,
) -> None:
    """The device and the hand-over page in a visible Chromium; closing it continues."""
    from playwright.sync_api import sync_playwright

    from rig.device.browser import launch_chromium

    terminal = bool(sys.stdin) and sys.stdin.isatty()
    with sync_playwright() as p:
        browser = launch_chromium(p, headless=False)
        context = browser.new_context(no_viewport=True)
        context.new_page().goto(link)
        device_page = context.new_page()
        device_page.goto(url)
        print("  a browser window is open on the device; closing it continues", flush=True)
        deadline = time.monotonic() + timeout
        while not decided.is_set() and not cancel.is_set() and time.monotonic() < deadline:
            pages = [pg for pg in context.pages if not pg.is_closed()]
            if not pages or not browser.is_connected():
                choose(UPDATE)  # the window was closed
                break
            try:
                pages[-1].wait_for_timeout(300)  # lets Playwright deliver its events
            except Exception:  # that page closed meanwhile: look again
                decided.wait(0.1)
                continue
            if terminal:
                line = _stdin_line(0.2)
                if line is not None:
                    choose(VERIFY if line.strip().lower().startswith("v") else UPDATE)
        if browser.is_connected():
            browser.close()
