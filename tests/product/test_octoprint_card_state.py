"""What the rig leaves on an OctoPrint card: safe settings during the run, a user's state after.

Against a real OctoPrint: the run keeps CSRF protection and the login rate limiter
on (the product is tested as users have it), the admin password never reaches the
scenario log, and after `leave` a restart without the rig's feed logs nothing
about the feed and runs OctoPrint's own release check.
"""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
import yaml

from rig.product.octoprint.injection import PLUGIN_NAME

pytestmark = pytest.mark.slow

PASSWORD = "card-state-" + secrets.token_urlsafe(8)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from conftest import _rig

    yield from _rig(tmp_path_factory, "1.10.3", "cardstate")


def _token(http: httpx.Client) -> str:
    return next(v for k, v in http.cookies.items() if k.startswith("csrf_token"))


def _config(rig) -> dict:
    return yaml.safe_load((rig.device.home / ".octoprint/config.yaml").read_text())


def test_prepare_keeps_csrf_and_rate_limiter_and_logs_no_password(rig):
    ctx = rig.ctx(channel="stable", admin_password=PASSWORD, checks=(), update_mode="api")
    rig.profile.prepare(ctx)
    devel = _config(rig).get("devel", {})
    assert "enableCsrfProtection" not in devel and "enableRateLimiter" not in devel
    assert not any(PASSWORD in line for line in rig.lines)
    assert any("admin user admin done" in line for line in rig.lines)
    # CSRF is really enforced: a session POST without the header is refused ...
    with httpx.Client(base_url=rig.device.base_url) as http:
        http.get("/")
        assert http.post("/api/login", json={"user": "admin", "pass": PASSWORD}).status_code == 400
        r = http.post(
            "/api/login",
            json={"user": "admin", "pass": PASSWORD},
            headers={"X-CSRF-Token": _token(http)},
        )
        assert r.status_code == 200
        refused = http.post("/plugin/softwareupdate/update", json={"targets": []})
        assert refused.status_code in (400, 403), refused.text
    # ... and the rig's client (which sends the token) still updates through the API
    rig.profile.update(ctx)
    rig.profile.verify(ctx)
    assert ctx.facts["final_version"] == "1.11.8"
    rig.ctx_prepared = ctx


def test_leave_takes_the_feed_off_and_the_card_starts_without_it(rig):
    ctx = rig.ctx_prepared
    rig.profile.leave(ctx)
    config = _config(rig)
    plugins = config.get("plugins", {})
    assert PLUGIN_NAME not in plugins
    assert "check_overlay_url" not in plugins.get("softwareupdate", {})
    assert "pip" not in plugins["softwareupdate"]["checks"]["octoprint"]
    assert "repository" not in plugins.get("pluginmanager", {})
    assert "url" not in plugins.get("health_check", {}).get("checks", {}).get("python_eol", {})
    # the channel the person chose stays
    assert plugins["softwareupdate"]["checks"]["octoprint"]["prerelease"] is False
    assert not (rig.device.home / f".octoprint/plugins/{PLUGIN_NAME}.py").exists()
    # powered on again later, the rig's feed is gone: nothing may ask it or log about it
    feed = rig.feed.url.split("//", 1)[1]
    rig.feed.stop()
    log = rig.device.home / ".octoprint/logs/octoprint.log"
    offset = log.stat().st_size
    sh = rig.device.shell()
    sh.run("sudo service octoprint restart", timeout=120)
    api = rig.profile.api(ctx)
    try:
        assert api.wait_ready(timeout=240)["version"] == "1.11.8"
        api.check(force=True)  # the release check runs against OctoPrint's own sources
    finally:
        api.close()
    deadline = time.monotonic() + 20
    new = ""
    while time.monotonic() < deadline:  # until the start-up fetches have been logged
        new = log.read_bytes()[offset:].decode("utf-8", "replace")
        if "Could not fetch" in new or "health_check" in new:
            break
        time.sleep(0.5)
    assert new and "Starting OctoPrint" in new
    assert feed not in new, [line for line in new.splitlines() if feed in line]
    assert PLUGIN_NAME not in new


def test_the_login_rate_limiter_is_on(rig):
    # last in the module: after three failed logins this address waits a minute
    with httpx.Client(base_url=rig.device.base_url) as http:
        codes = []
        for _ in range(5):
            http.get("/")
            codes.append(
                http.post(
                    "/api/login",
                    json={"user": "admin", "pass": "wrong"},
                    headers={"X-CSRF-Token": _token(http)},
                ).status_code
            )
    assert codes[:3] == [403, 403, 403] and 429 in codes[3:], codes
