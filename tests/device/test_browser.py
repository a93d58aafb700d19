"""The Chromium launcher: system Chromium through executable_path, or $RIG_CHROMIUM."""

from __future__ import annotations

import pytest

from rig.device.browser import CHROMIUM_ARGS, chromium_executable, launch_chromium, launch_options
from rig.errors import InfraError


def test_rig_chromium_overrides_and_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("RIG_CHROMIUM", str(tmp_path / "nope"))
    with pytest.raises(InfraError, match="does not exist"):
        chromium_executable()
    fake = tmp_path / "chromium"
    fake.write_text("")
    monkeypatch.setenv("RIG_CHROMIUM", str(fake))
    assert launch_options(headless=False) == {
        "headless": False,
        "args": list(CHROMIUM_ARGS),
        "executable_path": str(fake),
    }


@pytest.mark.slow
def test_launches_a_real_chromium_and_renders(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.delenv("RIG_CHROMIUM", raising=False)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_content("<h1 id=t>rig</h1>")
        assert page.locator("#t").inner_text() == "rig"
        browser.close()
