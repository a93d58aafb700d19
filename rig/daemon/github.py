"""The GitHub REST calls the daemon makes, and nothing else.

Downloads follow GitHub's redirects (artifact zips and release assets are
served from short-lived storage URLs); httpx drops the Authorization header
when a redirect leaves the API's origin, so the token never reaches the
storage host. The token is sent only to the API's exact origin (scheme, host,
port), and every request and redirect passes the :class:`Egress` rules first.
Every failure is an InfraError naming the call; an answer that is not the JSON
the API sends (a proxy's HTML page) is one too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from rig import __version__
from rig.card import download as card_download
from rig.config import Secret
from rig.daemon.egress import Egress, host_port
from rig.errors import InfraError

API_VERSION = "2022-11-28"


class GitHub:
    """A small synchronous client (the worker thread is synchronous)."""

    def __init__(
        self,
        api_url: str,
        token: Secret | None,
        timeout: float = 30.0,
        egress: Egress | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.egress = egress or Egress(self.api_url)
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"rig/{__version__}",
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        self._timeout = httpx.Timeout(timeout, read=max(timeout, 120.0))
        self._client = httpx.Client(
            base_url=self.api_url,
            headers=headers,
            timeout=self._timeout,
            follow_redirects=True,
            event_hooks={"request": [self.egress.hook]},
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise InfraError(f"GitHub {method} {path}: {e}", where="github") from e
        if response.status_code >= 400:
            raise InfraError(
                f"GitHub {method} {path}: HTTP {response.status_code} {response.text[:200]}",
                where="github",
                hint="check github.api_url and that the token may read Actions/contents"
                if response.status_code in (401, 403, 404)
                else "",
            )
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise InfraError(
                f"GitHub {method} {path}: answered {kind}, not JSON",
                where="github",
                hint="a proxy or captive portal may be answering instead of GitHub",
            ) from None

    def object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A JSON object, or InfraError: a list or a string where GitHub sends an object."""
        data = self.json(method, path, **kwargs)
        if not isinstance(data, dict):
            raise InfraError(f"GitHub {method} {path}: answer is not a JSON object", where="github")
        return data

    # reads --------------------------------------------------------------------

    def run_artifacts(self, repo: str, run_id: int) -> list[dict[str, Any]]:
        data = self.object("GET", f"/repos/{repo}/actions/runs/{run_id}/artifacts")
        return [a for a in data.get("artifacts") or [] if isinstance(a, dict)]

    def release(self, repo: str, release_id: int) -> dict[str, Any]:
        return self.object("GET", f"/repos/{repo}/releases/{int(release_id)}")

    def release_by_tag(self, repo: str, tag: str) -> dict[str, Any]:
        return self.object("GET", f"/repos/{repo}/releases/tags/{quote(tag, safe='')}")

    def commit_sha(self, repo: str, ref: str) -> str:
        """The commit a tag or branch names (a release's tag: where statuses go)."""
        sha = self.object("GET", f"/repos/{repo}/commits/{quote(ref, safe='')}").get("sha")
        if not isinstance(sha, str):
            raise InfraError(f"GitHub: no commit for {ref}", where=f"{repo} commits")
        return sha

    def releases(self, repo: str, per_page: int = 20) -> list[dict[str, Any]]:
        """Newest releases, drafts included (only an authenticated list shows those)."""
        data = self.json("GET", f"/repos/{repo}/releases", params={"per_page": per_page})
        if not isinstance(data, list):
            raise InfraError(f"GitHub: the releases of {repo} are not a JSON list", where="github")
        return [r for r in data if isinstance(r, dict)]

    def asset_text(self, repo: str, asset_id: int, limit: int = 1 << 20) -> str:
        response = self._call(
            "GET",
            f"/repos/{repo}/releases/assets/{int(asset_id)}",
            headers={"Accept": "application/octet-stream"},
        )
        return response.content[:limit].decode("utf-8", "replace")

    # downloads ------------------------------------------------------------------

    def download(
        self,
        url: str,
        dest: Path,
        *,
        accept: str | None = None,
        sha256: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """Fetch ``url`` (API path or absolute URL) to ``dest``; return its SHA-256.

        The card layer's resumable download does the transfer: an interrupted
        download (network, daemon restart) continues from its ``.part`` file, and
        ``sha256``, when known, is checked before the file is renamed into place;
        more than ``max_bytes`` stops the transfer.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        absolute = url.startswith(("http://", "https://"))
        foreign = absolute and not self.egress.is_api(url)
        if foreign:  # no token for a foreign host: only the API's own origin gets it
            http = httpx.Client(
                headers={"User-Agent": self._client.headers["User-Agent"]},
                timeout=self._timeout,
                follow_redirects=True,
                event_hooks={"request": [self.egress.hook]},
            )
        else:
            headers = httpx.Headers(self._client.headers)  # case-insensitive: one Accept
            if accept:
                headers["Accept"] = accept
            http = httpx.Client(
                base_url=self.api_url,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=True,  # the token is dropped when a redirect leaves the API
                event_hooks={"request": [self.egress.hook]},
            )
        with http:
            target = str(http.build_request("GET", url).url)
            try:
                digest = card_download.download(
                    target, part, expected_sha256=sha256, http=http, max_bytes=max_bytes
                )
            except InfraError as e:
                if not foreign:
                    raise
                # the dashboard shows job errors: say which host failed and how, never the
                # low-level answer (what a probe of someone's network would want to learn)
                message = e.message
                if message.startswith("download interrupted"):
                    message = "download interrupted"
                raise InfraError(
                    f"download from {host_port(url)}: {message}", where="image_url", hint=e.hint
                ) from None
        os.replace(part, dest)
        return digest

    def download_artifact(
        self,
        repo: str,
        artifact_id: int,
        dest: Path,
        sha256: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """The artifact's zip (GitHub answers 302 to a short-lived storage URL)."""
        return self.download(
            f"/repos/{repo}/actions/artifacts/{int(artifact_id)}/zip",
            dest,
            sha256=sha256,
            max_bytes=max_bytes,
        )

    def download_asset(
        self,
        repo: str,
        asset_id: int,
        dest: Path,
        sha256: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """A release asset's bytes (``Accept: application/octet-stream``: 200 or 302)."""
        return self.download(
            f"/repos/{repo}/releases/assets/{int(asset_id)}",
            dest,
            accept="application/octet-stream",
            sha256=sha256,
            max_bytes=max_bytes,
        )

    # writes -----------------------------------------------------------------------

    def update_release(self, repo: str, release_id: int, **fields: Any) -> dict[str, Any]:
        return self.object("PATCH", f"/repos/{repo}/releases/{int(release_id)}", json=fields)

    def status(
        self, repo: str, sha: str, state: str, context: str, description: str, target_url: str
    ) -> None:
        self.json(
            "POST",
            f"/repos/{repo}/statuses/{sha}",
            json={
                "state": state,
                "context": context,
                "description": description[:140],
                "target_url": target_url,
            },
        )

    def dispatch(self, repo: str, event_type: str, client_payload: dict[str, Any]) -> None:
        self.json(
            "POST",
            f"/repos/{repo}/dispatches",
            json={"event_type": event_type, "client_payload": client_payload},
        )
