"""What "release it" means, once the maintainer approved: one configured action.

- ``unmark``: remove ``<!-- mark:untested -->`` from the release body (the
  downloads page of OctoPi-UpToDate ignores releases carrying it);
- ``undraft``: publish a draft release;
- ``dispatch``: send a repository_dispatch event (a workflow publishes);
- ``command``: run a command with the job in its environment.

``unmark`` and ``undraft`` are idempotent, so a publish interrupted by a crash
is simply run again.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from rig.daemon.github import GitHub
from rig.daemon.queue import Job
from rig.daemon.settings import MARKER
from rig.errors import ConfigError, InfraError

ACTIONS = ("unmark", "undraft", "dispatch", "command")


def _release_of(job: Job, gh: GitHub) -> tuple[str, dict[str, Any]]:
    repo = job.image.get("repo") or job.repo
    if repo and job.image.get("release_id"):
        return repo, gh.release(repo, int(job.image["release_id"]))
    if repo and job.image.get("tag"):
        return repo, gh.release_by_tag(repo, str(job.image["tag"]))
    raise ConfigError(
        f"job {job.id} ({job.source}) names no release to publish",
        where="rig.yaml: daemon.publish.action",
        hint="builds announced by workflow_run carry no release: use action dispatch or "
        "command, or send release_id/tag in the client_payload",
    )


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
            "job": job.id,
            "sha256": job.image_sha256,
            "image": os.path.basename(job.image_path or ""),
            "report": f"{public_url}/jobs/{job.id}",
        }
        for key in ("release_id", "tag"):
            if job.image.get(key) is not None:
                payload[key] = job.image[key]
        gh.dispatch(repo, event, payload)
        return f"dispatched {event} to {repo}"
    if action == "command":
        argv = config.get("command")
        if not argv:
            raise ConfigError("no command", where="daemon.publish.command")
        env = {
            **os.environ,
            "RIG_JOB": str(job.id),
            "RIG_IMAGE": job.image_path or "",
            "RIG_IMAGE_SHA256": job.image_sha256 or "",
            "RIG_REPORT_DIR": job.report_dir or "",
            "RIG_REPOSITORY": job.repo or "",
            "RIG_RELEASE_ID": str(job.image.get("release_id") or ""),
            "RIG_TAG": str(job.image.get("tag") or ""),
        }
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
                f"publish command exited {done.returncode}: {done.stderr.strip()[-300:]}",
                where="daemon.publish.command",
            )
        return f"command exited 0: {done.stdout.strip()[-200:]}"
    raise ConfigError(
        f"unknown publish action {action!r}", where="daemon.publish.action", hint=str(ACTIONS)
    )
