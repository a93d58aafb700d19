"""OctoPrint's HTTP API, as far as the profile needs it (login session, server, update)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from rig.device.http import wait_for
from rig.errors import InfraError, ProductError


class OctoPrintAPI:
    """A logged-in session against one OctoPrint (cookies; CSRF header when enabled)."""

    def __init__(self, base_url: str, user: str, password: str, *, where: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.user, self.password = user, password
        self.where = where or self.base_url
        # no keep-alive: the device's front (haproxy on OctoPi, the virtual rig's forwarder)
        # may close an idle connection at any moment, and a request sent on a connection it
        # just closed fails with "Server disconnected without sending a response"
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(60, connect=5),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self.http.close()

    def _headers(self) -> dict[str, str]:
        for name, value in self.http.cookies.items():
            if name.startswith("csrf_token"):
                return {"X-CSRF-Token": value}
        return {}

    def wait_online(self, timeout: float = 180) -> None:
        wait_for(
            f"{self.base_url}/online.txt",
            timeout=timeout,
            what="OctoPrint /online.txt",
            where=self.where,
        )

    def login(self, retry_for: float = 30) -> dict[str, Any]:
        """Log in; connection resets right after a (re)start are retried for a while."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                self.http.cookies.clear()
                self.http.get("/")  # CSRF cookie, where the version sets one
                r = self.http.post(
                    "/api/login",
                    json={"user": self.user, "pass": self.password, "remember": True},
                    headers=self._headers(),
                )
                break
            except httpx.TransportError as e:
                if time.monotonic() > deadline:
                    raise InfraError(
                        f"cannot reach OctoPrint to log in: {e}", where=self.where
                    ) from e
                time.sleep(1)
        if r.status_code != 200:
            raise InfraError(
                f"cannot log in as {self.user!r}: HTTP {r.status_code} {r.text[:200]}",
                where=self.where,
                hint="prepare creates this admin user; was prepare run?",
            )
        return r.json()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the session; logs in again once on 401/403 (after a restart)."""
        for attempt in (1, 2):
            r = self.http.request(method, path, headers=self._headers(), **kwargs)
            if r.status_code not in (401, 403) or attempt == 2:
                return r
            self.login()
        raise AssertionError("unreachable")

    def get_json(self, path: str, **kwargs: Any) -> Any:
        r = self.request("GET", path, **kwargs)
        if r.status_code != 200:
            raise InfraError(f"GET {path}: HTTP {r.status_code} {r.text[:200]}", where=self.where)
        return r.json()

    def server(self) -> dict[str, Any]:
        """``{"version": ..., "safemode": ...}``."""
        return self.get_json("/api/server")

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        """/online.txt answers, we can log in and /api/server answers."""
        deadline = time.monotonic() + timeout
        self.wait_online(timeout)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.login()
                return self.server()
            except (InfraError, httpx.HTTPError) as e:
                last = e
                time.sleep(1)
        raise InfraError(f"/api/server not answering: {last}", where=self.where)

    def check(self, force: bool = True, target: str = "octoprint") -> dict[str, Any]:
        params = {"targets": target, "force": "true" if force else "false"}
        return self.get_json("/plugin/softwareupdate/check", params=params, timeout=120)

    def start_update(self, target: str = "octoprint") -> dict[str, Any]:
        r = self.request("POST", "/plugin/softwareupdate/update", json={"targets": [target]})
        if r.status_code == 409:
            # throttled (under-voltage), unsupported environment, low storage: the device's
            # state refuses, the release has not been tried (softwareupdate perform_update)
            message = _error_description(r)
            raise InfraError(
                f"the device refused to start the update: {message}",
                where=f"{self.where} update",
                hint=refusal_hint(message),
            )
        if r.status_code != 200:
            raise ProductError(
                f"the update was refused: HTTP {r.status_code} {r.text[:300]}",
                where=f"{self.where} update",
            )
        return r.json()

    def throttle_state(self) -> dict[str, Any] | None:
        """Pi support's view of the firmware's throttle flags; None where it is not loaded."""
        r = self.request("GET", "/api/plugin/pi_support")
        if r.status_code != 200:
            return None
        state = r.json().get("throttle_state")
        return state if isinstance(state, dict) else None

    def updatelog(self) -> list[dict[str, Any]] | None:
        """The update log, [] when empty; None where the version has none (before 1.7.0)."""
        r = self.request("GET", "/plugin/softwareupdate/updatelog")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            return []
        return r.json().get("updatelog", [])


def _error_description(r: httpx.Response) -> str:
    """Flask's abort(409, description=...) as OctoPrint answers it: JSON or an HTML page."""
    try:
        data = r.json()
        if isinstance(data, dict) and data.get("error"):
            return str(data["error"])
    except ValueError:
        pass
    match = re.search(r"<p>(.*?)</p>", r.text, re.S)
    return (match.group(1) if match else r.text[:300]).strip() or f"HTTP {r.status_code}"


def refusal_hint(message: str) -> str:
    if "throttled" in message:
        return (
            "under-voltage or overheating (vcgencmd get_throttled): give the device "
            "a better power supply or cable, then run the scenario again"
        )
    if "disk space" in message:
        return "the device's card is too full to update; reflash or use a larger card"
    return "the device's environment does not allow updates; see the facts and octoprint.log"
