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

from rig.daemon.egress import host_allowed, host_port
from rig.daemon.queue import WARM, JobRequest
from rig.daemon.settings import DaemonSettings

SHA256_RE = re.compile(r"[0-9a-f]{64}")  # always fullmatch: "$" admits a newline


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


SHA1_RE = re.compile(r"[0-9a-f]{40}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object from a signed but possibly malformed payload: anything else is empty."""
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    """A positive JSON integer (GitHub's ids), never a bool, a float or a digit string."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text(value: Any, limit: int = 120) -> str:
    """A string fit for a mail subject and a log line: control characters become spaces."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return CONTROL_RE.sub(" ", text).strip()[:limit]


def _commit(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and SHA1_RE.fullmatch(value.lower()) else None


def job_request(event: str, payload: Any, settings: DaemonSettings) -> JobRequest:
    """The image a delivery announces, or :class:`Ignored` with the reason.

    Every field is type-checked: a signed delivery with a list where an object
    belongs, a string id or a newline in a name is ignored with the reason, never
    a crash (of the route, of its group commit, or later of a worker lane).
    """
    if event not in ("workflow_run", "release", "repository_dispatch"):
        raise Ignored(f"event {event!r} is not one the rig acts on")
    if not isinstance(payload, dict):
        raise Ignored("payload is not a JSON object")
    repo_name = _obj(payload.get("repository")).get("full_name")
    if not isinstance(repo_name, str) or not repo_name:
        raise Ignored(f"{event}: no repository in the payload")
    watch = settings.repo(repo_name)
    if watch is None:
        raise Ignored(f"{event}: repository {_text(repo_name)} is not configured")
    repo_name = watch.name  # the configured spelling, not the payload's
    if event not in watch.events:
        raise Ignored(f"{event}: not an event configured for {repo_name}")
    if event == "workflow_run":
        return _workflow_run(payload, watch, repo_name, settings.warm_ahead)
    if event == "release":
        return _release(payload, watch, repo_name)
    if event == "repository_dispatch":
        if payload.get("action") != watch.dispatch_event_type:
            raise Ignored(
                f"repository_dispatch: event type {_text(payload.get('action'))!r} is not "
                f"{watch.dispatch_event_type!r}"
            )
        client_payload = payload.get("client_payload")
        if not isinstance(client_payload, dict):
            raise Ignored("repository_dispatch: client_payload is not a JSON object")
        return url_request(client_payload, repo_name, "dispatch", watch.image_hosts)
    raise AssertionError(event)


WARM_ACTIONS = ("requested", "in_progress")  # CI started building: warm what the test needs


def _workflow_run(
    payload: dict[str, Any], watch: Any, repo: str, warm_ahead: bool = True
) -> JobRequest:
    run = _obj(payload.get("workflow_run"))
    action = payload.get("action")
    warm = action in WARM_ACTIONS and warm_ahead
    if action != "completed" and not warm:
        raise Ignored(f"workflow_run: action {_text(action)!r}, waiting for 'completed'")
    if not warm and run.get("conclusion") != "success":
        raise Ignored(f"workflow_run: conclusion {_text(run.get('conclusion'))!r}, not 'success'")
    head_repo = _obj(run.get("head_repository")).get("full_name")
    if not isinstance(head_repo, str | None):
        raise Ignored("workflow_run: head_repository.full_name is not a string")
    if run.get("event") in ("pull_request", "pull_request_target") or (
        head_repo and head_repo.lower() != repo.lower()
    ):  # code from a fork never reaches the rig's devices
        raise Ignored(
            f"workflow_run: built from {_text(head_repo) or 'a pull request'}, not {repo}"
        )
    if watch.workflows:
        path = run.get("path") if isinstance(run.get("path"), str) else ""
        names = {run.get("name"), path.rsplit("/", 1)[-1].split("@", 1)[0]}
        if not names & set(watch.workflows):
            raise Ignored(f"workflow_run: workflow {_text(run.get('name'))!r} is not configured")
    if watch.branches and run.get("head_branch") not in watch.branches:
        raise Ignored(f"workflow_run: branch {_text(run.get('head_branch'))!r} is not configured")
    run_id = _int(run.get("id"))
    attempt = _int(run.get("run_attempt", 1))
    if run_id is None or attempt is None:
        raise Ignored("workflow_run: run id or run_attempt is not a positive integer")
    if warm:  # one per workflow run: requested, in_progress and re-runs name the same build
        return JobRequest(
            key=f"warm:{repo}:{run_id}",
            source="workflow_run",
            title=f"warm ahead: {repo} run {run_id} ({_text(run.get('name')) or 'workflow'}, "
            f"{_text(run.get('head_branch'))}, {_text(action)})",
            repo=repo,
            sha=_commit(run.get("head_sha")),
            image={"kind": "warm", "repo": repo, "run_id": run_id, "tests": test_key(repo, run_id)},
            kind=WARM,
        )
    return JobRequest(
        key=f"{test_key(repo, run_id)}{attempt}",
        source="workflow_run",
        title=f"{repo} run {run_id} ({_text(run.get('name')) or 'workflow'}, "
        f"{_text(run.get('head_branch'))})",
        repo=repo,
        sha=_commit(run.get("head_sha")),
        image={
            "kind": "artifact",
            "repo": repo,
            "run_id": run_id,
            "pattern": watch.artifact,
        },
    )


def test_key(repo: str, run_id: int) -> str:
    """What the test jobs of a workflow run's attempts have their keys start with."""
    return f"workflow_run:{repo}:{run_id}:"


def _release(payload: dict[str, Any], watch: Any, repo: str) -> JobRequest:
    action = payload.get("action")
    release = _obj(payload.get("release"))
    if action not in ("published", "prereleased") and not (
        action == "created" and release.get("draft") is True
    ):
        raise Ignored(f"release: action {_text(action)!r} is not published/prereleased")
    release_id, tag = _int(release.get("id")), release.get("tag_name")
    if release_id is None or not isinstance(tag, str) or not tag:
        raise Ignored("release: id is not a positive integer or tag_name not a string")
    raw_assets = release.get("assets") or []
    if not isinstance(raw_assets, list):
        raise Ignored("release: assets is not a list")
    assets = [
        {"id": _int(a.get("id")), "name": a.get("name"), "size": _int(a.get("size"))}
        for a in map(_obj, raw_assets)
        if _int(a.get("id")) and isinstance(a.get("name"), str)
    ]
    if not any(is_image_asset(a["name"], watch.asset) for a in assets):
        raise Ignored(f"release {_text(tag)}: no asset matches {watch.asset!r}")
    return JobRequest(
        key=f"release:{repo}:{release_id}",
        source="release",
        title=f"{repo} release {_text(tag)}",
        repo=repo,
        sha=None,
        image={
            "kind": "release",
            "repo": repo,
            "release_id": release_id,
            "tag": tag,
            "pattern": watch.asset,
            "assets": assets,
        },
    )


def is_image_asset(name: str, pattern: str) -> bool:
    """An image asset, not one of its checksum or metadata companions."""
    return fnmatch(name, pattern) and not name.endswith((".sha256", ".md5", ".json", ".bmap"))


def url_request(
    data: dict[str, Any], repo: str | None, source: str, image_hosts: tuple[str, ...]
) -> JobRequest:
    """repository_dispatch client_payload / direct notification: {image_url, sha256, ...}.

    ``image_url`` must name one of ``image_hosts`` (the repository's allow-list);
    ``release_id``/``tag``, when given, must be an integer / a string.
    """
    url = data.get("image_url")
    sha = data.get("sha256")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise Ignored(f"{source}: client_payload.image_url missing or not an http(s) URL")
    if CONTROL_RE.search(url) or " " in url or "@" in url.split("/", 3)[2]:
        raise Ignored(f"{source}: client_payload.image_url holds white space or a user name")
    if not host_allowed(url, image_hosts):
        raise Ignored(
            f"{source}: image_url host {host_port(url)} is not in the repository's image_hosts"
        )
    if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha.lower()):
        raise Ignored(f"{source}: client_payload.sha256 missing or not 64 hex digits")
    sha = sha.lower()
    image: dict[str, Any] = {"kind": "url", "url": url, "sha256": sha, "repo": repo}
    if data.get("release_id") is not None:
        if _int(data["release_id"]) is None:
            raise Ignored(f"{source}: client_payload.release_id is not a positive integer")
        image["release_id"] = data["release_id"]
    if data.get("tag") is not None:
        if not isinstance(data["tag"], str) or not data["tag"] or CONTROL_RE.search(data["tag"]):
            raise Ignored(f"{source}: client_payload.tag is not a one-line string")
        image["tag"] = data["tag"]
    return JobRequest(
        key=f"url:{sha}",
        source=source,
        title=_text(url.split("?", 1)[0].rsplit("/", 1)[-1]) + (f" from {repo}" if repo else ""),
        repo=repo,
        sha=_commit(data.get("commit")),
        image=image,
    )
