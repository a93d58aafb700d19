"""GitHub deliveries in, job requests out: signatures, event filters and image locations.

Pure functions over bytes and parsed JSON (no I/O), so each rule is tested on
its own: the route reads the body under a size limit, checks the signature
over the exact bytes, and hands the payload here to learn whether it names an
image to test, and where that image is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from fnmatch import fnmatch
from typing import Any

from rig.daemon.queue import JobRequest
from rig.daemon.settings import DaemonSettings

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def signature(secret: bytes, body: bytes) -> str:
    """GitHub's X-Hub-Signature-256 value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of X-Hub-Signature-256 over the exact received bytes."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.encode())


def direct_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Signature of a direct notification (curl from a workflow): HMAC over ``ts.body``."""
    return signature(secret, timestamp.encode() + b"." + body)


def verify_direct(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    header: str | None,
    now: float,
    window: float,
) -> str | None:
    """None when valid, else why not (a replayed or stale request is refused)."""
    if not timestamp or not header:
        return "missing X-Rig-Timestamp or X-Rig-Signature-256"
    try:
        ts = float(timestamp)
    except ValueError:
        return "bad timestamp"
    if abs(now - ts) > window:
        return "timestamp outside the accepted window"
    expected = direct_signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), header.encode()):
        return "signature mismatch"
    return None


class Ignored(Exception):
    """The delivery is fine but names nothing to test; the message says why."""


def job_request(event: str, payload: Any, settings: DaemonSettings) -> JobRequest:
    """The image a delivery announces, or :class:`Ignored` with the reason."""
    if event not in ("workflow_run", "release", "repository_dispatch"):
        raise Ignored(f"event {event!r} is not one the rig acts on")
    if not isinstance(payload, dict):
        raise Ignored("payload is not a JSON object")
    repo_name = (payload.get("repository") or {}).get("full_name")
    if not repo_name:
        raise Ignored(f"{event}: no repository in the payload")
    watch = settings.repo(repo_name)
    if watch is None:
        raise Ignored(f"{event}: repository {repo_name} is not configured")
    if event not in watch.events:
        raise Ignored(f"{event}: not an event configured for {repo_name}")
    if event == "workflow_run":
        return _workflow_run(payload, watch, repo_name)
    if event == "release":
        return _release(payload, watch, repo_name)
    if event == "repository_dispatch":
        if payload.get("action") != watch.dispatch_event_type:
            raise Ignored(
                f"repository_dispatch: event type {payload.get('action')!r} is not "
                f"{watch.dispatch_event_type!r}"
            )
        return url_request(payload.get("client_payload") or {}, repo_name, "dispatch")
    raise AssertionError(event)


def _workflow_run(payload: dict[str, Any], watch: Any, repo: str) -> JobRequest:
    run = payload.get("workflow_run") or {}
    if payload.get("action") != "completed":
        raise Ignored(f"workflow_run: action {payload.get('action')!r}, waiting for 'completed'")
    if run.get("conclusion") != "success":
        raise Ignored(f"workflow_run: conclusion {run.get('conclusion')!r}, not 'success'")
    head_repo = (run.get("head_repository") or {}).get("full_name")
    if run.get("event") in ("pull_request", "pull_request_target") or (
        head_repo and head_repo.lower() != repo.lower()
    ):  # code from a fork never reaches the rig's devices
        raise Ignored(f"workflow_run: built from {head_repo or 'a pull request'}, not {repo}")
    if watch.workflows:
        path = str(run.get("path") or "")
        names = {run.get("name"), path.rsplit("/", 1)[-1].split("@", 1)[0]}
        if not names & set(watch.workflows):
            raise Ignored(f"workflow_run: workflow {run.get('name')!r} is not configured")
    if watch.branches and run.get("head_branch") not in watch.branches:
        raise Ignored(f"workflow_run: branch {run.get('head_branch')!r} is not configured")
    run_id, attempt = run.get("id"), run.get("run_attempt", 1)
    if not isinstance(run_id, int):
        raise Ignored("workflow_run: no run id")
    return JobRequest(
        key=f"workflow_run:{repo}:{run_id}:{attempt}",
        source="workflow_run",
        title=f"{repo} run {run_id} ({run.get('name') or 'workflow'}, {run.get('head_branch')})",
        repo=repo,
        sha=run.get("head_sha"),
        image={
            "kind": "artifact",
            "repo": repo,
            "run_id": run_id,
            "pattern": watch.artifact,
        },
    )


def _release(payload: dict[str, Any], watch: Any, repo: str) -> JobRequest:
    action = payload.get("action")
    release = payload.get("release") or {}
    if action not in ("published", "prereleased") and not (
        action == "created" and release.get("draft")
    ):
        raise Ignored(f"release: action {action!r} is not published/prereleased")
    assets = [
        {"id": a.get("id"), "name": a.get("name", ""), "size": a.get("size")}
        for a in release.get("assets") or []
    ]
    if not any(is_image_asset(a["name"], watch.asset) for a in assets):
        raise Ignored(f"release {release.get('tag_name')}: no asset matches {watch.asset!r}")
    return JobRequest(
        key=f"release:{repo}:{release.get('id')}",
        source="release",
        title=f"{repo} release {release.get('tag_name')}",
        repo=repo,
        sha=None,
        image={
            "kind": "release",
            "repo": repo,
            "release_id": release.get("id"),
            "tag": release.get("tag_name"),
            "pattern": watch.asset,
            "assets": assets,
        },
    )


def is_image_asset(name: str, pattern: str) -> bool:
    """An image asset, not one of its checksum or metadata companions."""
    return fnmatch(name, pattern) and not name.endswith((".sha256", ".md5", ".json", ".bmap"))


def url_request(data: dict[str, Any], repo: str | None, source: str) -> JobRequest:
    """repository_dispatch client_payload / direct notification: {image_url, sha256, ...}."""
    url = data.get("image_url")
    sha = str(data.get("sha256") or "").lower()
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise Ignored(f"{source}: client_payload.image_url missing or not an http(s) URL")
    if not SHA256_RE.match(sha):
        raise Ignored(f"{source}: client_payload.sha256 missing or not 64 hex digits")
    image: dict[str, Any] = {"kind": "url", "url": url, "sha256": sha, "repo": repo}
    for key in ("release_id", "tag"):
        if data.get(key) is not None:
            image[key] = data[key]
    return JobRequest(
        key=f"url:{sha}",
        source=source,
        title=f"{url.rsplit('/', 1)[-1]}" + (f" from {repo}" if repo else ""),
        repo=repo,
        sha=data.get("commit") if isinstance(data.get("commit"), str) else None,
        image=image,
    )
