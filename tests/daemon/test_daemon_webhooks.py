"""Webhook intake: signatures, size limit, events, idempotency (against the running daemon)."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
from daemon_rig import REPO, SECRET, add_octopi_release, release_payload

from rig.daemon.webhooks import direct_signature, signature, verify_signature

GITHUB_VECTOR = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_signature_matches_githubs_documented_vector():
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    assert signature(secret, body) == GITHUB_VECTOR
    assert verify_signature(secret, body, GITHUB_VECTOR)
    assert not verify_signature(secret, body + b" ", GITHUB_VECTOR)
    assert not verify_signature(secret, body, GITHUB_VECTOR.replace("sha256=", "sha1="))
    assert not verify_signature(secret, body, None)


def test_missing_or_bad_signature_is_401_and_queues_nothing(rig):
    rig.start()
    payload = {"zen": "Keep it logically awesome.", "hook_id": 1}
    assert rig.hook("ping", payload, sign=False).status_code == 401
    assert rig.hook("ping", payload, secret="not-the-secret").status_code == 401
    # signed over different bytes than those sent
    body = json.dumps(payload).encode()
    r = httpx.post(
        f"{rig.url}/hooks/github",
        content=body + b"\n",
        headers={
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": signature(SECRET.encode(), body),
        },
    )
    assert r.status_code == 401
    assert rig.daemon.queue.delivery_count() == 0


def test_oversized_body_is_413_before_the_signature_is_checked(rig):
    rig.start()
    limit = rig.daemon.settings.max_body
    big = b"x" * (limit + 1)
    r = httpx.post(
        f"{rig.url}/hooks/github",
        content=big,
        headers={
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "d-big",
            "X-Hub-Signature-256": signature(SECRET.encode(), big),
        },
    )
    assert r.status_code == 413

    # no Content-Length (chunked): the limit is enforced while reading
    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    r = httpx.post(
        f"{rig.url}/hooks/github",
        content=chunks(),
        headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-chunked"},
    )
    assert r.status_code == 413
    assert rig.daemon.queue.delivery_count() == 0


def test_lying_content_length_does_not_bypass_the_limit(rig):
    rig.start()
    limit = rig.daemon.settings.max_body
    with socket.create_connection(("127.0.0.1", rig.port)) as s:
        s.sendall(
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: d-raw\r\n\r\n"
        )
        chunk = b"z" * 65536
        try:
            for _ in range(limit // len(chunk) + 2):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(200)
    assert answer.startswith(b"HTTP/1.1 413")


def test_ping_and_unknown_events_are_acknowledged_and_ignored(rig, caplog):
    caplog.set_level(logging.INFO, logger="rig.daemon")
    rig.start()
    r = rig.hook("ping", {"zen": "x", "hook_id": 1})
    assert r.status_code == 200 and r.json()["outcome"] == "ignored"
    r = rig.hook("issues", {"action": "opened", "repository": {"full_name": REPO}})
    assert r.status_code == 200
    assert "not one the rig acts on" in r.json()["reason"]
    r = rig.hook("release", release_payload({"id": 1, "assets": []}, action="edited"))
    assert "published/prereleased" in r.json()["reason"]
    r = rig.hook(
        "release",
        {"action": "published", "release": {"id": 1}, "repository": {"full_name": "someone/else"}},
    )
    assert "not configured" in r.json()["reason"]
    run = {"id": 5, "conclusion": "failure", "path": ".github/workflows/build.yml"}
    r = rig.hook(
        "workflow_run",
        {"action": "completed", "workflow_run": run, "repository": {"full_name": REPO}},
    )
    assert "conclusion 'failure'" in r.json()["reason"]
    fork = {
        **run,
        "conclusion": "success",
        "event": "pull_request",
        "head_repository": {"full_name": "mallory/OctoPi-UpToDate"},
    }
    r = rig.hook(
        "workflow_run",
        {"action": "completed", "workflow_run": fork, "repository": {"full_name": REPO}},
    )
    assert "built from mallory/OctoPi-UpToDate" in r.json()["reason"]
    assert rig.daemon.queue.jobs() == []
    assert "(issues) ignored: event 'issues' is not one the rig acts on" in caplog.text


def test_redelivery_is_acknowledged_and_queues_nothing_more(rig):
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-20261126")
    rig.start()
    first = rig.hook("release", release_payload(release), delivery="guid-1")
    assert first.status_code == 202 and first.json()["outcome"] == "queued"
    again = rig.hook("release", release_payload(release), delivery="guid-1")
    assert again.status_code == 200 and again.json() == {
        "outcome": "duplicate",
        "job": first.json()["job"],
    }
    # the same release announced by a different delivery is the same job
    other = rig.hook("release", release_payload(release, "prereleased"), delivery="guid-2")
    assert other.json()["outcome"] == "known" and other.json()["job"] == first.json()["job"]
    assert len(rig.daemon.queue.jobs()) == 1


def test_webhook_answers_fast(rig):
    rig.start()
    release = add_octopi_release(rig.github, "1.1.0-1.11.0-fast")
    t0 = time.perf_counter()
    r = rig.hook("release", release_payload(release))
    assert r.status_code == 202
    assert time.perf_counter() - t0 < 1.0


def test_direct_notification_is_signed_with_a_timestamp_and_replay_refused(rig):
    rig.start()
    body = json.dumps(
        {
            "image_url": rig.github.storage_url + "/storage/none",
            "sha256": "a" * 64,
            "repository": REPO,
        }
    ).encode()
    now = str(int(time.time()))
    headers = {
        "X-Rig-Timestamp": now,
        "X-Rig-Signature-256": direct_signature(SECRET.encode(), now, body),
    }
    r = httpx.post(f"{rig.url}/hooks/direct", content=body, headers=headers)
    assert r.status_code == 202, r.text
    again = httpx.post(f"{rig.url}/hooks/direct", content=body, headers=headers)
    assert again.json()["outcome"] == "duplicate"
    old = str(int(time.time()) - 3600)
    stale = {
        "X-Rig-Timestamp": old,
        "X-Rig-Signature-256": direct_signature(SECRET.encode(), old, body),
    }
    r = httpx.post(f"{rig.url}/hooks/direct", content=body, headers=stale)
    assert r.status_code == 401 and "window" in r.text


def test_form_encoded_deliveries_are_understood(rig):
    from urllib.parse import urlencode

    release = add_octopi_release(rig.github, "1.1.0-1.11.0-form")
    rig.start()
    body = urlencode({"payload": json.dumps(release_payload(release))}).encode()
    r = httpx.post(
        f"{rig.url}/hooks/github",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-GitHub-Event": "release",
            "X-GitHub-Delivery": "form-1",
            "X-Hub-Signature-256": signature(SECRET.encode(), body),
        },
    )
    assert r.status_code == 202 and r.json()["outcome"] == "queued"
