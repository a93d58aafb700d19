"""HTTP to a device with httpx: clients with sane timeouts and waiting for a URL."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from rig.errors import InfraError


def client(base_url: str, timeout: float = 30) -> httpx.Client:
    """A client for one device; cookies persist (login sessions)."""
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=5))


def wait_for(
    url: str,
    *,
    timeout: float = 120,
    ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    what: str = "",
    where: str = "",
    interval: float = 0.5,
    http: httpx.Client | None = None,
) -> httpx.Response:
    """Poll ``url`` until ``ok(response)``; InfraError naming what was awaited otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    own = http is None
    http = http or httpx.Client(timeout=httpx.Timeout(5, connect=3))
    try:
        while True:
            try:
                r = http.get(url)
                if ok(r):
                    return r
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() >= deadline:
                raise InfraError(
                    f"{what or url} not ready within {timeout:.0f}s (last: {last})",
                    where=where or url,
                )
            time.sleep(interval)
    finally:
        if own:
            http.close()
