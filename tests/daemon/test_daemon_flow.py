"""The whole flow: signed webhook -> job -> image tested -> mail -> approval -> publish."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import httpx
from daemon_rig import (
    MARKER,
    REPO,
    add_octopi_release,
    image_bytes,
    release_payload,
    wait_for,
)


def test_release_webhook_to_tested_image_to_approved_publish(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-20261126120000")
    rig.start()
    r = rig.hook("release", release_payload(release))
    assert r.status_code == 202
    job_id = r.json()["job"]

    job = rig.wait_state(job_id, "awaiting-approval")
    image = image_bytes("1.1.0-1.11.0-20261126120000")
    assert job.image_sha256 == hashlib.sha256(image).hexdigest()
    assert job.result["passed"] is True
    fetch_step = next(s for s in rig.daemon.queue.steps(job_id) if s["name"] == "fetch")
    assert ".sha256" in fetch_step["detail"] and "rpi-imager.json" in fetch_step["detail"]

    # the download went through the API with the token; the storage host never saw it
    asset_calls = rig.github.calls_to("GET", "/releases/assets/")
    assert asset_calls and all(c.auth == "Bearer ghp_test_token_not_real" for c in asset_calls)
    storage = rig.github.calls_to("GET", "/storage/")
    assert storage and all(c.auth is None for c in storage)
    assert {c.port for c in storage} == {rig.github.storage_port}

    # one approval mail, with the summary, the report link and the approval link
    wait_for("the approval mail", lambda: rig.inbox.messages)
    assert len(rig.inbox.messages) == 1
    msg = rig.inbox.messages[0]
    assert "tested green" in msg["Subject"]
    text = rig.inbox.text(msg)
    assert job.image_sha256 in text
    assert f"/jobs/{job_id}/report/report.html" in text
    report = httpx.get(f"{rig.url}/jobs/{job_id}/report/report.html")
    assert report.status_code == 200 and "acceptance: passed" in report.text

    # the release's tag resolved to its commit: the statuses go there
    tag_sha = hashlib.sha1(b"1.1.0-1.11.0-20261126120000").hexdigest()
    assert job.sha == tag_sha
    states = [c.body["state"] for c in rig.github.calls_to("POST", f"/statuses/{tag_sha}")]
    assert states == ["pending", "success"]

    # GET (what a mail scanner does) shows the confirmation and changes nothing
    link = rig.approval_link()
    for _ in range(3):
        page = httpx.get(link)
        assert page.status_code == 200
        assert job.image_sha256 in page.text and "Approve" in page.text and "Reject" in page.text
    assert rig.job(job_id).state == "awaiting-approval"
    assert rig.github.calls_to("PATCH", "/releases/") == []

    # POST approves; the publish lane removes the marker from the release body
    r = httpx.post(link, data={"decision": "approve"})
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{job_id}"
    rig.wait_state(job_id, "published")
    patches = rig.github.calls_to("PATCH", f"/repos/{REPO}/releases/{release['id']}")
    assert len(patches) == 1
    assert MARKER not in patches[0].body["body"]
    assert patches[0].body["body"].startswith("OctoPi 1.1.0-1.11.0-20261126120000")
    assert "Built by CI." in patches[0].body["body"]
    assert MARKER not in rig.github.releases[release["id"]]["body"]

    # the link works once
    again = httpx.post(link, data={"decision": "approve"})
    assert again.status_code == 409 and "already used" in again.text
    assert len(rig.github.calls_to("PATCH", "/releases/")) == 1
    wait_for("the published mail", lambda: len(rig.inbox.messages) == 2)
    assert "published" in rig.inbox.messages[1]["Subject"]
    # a decided job's image is deleted (the flash host's disk is small); its report stays
    wait_for("the image to be removed", lambda: not Path(job.image_path).exists())
    assert httpx.get(f"{rig.url}/jobs/{job_id}/report/report.html").status_code == 200


def test_workflow_run_artifact_with_commit_statuses_and_rejection(rig):
    data = image_bytes("artifact-build")
    digest = hashlib.sha256(data).hexdigest()
    rig.github.add_artifact(
        777,
        "octopi-1.1.0-1.11.0",
        {
            "octopi-1.1.0.img.xz": data,
            "octopi-1.1.0.img.xz.sha256": f"{digest}  octopi-1.1.0.img.xz",
        },
    )
    rig.github.add_artifact(777, "build-logs", {"log.txt": b"nothing"})
    rig.start()
    run = {
        "id": 777,
        "run_attempt": 1,
        "name": "Build",
        "path": ".github/workflows/build.yml",
        "conclusion": "success",
        "head_sha": "c0ffee" * 6 + "c0ff",
        "head_branch": "main",
    }
    r = rig.hook(
        "workflow_run",
        {"action": "completed", "workflow_run": run, "repository": {"full_name": REPO}},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]
    job = rig.wait_state(job_id, "awaiting-approval")
    assert job.image_sha256 == digest
    assert job.image_path.endswith("octopi-1.1.0.img.xz")
    zips = rig.github.calls_to("GET", "/actions/artifacts/")
    assert zips and zips[0].auth == "Bearer ghp_test_token_not_real"
    statuses = rig.github.calls_to("POST", f"/statuses/{run['head_sha']}")
    assert [c.body["state"] for c in statuses] == ["pending", "success"]
    assert statuses[0].body["context"] == "rig/acceptance"
    assert statuses[1].body["target_url"].endswith(f"/jobs/{job_id}")

    wait_for("the approval mail", lambda: rig.inbox.messages)
    r = httpx.post(rig.approval_link(), data={"decision": "reject"})
    assert r.status_code == 303
    assert rig.job(job_id).state == "rejected"
    assert rig.github.calls_to("PATCH", "/releases/") == []


def test_failed_tests_send_the_failure_mail_with_the_report_and_publish_nothing(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-broken", fail=True)
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "failed")
    assert job.result["passed"] is False
    wait_for("the failure mail", lambda: rig.inbox.messages)
    msg = rig.inbox.messages[0]
    assert msg["Subject"].startswith("[rig] FAILED")
    text = rig.inbox.text(msg)
    assert "candidate-smoke: failed" in text and "/approve/" not in text
    attached = [p.get_filename() for p in msg.iter_attachments()]
    assert attached == ["report.html"]
    assert rig.daemon.queue.nonce("x") is None
    assert rig.github.calls_to("PATCH", "/releases/") == []


def test_repository_dispatch_with_image_url_and_checksum(rig):
    data = image_bytes("dispatched")
    rig.github.blobs["dispatched"] = data
    rig.start()
    payload = {
        "action": "rig-test",
        "client_payload": {
            "image_url": f"{rig.github.storage_url}/storage/dispatched",
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "repository": {"full_name": REPO},
    }
    job_id = rig.hook("repository_dispatch", payload).json()["job"]
    job = rig.wait_state(job_id, "awaiting-approval")
    assert job.image_sha256 == hashlib.sha256(data).hexdigest()

    # a wrong checksum is never tested: retried (download may be corrupt), then an error
    bad = {**payload, "client_payload": {**payload["client_payload"], "sha256": "0" * 64}}
    bad_id = rig.hook("repository_dispatch", bad).json()["job"]
    job = rig.wait_state(bad_id, "error")
    assert "checksum mismatch" in job.error and job.attempts == 2
    other = {**payload, "action": "something-else"}
    assert rig.hook("repository_dispatch", other).json()["outcome"] == "ignored"


def test_tokens_expired_reused_tampered_or_for_another_image_are_refused(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-tokens")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "awaiting-approval")
    wait_for("the approval mail", lambda: rig.inbox.messages)
    link = rig.approval_link()
    token = link.rsplit("/", 1)[1]
    approvals = rig.daemon.approvals
    claims = approvals._serializer.loads(token)

    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert httpx.get(f"{rig.url}/approve/{tampered}").status_code == 403

    other_image = approvals.sign({**claims, "sha256": "f" * 64})
    r = httpx.post(f"{rig.url}/approve/{other_image}", data={"decision": "approve"})
    assert r.status_code == 409 and "different image" in r.text

    unknown_nonce = approvals.sign({**claims, "nonce": "never-issued"})
    assert (
        httpx.post(f"{rig.url}/approve/{unknown_nonce}", data={"decision": "approve"}).status_code
        == 403
    )

    approvals.ttl = -1  # every token is now older than its lifetime
    r = httpx.post(link, data={"decision": "approve"})
    assert r.status_code == 410 and "expired" in r.text
    approvals.ttl = 3600
    assert rig.daemon.queue.expire(time.time() - 3600) == []  # issued just now: not expired

    assert rig.job(job_id).state == "awaiting-approval"  # nothing above changed anything
    assert httpx.post(link, data={"decision": "maybe"}).status_code == 400
    assert httpx.post(link, data={"decision": "approve"}).status_code == 303
    r = httpx.get(link)
    assert r.status_code == 409 and re.search("already used", r.text)
    rig.wait_state(job_id, "published")
    assert job.image_sha256 == rig.job(job_id).image_sha256


def test_an_undecided_job_expires_with_its_link_and_its_image_is_removed(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-forgotten")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "awaiting-approval")
    assert Path(job.image_path).exists()
    rig.daemon.settings.__dict__["approval_ttl"] = -1.0  # frozen dataclass: test-only poke
    rig.daemon.worker.wake.set()
    rig.wait_state(job_id, "expired")
    wait_for("the image to be removed", lambda: not Path(job.image_path).exists())
    rig.daemon.approvals.ttl = 3600
    r = httpx.post(rig.approval_link(), data={"decision": "approve"})
    assert r.status_code == 409 and "expired" in r.text
    assert rig.github.calls_to("PATCH", "/releases/") == []


def test_a_refetched_image_is_tested_again_before_anyone_is_asked(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-refetch")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "awaiting-approval")
    assert rig.runlog.read_text().split().count("end") == 1
    # the image vanished (cache cleaned) while the job was still to be resumed
    Path(job.image_path).unlink()
    rig.daemon.queue.update(job_id, state="queued")
    rig.daemon.worker.wake.set()
    wait_for("a second acceptance run", lambda: rig.runlog.read_text().split().count("end") == 2)
    rig.wait_state(job_id, "awaiting-approval")
    steps = [(s["name"], s["attempt"]) for s in rig.daemon.queue.steps(job_id)]
    assert ("fetch", 2) in steps and ("test", 2) in steps and ("notify", 2) in steps
