"""What "release it" means, once the maintainer approved: one configured action.

- ``unmark``: remove ``<!-- mark:untested -->`` from the release body (the
  downloads page of OctoPi-UpToDate ignores releases carrying it);
- ``undraft``: publish a draft release;
- ``dispatch``: send a repository_dispatch event (a workflow publishes);
- ``command``: run a command with the job in its environment.

``unmark`` and ``undraft`` are idempotent, so a publish interrupted by a crash
is simply run again; ``dispatch`` and ``command`` are not: an interrupted one is
left *uncertain* for a person, and both carry a stable publish id
(``client_payload.publish_id``, ``$RIG_PUBLISH_ID``) receivers deduplicate on.
"""

from __future__ import annotations

import os
import subprocess
from fnmatch import fnmatch
from typing import Any

from rig.config import mask
from rig.daemon.childenv import child_env
from rig.daemon.github import GitHub
from rig.daemon.queue import Job
from rig.daemon.settings import MARKER
from rig.errors import ConfigError, InfraError, ProductError

ACTIONS = ("unmark", "undraft", "dispatch", "command")
IDEMPOTENT = ("unmark", "undraft")  # safe to run again after an interruption


def publish_id(job: Job) -> str:
    """The same for every attempt at publishing this job's image: receivers deduplicate on it."""
    return f"rig-{job.id}-{(job.image_sha256 or 'none')[:16]}"


def release_vouches(gh: GitHub, repo: str, release: dict[str, Any], sha256: str) -> str | None:
    """How ``release`` names the image whose SHA-256 is ``sha256``, or None if it does not.

    An asset's ``digest`` (GitHub computes it on upload) is the proof; where GitHub
    gives none, a ``.sha256`` or ``rpi-imager.json`` companion naming the hash is.
    """
    from rig.daemon.fetch import checksum_from_imager_json, checksum_from_sha256_file

    assets = [a for a in release.get("assets") or [] if isinstance(a, dict)]
    for a in assets:
        if str(a.get("digest") or "").lower() == f"sha256:{sha256}":
            return f"asset {a.get('name')} (digest)"
    if any(a.get("digest") for a in assets):
        return None  # GitHub states digests: none is the tested image
    for a in assets:
        name = str(a.get("name") or "")
        if not isinstance(a.get("id"), int):
            continue
        if name.endswith(".sha256"):
            found = checksum_from_sha256_file(gh.asset_text(repo, a["id"]), name[:-7])
        elif fnmatch(name, "*rpi-imager*.json"):
            found = checksum_from_imager_json(gh.asset_text(repo, a["id"]))
        else:
            continue
        if found == sha256:
            return f"{name} (checksum)"
    return None


def fixed_release(job: Job) -> dict[str, Any] | None:
    """The release this job publishes, as fixed before the test: {id, tag} or None."""
    fixed = job.image.get("publish_release")
    if isinstance(fixed, dict) and isinstance(fixed.get("id"), int):
        return fixed
    if job.image.get("kind") == "release" and isinstance(job.image.get("release_id"), int):
        return {"id": job.image["release_id"], "tag": job.image.get("tag")}
    return None


def publish_target(job: Job, config: dict[str, Any]) -> str:
    """What approving does, in words: shown on the confirm page and signed into the token."""
    action = config.get("action", "unmark")
    repo = job.image.get("repo") or job.repo or "?"
    fixed = fixed_release(job)
    where = f"{repo}@{fixed.get('tag') or fixed['id']}" if fixed else f"{repo} (no release)"
    if action == "dispatch":
        target = config.get("repository") or job.repo or "?"
        return f"{where} via dispatch {config.get('event_type', 'rig-approved')} to {target}"
    if action == "command":
        argv = config.get("command")
        first = argv[0] if isinstance(argv, list) and argv else str(argv or "").split(" ")[0]
        return f"{where} via command {first}"
    return f"{where} via {action}"


def _release_of(job: Job, gh: GitHub) -> tuple[str, dict[str, Any]]:
    """The release fixed before the test, re-read now, still holding the tested image."""
    repo = job.image.get("repo") or job.repo
    fixed = fixed_release(job)
    if not repo or fixed is None:
        raise ConfigError(
            f"job {job.id} ({job.source}) names no release to publish",
            where="rig.yaml: daemon.publish.action",
            hint="builds announced by workflow_run carry no release: use action dispatch or "
            "command, or send release_id/tag in the client_payload",
        )
    release = gh.release(repo, fixed["id"])
    check_release(job, gh, repo, release)
    return repo, release


def check_release(job: Job, gh: GitHub, repo: str, release: dict[str, Any]) -> str:
    """Refuse (ProductError: not retried) a release that no longer holds the tested image."""
    sha = job.image_sha256 or ""
    tested = job.image.get("tested_asset")
    if isinstance(tested, dict):  # the release's own asset was tested: it must still be there
        same = [
            a
            for a in release.get("assets") or []
            if isinstance(a, dict) and a.get("id") == tested.get("id")
        ]
        digest = str(same[0].get("digest") or "") if same else ""
        if not same or (digest and digest.lower() != f"sha256:{sha}"):
            raise ProductError(
                f"release {release.get('tag_name')}: the tested asset {tested.get('name')} "
                "was replaced or deleted after the test; nothing was published",
                where=f"{repo} release {release.get('id')}",
                hint="a new upload is a new image: it is tested when its release is announced",
            )
    how = release_vouches(gh, repo, release, sha)
    if how is None:
        raise ProductError(
            f"release {release.get('tag_name')} holds no asset with the tested SHA-256 {sha}; "
            "nothing was published",
            where=f"{repo} release {release.get('id')}",
        )
    return how


def publish(job: Job, config: dict[str, Any], gh: GitHub, public_url: str) -> str:
    """Run the configured action for an approved job; returns what was done."""
    action = config.get("action", "unmark")
    if action == "unmark":
        marker = config.get("marker", MARKER)
        repo, release = _release_of(job, gh)
        body = release.get("body") or ""
        if marker not in body:
            return f"release {release.get('tag_name')}: marker already gone"
        new_body = "\n".join(
            line for line in body.replace(marker, "\0").split("\n") if line.strip() != "\0"
        ).replace("\0", "")
        gh.update_release(repo, release["id"], body=new_body)
        return f"release {release.get('tag_name')}: removed {marker}"
    if action == "undraft":
        repo, release = _release_of(job, gh)
        if not release.get("draft"):
            return f"release {release.get('tag_name')}: already published"
        gh.update_release(repo, release["id"], draft=False)
        return f"release {release.get('tag_name')}: published"
    if action == "dispatch":
        repo = config.get("repository") or job.repo
        if not repo:
            raise ConfigError("no repository to dispatch to", where="daemon.publish.repository")
        event = config.get("event_type", "rig-approved")
        payload = {
            "publish_id": publish_id(job),
            "job": job.id,
            "sha256": job.image_sha256,
            "image": os.path.basename(job.image_path or ""),
            "report": f"{public_url}/jobs/{job.id}",
        }
        fixed = fixed_release(job)
        if fixed is not None:  # a release named by the build must hold the tested image
            _release_of(job, gh)
            payload["release_id"], payload["tag"] = fixed["id"], fixed.get("tag")
        gh.dispatch(repo, event, payload)
        return f"dispatched {event} to {repo}"
    if action == "command":
        argv = config.get("command")
        if not argv:
            raise ConfigError("no command", where="daemon.publish.command")
        fixed = fixed_release(job)
        if fixed is not None:
            _release_of(job, gh)
        env = child_env(
            {
                "RIG_JOB": str(job.id),
                "RIG_PUBLISH_ID": publish_id(job),
                "RIG_IMAGE": job.image_path or "",
                "RIG_IMAGE_SHA256": job.image_sha256 or "",
                "RIG_REPORT_DIR": job.report_dir or "",
                "RIG_REPOSITORY": job.repo or "",
                "RIG_RELEASE_ID": str(fixed["id"] if fixed else ""),
                "RIG_TAG": str((fixed or {}).get("tag") or ""),
            },
            passthrough=config.get("env", ()),
        )
        try:
            done = subprocess.run(
                argv if isinstance(argv, list) else ["/bin/sh", "-c", argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=float(config.get("timeout", 600)),
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InfraError(f"publish command failed: {e}", where="daemon.publish.command") from e
        if done.returncode != 0:
            raise InfraError(
                mask(f"publish command exited {done.returncode}: {done.stderr.strip()[-300:]}"),
                where="daemon.publish.command",
            )
        return mask(f"command exited 0: {done.stdout.strip()[-200:]}")
    raise ConfigError(
        f"unknown publish action {action!r}", where="daemon.publish.action", hint=str(ACTIONS)
    )
