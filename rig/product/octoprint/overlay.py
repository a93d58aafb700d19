"""The software update check overlay the devices would fetch from plugins.octoprint.org.

OctoPrint merges it over its built-in check configs (``_get_check_overlays`` in
``octoprint/plugins/softwareupdate/__init__.py``); it moves checks to new GitHub
users, pip URLs and branches. The rig's feed serves the real one, so a device is
offered what a device in the field would be offered, not more. Fetched once per
run and kept in the cache, so a run without internet uses the last copy it saw.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

URL = "https://plugins.octoprint.org/update_check_overlay.json"
ENV = "RIG_CHECK_OVERLAY_URL"  # another source (http(s) or file://), e.g. a mirror or a test copy


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rig" / "update_check_overlay.json"


def check_overlay(
    url: str | None = None, cache: Path | None = None, log: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """The overlay from ``url``; the cached copy when it cannot be fetched; else none (the
    built-in check configs, with a warning)."""
    url = url or os.environ.get(ENV) or URL
    cache = cache or cache_file()
    try:
        if url.startswith("file://"):
            data = json.loads(Path(url.removeprefix("file://")).read_text())
        else:
            r = httpx.get(url, timeout=20, follow_redirects=True)
            r.raise_for_status()
            data = r.json()
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except (httpx.HTTPError, ValueError, OSError) as e:
        if cache.exists():
            log(f"check overlay: {url} not fetched ({e}); using the copy from {cache}")
            return json.loads(cache.read_text())
        # a device that cannot reach plugins.octoprint.org itself runs on OctoPrint's
        # built-in check configs: the same here, said loudly, never silently
        logging.getLogger("rig").warning(
            "the software update check overlay could not be fetched from %s (%s) and no "
            "copy is cached: the devices use OctoPrint's built-in check configs, as a device "
            "without access to plugins.octoprint.org would (connect the flash host to the "
            "internet once to cache it)",
            url,
            e,
        )
        return {}
    if url.startswith("file://"):
        return data  # a local copy (a mirror, a test's) is not the field's: never cached
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(cache)
    return data
