"""Launch Chromium for Playwright: Playwright's own build where installed, else the system's.

On the flash host (Raspberry Pi OS / Debian, aarch64) Playwright often cannot
download its browser; Debian's ``chromium`` works through ``executable_path``.
``$RIG_CHROMIUM`` overrides both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rig.errors import InfraError

SYSTEM_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _playwright_chromium(playwright: Any) -> str | None:
    try:
        path = playwright.chromium.executable_path
    except Exception:
        return None
    return path if path and Path(path).exists() else None


def chromium_executable(playwright: Any | None = None) -> str | None:
    """The Chromium to use, or None for Playwright's own (when it is installed)."""
    env = os.environ.get("RIG_CHROMIUM")
    if env:
        if not Path(env).exists():
            raise InfraError(f"$RIG_CHROMIUM={env} does not exist", where="browser")
        return env
    if playwright is not None and _playwright_chromium(playwright):
        return None
    for candidate in SYSTEM_CHROMIUM:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    raise InfraError(
        "no Chromium found",
        where="browser",
        hint="`playwright install chromium`, or `apt install chromium`, or set $RIG_CHROMIUM",
    )


def display_available() -> bool:
    """A visible browser can open here (X11 or Wayland); else every browser runs headless."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def launch_options(playwright: Any | None = None, *, headless: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``playwright.chromium.launch`` (also used by pytest-playwright)."""
    options: dict[str, Any] = {"headless": headless, "args": list(CHROMIUM_ARGS)}
    exe = chromium_executable(playwright)
    if exe:
        options["executable_path"] = exe
    return options


def launch_chromium(playwright: Any, *, headless: bool = True) -> Any:
    """A launched Browser; headless unless the run is interactive."""
    try:
        return playwright.chromium.launch(**launch_options(playwright, headless=headless))
    except Exception as e:
        raise InfraError(f"cannot start Chromium: {e}", where="browser") from e
