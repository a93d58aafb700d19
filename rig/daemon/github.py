"""The GitHub REST calls the daemon makes, and nothing else.

Downloads follow GitHub's redirects (artifact zips and release assets are
served from short-lived storage URLs); httpx drops the Authorization header
when a redirect leaves the API's origin, so the token never reaches the
storage host. Every failure is an InfraError naming the call.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from rig import __version__
from rig.config import Secret
from rig.errors import InfraError

API_VERSION = "2022-11-28"


class GitHub:
    """A small synchronous client (the worker thread is synchronous)."""

    def __init__(self, api_url: str, token: Secret | None, timeout: float = 30.0) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": f"rig/{__version__}",
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token.reveal()}"
        self._client = httpx.Client(
            base_url=self.api_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=max(timeout, 120.0)),
            follow_redirects=True,
        )

        self._plain = httpx.Client(
            headers={"User-Agent": headers["User-Agent"]},
            timeout=httpx.Timeout(timeout, read=max(timeout, 120.0)),
            follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()
        self._plain.close()

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
        return response.json() if response.content else None

    # reads --------------------------------------------------------------------

    def run_artifacts(self, repo: str, run_id: int) -> list[dict[str, Any]]:
        data = self.json("GET", f"/repos/{repo}/actions/runs/{run_id}/artifacts")
        return list(data.get("artifacts", []))

    def release(self, repo: str, release_id: int) -> dict[str, Any]:
        return self.json("GET", f"/repos/{repo}/releases/{release_id}")

    def release_by_tag(self, repo: str, tag: str) -> dict[str, Any]:
        return self.json("GET", f"/repos/{repo}/releases/tags/{tag}")

    def releases(self, repo: str, per_page: int = 20) -> list[dict[str, Any]]:
        """Newest releases, drafts included (only an authenticated list shows those)."""
        return list(self.json("GET", f"/repos/{repo}/releases", params={"per_page": per_page}))

    def asset_text(self, repo: str, asset_id: int, limit: int = 1 << 20) -> str:
        response = self._call(
            "GET",
            f"/repos/{repo}/releases/assets/{asset_id}",
            headers={"Accept": "application/octet-stream"},
        )
        return response.content[:limit].decode("utf-8", "replace")

    # downloads ------------------------------------------------------------------

    def download(self, url: str, dest: Path, *, accept: str | None = None) -> str:
        """Stream ``url`` (API path or absolute URL) to ``dest`` atomically; return its SHA-256."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        headers = {"Accept": accept} if accept else {}
        foreign = url.startswith(("http://", "https://")) and not url.startswith(self.api_url)
        client = self._plain if foreign else self._client  # no token for a foreign host
        try:
            with (
                client.stream("GET", url, headers=headers) as response,
                open(tmp, "wb") as f,
            ):
                if response.status_code >= 400:
                    raise InfraError(f"download {url}: HTTP {response.status_code}", where="github")
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                f.flush()
                os.fsync(f.fileno())
        except httpx.HTTPError as e:
            tmp.unlink(missing_ok=True)
            raise InfraError(f"download {url}: {e}", where="github") from e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        return digest.hexdigest()

    def download_artifact(self, repo: str, artifact_id: int, dest: Path) -> str:
        return self.download(f"/repos/{repo}/actions/artifacts/{artifact_id}/zip", dest)

    def download_asset(self, repo: str, asset_id: int, dest: Path) -> str:
        return self.download(
            f"/repos/{repo}/releases/assets/{asset_id}",
            dest,
            accept="application/octet-stream",
        )

    # writes -----------------------------------------------------------------------

    def update_release(self, repo: str, release_id: int, **fields: Any) -> dict[str, Any]:
        return self.json("PATCH", f"/repos/{repo}/releases/{release_id}", json=fields)

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
