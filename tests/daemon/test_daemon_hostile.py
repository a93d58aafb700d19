"""`rig serve` under attack and faults (issue 16): forged, malformed and hostile inputs sent
to a real daemon on loopback, the way an attacker or a careless user would send them.

Each test names the hostile inputs it tries; the closing note of the issue counts them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_doubles import TOKEN, GitHubState, ServedApp, github_app
from daemon_rig import (
    MARKER,
    REPO,
    SECRET,
    Rig,
    add_octopi_release,
    free_port,
    image_bytes,
    release_payload,
    serve,
    wait_for,
    wait_up,
    write_config,
)

from rig.daemon.queue import JobRequest, Queue
from rig.daemon.webhooks import signature

# -- 1. an empty or short secret never disables authentication -------------------------

EMPTY_OR_SHORT = [  # (how the secret is given, its value)
    ("file", ""),
    ("file", "short"),
    ("file", "   " * 8),
    ("env", ""),  # printf %s "$WEBHOOK_SECRET" with the variable unset
    ("env", "15-characters.."),
    ("credential", ""),
    ("credential", "\n"),
]


def _serve_once(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rig", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=config.parent,
        env=env,
    )


@pytest.mark.parametrize(("given", "value"), EMPTY_OR_SHORT)
def test_rig_serve_refuses_to_start_on_an_empty_or_short_webhook_secret(
    tmp_path, github, given, value
):
    port = free_port()
    config = write_config(tmp_path, github, 25, port, tmp_path / "runs.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_SECRET_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    secrets = yaml.safe_load((tmp_path / "secrets.yaml").read_text())
    if given == "file":
        secrets["webhook_secret"] = value
    else:
        del secrets["webhook_secret"]
    if given == "env":
        env["RIG_SECRET_WEBHOOK_SECRET"] = value
    if given == "credential":
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "webhook_secret").write_text(value)
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secrets))

    done = _serve_once(config, env)
    assert done.returncode == 2, done.stderr
    assert "webhook_secret" in done.stderr
    where = {"file": "secrets file", "env": "$RIG_SECRET_WEBHOOK_SECRET", "credential": "creds"}
    assert where[given] in done.stderr
    with pytest.raises(httpx.ConnectError):  # nothing listens, nothing was accepted
        body = b'{"zen": "x"}'
        httpx.post(
            f"http://127.0.0.1:{port}/hooks/github",
            content=body,
            headers={
                "X-GitHub-Event": "ping",
                "X-GitHub-Delivery": "d1",
                "X-Hub-Signature-256": signature(value.encode(), body),
            },
            timeout=2,
        )


def test_rig_serve_refuses_a_short_approval_key(tmp_path, github):
    config = write_config(tmp_path, github, 25, free_port(), tmp_path / "runs.log")
    secrets = yaml.safe_load((tmp_path / "secrets.yaml").read_text())
    secrets["approval_key"] = "abc"
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump(secrets))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_SECRET_")}
    done = _serve_once(config, env)
    assert done.returncode == 2 and "approval_key is only 3 characters" in done.stderr
    assert SECRET not in done.stderr and "abc" not in done.stderr.split("approval_key")[0]


# -- 2. the token only for the API's origin; images only from allowed, public hosts ---------


def _configure(rig: Rig, mutate) -> Rig:
    data = yaml.safe_load(rig.config_path.read_text())
    mutate(data)
    rig.config_path.write_text(yaml.safe_dump(data))
    return rig


def _dispatch(url: str, data: bytes) -> dict:
    return {
        "action": "rig-test",
        "client_payload": {"image_url": url, "sha256": hashlib.sha256(data).hexdigest()},
        "repository": {"full_name": REPO},
    }


@pytest.fixture
def lookalike(tmp_path, smtp):
    """A GitHub double on 127.0.0.1:P and an attacker on 127.0.0.1:P*10+1, so that the
    attacker's URL starts with the API's URL (the prefix test) but is another origin."""
    state, stolen = GitHubState(), GitHubState()
    for _ in range(200):
        p = random.randint(1100, 6553)
        try:
            api = ServedApp(github_app(state), p)
        except OSError:
            continue
        try:
            evil = ServedApp(github_app(stolen), p * 10 + 1)
        except OSError:
            api.sock.close()
            continue
        break
    with ServedApp(github_app(state)) as storage:
        state.storage_url = storage.url
        state.storage_port = storage.port  # type: ignore[attr-defined]
        yield state, stolen, api, evil


def test_the_token_never_reaches_a_host_whose_url_merely_starts_like_the_apis(
    tmp_path, smtp, lookalike
):
    state, stolen, api, evil = lookalike
    with api, evil:
        state.api_url = api.url  # type: ignore[attr-defined]
        inbox, smtp_port = smtp
        port = free_port()
        runlog = tmp_path / "runs.log"
        rig = Rig(
            tmp_path,
            write_config(tmp_path, state, smtp_port, port, runlog),
            port,
            state,
            inbox,
            runlog,
        )
        data = image_bytes("lookalike")
        stolen.blobs["img"] = data
        url = f"{evil.url}/storage/img"
        assert url.startswith(api.url)  # the look-alike

        # by default such a host is not an image host at all: ignored at intake
        rig.start()
        try:
            r = rig.hook("repository_dispatch", _dispatch(url, data))
            assert r.status_code == 200 and r.json()["outcome"] == "ignored"
            assert "image_hosts" in r.json()["reason"]
        finally:
            rig.stop()

        # an operator who allows it (a LAN mirror) still never sends it the token
        _configure(
            rig,
            lambda d: (
                d["github"]["repositories"][0]["image_hosts"].append(f"127.0.0.1:{evil.port}"),
                d["github"]["private_hosts"].append(f"127.0.0.1:{evil.port}"),
            ),
        )
        rig.start()
        try:
            job_id = rig.hook("repository_dispatch", _dispatch(url, data)).json()["job"]
            rig.wait_state(job_id, "awaiting-approval")
        finally:
            rig.stop()
        got = [c for c in stolen.calls if c.path == "/storage/img"]
        assert got and all(c.auth is None for c in got), [c.auth for c in got]


@pytest.fixture
def internal():
    """A service inside the flash host's networks (think: a router's admin page)."""
    victim = GitHubState()
    victim.blobs["secret"] = b"INTERNAL-ADMIN-PAGE: root password hunter2"
    with ServedApp(github_app(victim)) as served:
        yield victim, served


def ssrf_urls(daemon_port: int, internal_port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{daemon_port}/healthz",
        f"http://127.0.0.1:{internal_port}/storage/secret",
        f"http://localhost:{internal_port}/storage/secret",
        f"http://[::1]:{internal_port}/storage/secret",
        f"http://0.0.0.0:{internal_port}/storage/secret",
        f"http://2130706433:{internal_port}/storage/secret",  # 127.0.0.1 as one number
        f"http://127.1:{internal_port}/storage/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
        "http://192.168.1.1/",
        f"http://user@127.0.0.1:{internal_port}/storage/secret",
        "https://api.github.com.attacker.tld/image.img",
    ]


def test_a_dispatched_image_url_outside_the_image_hosts_is_ignored_at_intake(rig, internal):
    victim, served = internal
    data = b"x" * 1000
    rig.start()
    urls = ssrf_urls(rig.port, served.port)
    for url in urls:
        r = rig.hook("repository_dispatch", _dispatch(url, data))
        assert r.status_code == 200 and r.json()["outcome"] == "ignored", (url, r.text)
    assert rig.daemon.queue.jobs() == []
    assert victim.calls == []


def test_an_allowed_name_that_resolves_inside_is_refused_and_its_answer_not_shown(rig, internal):
    victim, served = internal
    data = victim.blobs["secret"]
    # the operator allowed a name (say, a mirror), but it resolves to loopback
    _configure(rig, lambda d: d["github"]["repositories"][0]["image_hosts"].append("localhost"))
    rig.start()
    url = f"http://localhost:{served.port}/storage/secret"
    job_id = rig.hook("repository_dispatch", _dispatch(url, data)).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "loopback" in job.error
    assert victim.calls == []

    # an allowed storage host that redirects inside: the redirect is refused
    rig.github.redirects["hop"] = f"http://127.0.0.1:{served.port}/storage/secret"
    hop = f"{rig.github.storage_url}/storage/hop"
    job_id = rig.hook("repository_dispatch", _dispatch(hop, data + b"2")).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "loopback" in job.error and victim.calls == []
    page = httpx.get(f"{rig.url}/jobs/{job_id}").text + httpx.get(rig.url).text
    assert "hunter2" not in page and "INTERNAL" not in page


def test_downloads_stop_at_the_stated_size_and_at_max_image_bytes(rig):
    _configure(rig, lambda d: d["daemon"].update(max_image_bytes=1 << 20))
    big = b"IMG0" + os.urandom((1 << 20) + 4096)
    rig.github.blobs["big"] = big
    rig.start()
    # a URL image has no stated size: max_image_bytes is the cap
    job_id = rig.hook(
        "repository_dispatch", _dispatch(f"{rig.github.storage_url}/storage/big", big)
    ).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "larger than 1048576 bytes" in job.error

    # a release asset that is bigger than GitHub said it is: stopped at the stated size
    release = add_octopi_release(rig.github, "1.1.0-sized")
    image = next(a for a in release["assets"] if a["name"].endswith(".zip"))
    image["size"] = 1000
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "larger than 1000 bytes" in job.error

    # a release asset stated larger than the cap is not downloaded at all
    release = add_octopi_release(rig.github, "1.1.0-huge")
    image = next(a for a in release["assets"] if a["name"].endswith(".zip"))
    image["size"] = 5 << 30
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "more than daemon.max_image_bytes" in job.error
    assert rig.github.calls_to("GET", f"/storage/asset-{image['id']}") == []


# -- 3. approving publishes exactly what was tested, where the mail said ---------------------


def _replace_asset(github: GitHubState, release: dict, name: str, data: bytes) -> None:
    """What a maintainer (or a stolen CI token) does on GitHub: delete the asset, upload anew."""
    release["assets"] = [a for a in release["assets"] if a["name"] != name]
    aid = github.new_id()
    github.blobs[f"asset-{aid}"] = data
    github.asset_blob[aid] = f"asset-{aid}"
    release["assets"].append(
        {
            "id": aid,
            "name": name,
            "size": len(data),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        }
    )


def _approve(rig: Rig) -> httpx.Response:
    wait_for("the approval mail", lambda: rig.inbox.messages)
    return httpx.post(rig.approval_link(), data={"decision": "approve"})


def test_an_asset_replaced_after_the_test_is_not_published(rig):
    release = add_octopi_release(rig.github, "1.1.0-swapped")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    name = next(a["name"] for a in release["assets"] if a["name"].endswith(".zip"))
    _replace_asset(rig.github, release, name, b"IMG0 something else entirely")
    assert _approve(rig).status_code == 303
    job = rig.wait_state(job_id, "error")
    assert "replaced or deleted after the test" in job.error
    assert rig.github.calls_to("PATCH", "/releases/") == []
    assert MARKER in release["body"]
    wait_for("the failure mail", lambda: len(rig.inbox.messages) == 2)
    assert "publishing failed" in rig.inbox.messages[-1]["Subject"]


def test_a_dispatch_cannot_name_an_unrelated_release_to_publish(rig):
    victim = add_octopi_release(rig.github, "1.2.0-victim")
    data = image_bytes("anything")
    rig.github.blobs["anything"] = data
    rig.start()
    payload = _dispatch(f"{rig.github.storage_url}/storage/anything", data)
    payload["client_payload"]["release_id"] = victim["id"]
    job_id = rig.hook("repository_dispatch", payload).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    assert _approve(rig).status_code == 303
    job = rig.wait_state(job_id, "error")
    assert "holds no asset with the tested SHA-256" in job.error
    assert rig.github.calls_to("PATCH", "/releases/") == []
    assert MARKER in victim["body"]


def test_the_confirm_page_says_what_will_be_published_and_the_link_is_bound_to_it(rig):
    release = add_octopi_release(rig.github, "1.1.0-target")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    wait_for("the approval mail", lambda: rig.inbox.messages)
    link = rig.approval_link()
    page = httpx.get(link).text
    assert f"{REPO}@1.1.0-target via unmark" in page
    assert f"publish: {REPO}@1.1.0-target via unmark" in rig.inbox.text(rig.inbox.messages[0])

    # the operator changes what publishing means: the mailed link no longer approves
    rig.stop()
    _configure(rig, lambda d: d["daemon"].update(publish={"action": "undraft"}))
    rig.start()
    r = httpx.post(link, data={"decision": "approve"})
    assert r.status_code == 409 and "has changed" in r.text
    assert rig.job(job_id).state == "awaiting-approval"
    assert rig.github.calls_to("PATCH", "/releases/") == []


# -- 4. no single input ends a lane; /healthz says which lane lives -------------------------


def _poison(release: dict, storage: str) -> list[tuple[str, object, str]]:
    """(event, signed payload, what the daemon must answer) for malformed-but-signed input."""
    r = {**release, "assets": release["assets"]}
    disp = _dispatch(f"{storage}/storage/none", b"x")

    def with_client(**fields: object) -> dict:
        return {**disp, "client_payload": {**disp["client_payload"], **fields}}

    return [
        ("release", release_payload({**r, "id": str(r["id"])}), "ignored"),
        ("release", release_payload({**r, "id": True}), "ignored"),
        ("release", release_payload({**r, "id": -5}), "ignored"),
        ("release", release_payload({**r, "tag_name": ["v1"]}), "ignored"),
        ("release", release_payload({**r, "assets": {"a": 1}}), "ignored"),
        ("release", release_payload({**r, "assets": ["x", None, 3]}), "ignored"),
        (
            "release",
            {"action": "published", "release": "x", "repository": {"full_name": REPO}},
            "ignored",
        ),
        ("release", {"action": "published", "release": r, "repository": REPO}, "ignored"),
        (
            "release",
            {"action": "published", "release": r, "repository": {"full_name": 7}},
            "ignored",
        ),
        ("release", [release_payload(r)], "ignored"),
        (
            "workflow_run",
            {"action": "completed", "workflow_run": "x", "repository": {"full_name": REPO}},
            "ignored",
        ),
        (
            "workflow_run",
            {
                "action": "completed",
                "repository": {"full_name": REPO},
                "workflow_run": {
                    "conclusion": "success",
                    "id": "9",
                    "path": 3,
                    "name": "build.yml",
                    "head_repository": [],
                },
            },
            "ignored",
        ),
        ("repository_dispatch", {**disp, "client_payload": []}, "ignored"),
        ("repository_dispatch", {**disp, "client_payload": "x"}, "ignored"),
        ("repository_dispatch", with_client(release_id="12abc"), "ignored"),
        ("repository_dispatch", with_client(release_id=1.5), "ignored"),
        ("repository_dispatch", with_client(release_id=False), "ignored"),
        ("repository_dispatch", with_client(tag={"a": 1}), "ignored"),
        ("repository_dispatch", with_client(tag="v1\nv2"), "ignored"),
        (
            "repository_dispatch",
            with_client(sha256=disp["client_payload"]["sha256"] + "\n"),
            "ignored",
        ),
        ("repository_dispatch", with_client(sha256=12345), "ignored"),
        ("repository_dispatch", with_client(image_url=["https://github.com/x"]), "ignored"),
        ("repository_dispatch", with_client(image_url="https://github.com/a b\n.img"), "ignored"),
        ("repository_dispatch", with_client(commit={"sha": "x"}), "queued"),  # commit dropped
    ]


def _signed(rig: Rig, event: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{rig.url}/hooks/github",
        content=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(SECRET.encode(), body),
        },
        timeout=20,
    )


def test_malformed_but_signed_deliveries_are_ignored_never_a_500_and_the_lanes_live(rig):
    release = add_octopi_release(rig.github, "1.1.0-poison")
    rig.start()
    for event, payload, expected in _poison(release, rig.github.storage_url):
        r = rig.hook(event, payload)
        assert r.status_code in (200, 202), (payload, r.status_code, r.text)
        assert r.json()["outcome"] == expected, (payload, r.json())
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _signed(rig, "release", deep).status_code == 400
    not_utf8 = b'{"action": "\xff\xfe"}'
    assert _signed(rig, "release", not_utf8).status_code == 400

    # a newline (and a header) in a release's tag reaches the mail subject: one line, no Bcc
    evil = add_octopi_release(rig.github, "1.1.0-evil\r\nBcc: attacker@evil.test")
    job_id = rig.hook("release", release_payload(evil)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    msg = wait_for(
        "the approval mail",
        lambda: [m for m in rig.inbox.messages if "tested green" in m["Subject"]],
    )[0]
    assert "1.1.0-evil Bcc: attacker@evil.test" in msg["Subject"]
    assert "\n" not in msg["Subject"] and msg["Bcc"] is None
    assert all("attacker" not in rcpt for e in rig.inbox.envelopes for rcpt in e.rcpt_tos)
    health = httpx.get(f"{rig.url}/healthz")
    assert health.status_code == 200
    assert {k: v["alive"] for k, v in health.json()["lanes"].items()} == {
        "test": True,
        "publish": True,
        "heartbeat": True,
    }
    # and the lanes still work: approve, publish
    link = re.search(r"(http://\S+/approve/\S+)", rig.inbox.text(msg)).group(1)
    assert httpx.post(link, data={"decision": "approve"}).status_code == 303
    rig.wait_state(job_id, "published")


def test_a_poisoned_delivery_in_a_group_commit_fails_no_other_delivery(rig):
    rig.start()
    releases = [add_octopi_release(rig.github, f"1.1.{i}-batch") for i in range(24)]
    bad = {  # a valid build, but head_sha is an object: it reached SQLite as a dict
        "action": "completed",
        "repository": {"full_name": REPO},
        "workflow_run": {
            "id": 4242,
            "conclusion": "success",
            "path": ".github/workflows/build.yml",
            "head_branch": "main",
            "head_sha": {"not": "a string"},
        },
    }
    with concurrent.futures.ThreadPoolExecutor(25) as pool:
        poisoned = [pool.submit(rig.hook, "workflow_run", bad) for _ in range(3)]
        good = [pool.submit(rig.hook, "release", release_payload(r)) for r in releases]
        answers = [f.result() for f in good]
    assert [a.status_code for a in answers] == [202] * len(releases)
    assert all(p.result().status_code in (200, 202) for p in poisoned)
    assert len({a.json()["job"] for a in answers}) == len(releases)


def test_html_from_github_or_a_proxy_ends_jobs_in_error_not_the_lanes(rig):
    _configure(rig, lambda d: d["daemon"].update(poll_minutes=1))
    rig.github.html = True
    release = add_octopi_release(rig.github, "1.1.0-html")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    job = rig.wait_state(job_id, "error")
    assert "not JSON" in job.error

    def lanes() -> dict:
        return httpx.get(f"{rig.url}/healthz").json()["lanes"]

    poller = wait_for("a poll", lambda: (p := lanes()["poller"])["polls"] >= 1 and p)
    assert poller["alive"] and "not JSON" in poller["error"]

    # GitHub answers again: the same lanes test and publish the next release
    rig.github.html = False
    second = add_octopi_release(rig.github, "1.1.0-after-html")
    job_id = rig.hook("release", release_payload(second)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    rig.github.html = True  # and the proxy is back just as the maintainer approves
    wait_for("the approval mail", lambda: rig.inbox.messages)
    link = next(
        re.search(r"(http://\S+/approve/\S+)", rig.inbox.text(m)).group(1)
        for m in rig.inbox.messages
        if "after-html" in m["Subject"]
    )
    assert httpx.post(link, data={"decision": "approve"}).status_code == 303
    job = rig.wait_state(job_id, "error")
    assert job.error.startswith("publish:") and "not JSON" in job.error
    health = httpx.get(f"{rig.url}/healthz")
    assert health.status_code == 200 and all(v["alive"] for v in health.json()["lanes"].values())


# -- 8. an unauthenticated POST /approve costs a signature check, not a 300 MB parse ---------


def _post_headers_only(port: int, path: str, content_type: str, length: int) -> str:
    """Send a request's head announcing ``length`` bytes, then wait for the answer without
    sending the body: a server that reads the form first never answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        s.sendall(b"--x\r\n" + b"A" * 4096)
        try:
            return s.recv(4096).decode("latin-1")
        except TimeoutError:
            return "no answer within 5 s"


def test_approval_posts_check_the_token_before_reading_any_form(rig):
    release = add_octopi_release(rig.github, "1.1.0-amplify")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    wait_for("the approval mail", lambda: rig.inbox.messages)
    token = rig.approval_link().rsplit("/", 1)[1]
    forged = rig.daemon.approvals._serializer.dumps({"job": job_id})[:-4] + "AAAA"
    huge = 300 * 1024 * 1024
    cases = [  # (token, content type, declared length, expected status)
        (forged, "multipart/form-data; boundary=x", huge, 403),
        (forged, "application/x-www-form-urlencoded", huge, 403),
        ("not-even-a-token", "multipart/form-data; boundary=x", huge, 403),
        (token, "multipart/form-data; boundary=x", huge, 415),
        (token, "application/json", huge, 415),
        (token, "application/x-www-form-urlencoded", huge, 413),
    ]
    for tok, kind, length, status in cases:
        answer = _post_headers_only(rig.port, f"/approve/{tok}", kind, length)
        assert answer.startswith(f"HTTP/1.1 {status}"), (kind, tok[:10], answer[:80])
    padded = httpx.post(
        f"{rig.url}/approve/{token}", data={"decision": "approve", "pad": "x" * 2000}
    )
    assert padded.status_code == 413
    assert rig.job(job_id).state == "awaiting-approval"  # nothing above decided anything
    assert httpx.post(f"{rig.url}/approve/{token}", data={"decision": "approve"}).status_code == 303


def test_approval_pages_are_not_cached_framed_or_referred(rig):
    release = add_octopi_release(rig.github, "1.1.0-headers")
    rig.start()
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    rig.wait_state(job_id, "awaiting-approval")
    wait_for("the approval mail", lambda: rig.inbox.messages)
    for r in (httpx.get(rig.approval_link()), httpx.get(f"{rig.url}/approve/forged")):
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


# -- 9. children get a minimal environment; logged commands are masked ------------------------


def test_children_never_see_the_daemons_secrets_and_logged_commands_are_masked(
    tmp_path, github, smtp
):
    inbox, smtp_port = smtp
    port = free_port()
    runlog = tmp_path / "runs.log"
    config = write_config(tmp_path, github, smtp_port, port, runlog)
    rig = Rig(tmp_path, config, port, github, inbox, runlog)
    creds = tmp_path / "creds"
    creds.mkdir()
    values = {
        "webhook_secret": SECRET,
        "github_token": TOKEN,
        "approval_key": "approval-key-" + "k" * 20,
        "smtp_password": "smtp-password-xyz",
    }
    for name, value in values.items():
        (creds / name).write_text(value)
    published = tmp_path / "published-env.json"
    data = yaml.safe_load(config.read_text())
    del data["secrets"]  # systemd style: credentials, plus a token in the environment
    data["daemon"]["acceptance_command"] += ["--label", values["smtp_password"]]
    data["daemon"]["publish"] = {
        "action": "command",
        "command": [
            sys.executable,
            "-c",
            f"import json,os; json.dump(dict(os.environ), open({str(published)!r}, 'w'))",
        ],
    }
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIG_SECRET_")}
    env.update(
        CREDENTIALS_DIRECTORY=str(creds),
        RIG_SECRET_GITHUB_TOKEN_OLD="ghp_another_token_in_env",
        NOTIFY_SOCKET="@rig-test-none",
        AWS_SECRET_ACCESS_KEY="aws-key-the-operator-forgot",
    )
    release = add_octopi_release(github, "1.1.0-env")
    proc = serve(config, tmp_path / "serve.log", env=env)
    try:
        wait_up(rig.url, proc)
        job_id = rig.hook("release", release_payload(release)).json()["job"]
        queue = Queue(tmp_path / "state")
        wait_for("approval", lambda: queue.get(job_id).state == "awaiting-approval")
        wait_for("the approval mail", lambda: inbox.messages)
        link = re.search(r"(http://\S+/approve/\S+)", inbox.text(inbox.messages[0])).group(1)
        assert httpx.post(link, data={"decision": "approve"}).status_code == 303
        wait_for("published", lambda: queue.get(job_id).state == "published")
        report_dir = Path(queue.get(job_id).report_dir)
        children = {
            "acceptance run": json.loads((report_dir / "environ.json").read_text()),
            "publish command": json.loads(published.read_text()),
        }
        secrets = [*values.values(), "ghp_another_token_in_env", "aws-key-the-operator-forgot"]
        for who, child in children.items():
            assert "CREDENTIALS_DIRECTORY" not in child and "NOTIFY_SOCKET" not in child, who
            assert not [k for k in child if k.startswith("RIG_SECRET_")], who
            leaked = [s for s in secrets for v in child.values() if s in v]
            assert leaked == [], (who, leaked)
            assert child["PATH"] == env["PATH"] and child["HOME"] == env["HOME"]
        assert children["publish command"]["RIG_PUBLISH_ID"].startswith(f"rig-{job_id}-")
        logged = (report_dir / "acceptance.log").read_text().splitlines()[0]
        assert logged.startswith("$ ") and "--label ***" in logged
        assert values["smtp_password"] not in logged
        page = httpx.get(f"{rig.url}/jobs/{job_id}").text
        assert values["smtp_password"] not in page
    finally:
        proc.kill()
        proc.wait()


# -- 7. kill -9 while publishing or starting a run: nothing happens twice ----------------------


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _setup_publish(tmp_path, github, smtp, publish: dict) -> tuple[Rig, Path]:
    inbox, smtp_port = smtp
    port = free_port()
    runlog = tmp_path / "runs.log"
    config = write_config(tmp_path, github, smtp_port, port, runlog)
    data = yaml.safe_load(config.read_text())
    data["daemon"]["publish"] = publish
    config.write_text(yaml.safe_dump(data))
    return Rig(tmp_path, config, port, github, inbox, runlog), config


def _approved_then_killed_mid_publish(rig: Rig, config: Path, started: Callable[[], bool]):
    release = add_octopi_release(rig.github, "1.1.0-publish-once")
    log = rig.dir / "serve.log"
    first = serve(config, log)
    try:
        wait_up(rig.url, first)
        job_id = rig.hook("release", release_payload(release)).json()["job"]
        queue = Queue(rig.dir / "state")
        wait_for("approval", lambda: queue.get(job_id).state == "awaiting-approval")
        wait_for("the approval mail", lambda: rig.inbox.messages)
        assert httpx.post(rig.approval_link(), data={"decision": "approve"}).status_code == 303
        wait_for("the publish action to start", started)
    finally:
        _kill9(first)
    second = serve(config, log)
    try:
        wait_up(rig.url, second)
        job = wait_for("a decision", lambda: (j := queue.get(job_id)).state != "approved" and j)
        wait_for("the mail", lambda: any("uncertain" in m["Subject"] for m in rig.inbox.messages))
        return job, queue
    finally:
        second.kill()
        second.wait()


def test_kill_9_during_a_publish_command_never_runs_it_again(tmp_path, github, smtp):
    runs, hold = tmp_path / "publish-runs.txt", tmp_path / "never"
    script = (
        f"import os, time, pathlib; open({str(runs)!r}, 'a').write(os.environ['RIG_PUBLISH_ID']"
        f" + '\\n'); [time.sleep(0.05) for _ in range(1200) if not pathlib.Path({str(hold)!r})"
        ".exists()]"
    )
    rig, config = _setup_publish(
        tmp_path, github, smtp, {"action": "command", "command": [sys.executable, "-c", script]}
    )
    job, queue = _approved_then_killed_mid_publish(rig, config, lambda: runs.exists())
    hold.touch()  # let the orphaned first command end
    assert job.state == "uncertain" and "not run again automatically" in job.error
    assert len(runs.read_text().split()) == 1  # ran once, never again
    assert [s["state"] for s in queue.steps(job.id) if s["name"] == "publish"] == ["interrupted"]


def test_kill_9_during_a_dispatch_never_dispatches_again(tmp_path, github, smtp):
    github.hold_dispatch = True  # GitHub received it; the answer is lost with the daemon
    rig, config = _setup_publish(
        tmp_path, github, smtp, {"action": "dispatch", "event_type": "rig-approved"}
    )
    sent = lambda: github.calls_to("POST", "/dispatches")  # noqa: E731
    job, _ = _approved_then_killed_mid_publish(rig, config, lambda: bool(sent()))
    github.hold_dispatch = False
    assert job.state == "uncertain"
    assert len(sent()) == 1
    assert sent()[0].body["client_payload"]["publish_id"] == f"rig-{job.id}-{job.image_sha256[:16]}"


def test_a_run_started_by_a_daemon_killed_before_it_recorded_the_pid_is_stopped(
    tmp_path, github, smtp
):
    """kill -9 between Popen and the commit of the pid leaves the step with only what was
    recorded before Popen: a restart must still find and stop that run."""
    inbox, smtp_port = smtp
    port = free_port()
    runlog, hold = tmp_path / "runs.log", tmp_path / "go"
    config = write_config(tmp_path, github, smtp_port, port, runlog, hold=str(hold))
    rig = Rig(tmp_path, config, port, github, inbox, runlog)
    release = add_octopi_release(github, "1.1.0-spawn")
    log = tmp_path / "serve.log"
    first = serve(config, log)
    orphan = None
    try:
        wait_up(rig.url, first)
        job_id = rig.hook("release", release_payload(release)).json()["job"]
        wait_for("the run to start", lambda: runlog.exists() and "start" in runlog.read_text())
        orphan = int(runlog.read_text().split()[1])
        _kill9(first)
        queue = Queue(tmp_path / "state")
        step = next(s for s in queue.steps(job_id) if s["name"] == "test")
        before_popen = {k: v for k, v in json.loads(step["detail"]).items() if k == "run"}
        queue.step_detail(step["id"], before_popen)  # the state of the crash window

        second = serve(config, log)
        try:
            wait_up(rig.url, second)
            wait_for("the orphan to be stopped", lambda: not _alive(orphan), timeout=40)
            wait_for("the second run", lambda: runlog.read_text().count("start") == 2)
            hold.touch()
            wait_for("approval", lambda: queue.get(job_id).state == "awaiting-approval")
            words = runlog.read_text().split()
            assert words.count("end") == 1 and words[words.index("end") + 1] != str(orphan)
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            _kill9(first)
        if orphan and _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- 10. mail in clear text only on loopback; nothing piles up on the flash host -------------


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("smtp.example.org", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
    ],
)
def test_mail_security_none_only_for_a_relay_on_this_host(tmp_path, github, host, ok):
    config = write_config(tmp_path, github, 25, free_port(), tmp_path / "runs.log")
    data = yaml.safe_load(config.read_text())
    data["mail"]["host"] = host
    config.write_text(yaml.safe_dump(data))
    from rig.config import load_config
    from rig.daemon.settings import load_settings
    from rig.errors import ConfigError

    if ok:
        assert load_settings(load_config(config)).mail.host == host
    else:
        with pytest.raises(ConfigError, match="clear text") as err:
            load_settings(load_config(config))
        assert "mail.security" in err.value.where


def test_every_decided_jobs_downloads_are_removed_and_old_deliveries_forgotten(rig):
    queue = Queue(rig.dir / "state")  # made before the daemon starts: no lane touches them
    images = rig.dir / "images" / "candidates"
    ids = []
    for i in range(30):  # more decided jobs than the history page shows
        req = JobRequest(key=f"k{i}", source="release", title=f"t{i}", image={"kind": "x"})
        _, job_id = queue.accept_delivery(f"old-{i}", "release", req)
        ids.append(job_id)
        (images / f"job-{job_id}").mkdir(parents=True)
        (images / f"job-{job_id}" / "octopi.img").write_bytes(b"x" * 1000)
        # the last one still waits for its approval: its image stays
        state = "awaiting-approval" if i == 29 else "error" if i % 2 else "rejected"
        queue.update(job_id, state=state, error="test")
    queue.add_nonce(ids[-1], "its-approval-link")  # mailed just now: not expired
    queue.conn.execute("UPDATE daemon_deliveries SET received = received - 40 * 86400")
    rig.start()
    assert rig.daemon.settings.images_dir == images
    wait_for(
        "the downloads to be removed",
        lambda: not any((images / f"job-{i}").exists() for i in ids[:-1]),
        timeout=20,
    )
    assert (images / f"job-{ids[-1]}" / "octopi.img").is_file()
    wait_for("old deliveries to be forgotten", lambda: queue.delivery_count() == 0)
    assert queue.get(ids[0]) is not None  # the jobs stay


def test_rig_serve_tells_systemd_it_is_ready_and_feeds_the_watchdog(tmp_path, github, smtp):
    """The sd_notify datagrams a real `rig serve` sends to $NOTIFY_SOCKET."""
    _, smtp_port = smtp
    port = free_port()
    config = write_config(tmp_path, github, smtp_port, port, tmp_path / "runs.log")
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(15)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    proc = serve(config, tmp_path / "serve.log", env=env)
    try:
        got = [listener.recv(256).decode() for _ in range(3)]
        assert got[0] == "READY=1" and got[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert all(lane["alive"] for lane in health["lanes"].values())
    finally:
        proc.kill()
        proc.wait()
        listener.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_healthz_is_503_and_names_the_lane_when_one_died(rig, monkeypatch):
    """A fault no lane may catch (SystemExit from a claim) ends one thread: it shows."""
    rig.start()
    queue = rig.daemon.queue
    real_claim = queue.claim

    def claim(owner, states):
        if states == ("approved",):
            raise SystemExit("a fault nothing in the lane may catch")
        return real_claim(owner, states)

    monkeypatch.setattr(queue, "claim", claim)
    rig.daemon.worker.wake.set()
    r = wait_for(
        "the dead lane to show",
        lambda: (h := httpx.get(f"{rig.url}/healthz")).status_code == 503 and h,
    )
    lanes = r.json()["lanes"]
    assert lanes["publish"]["alive"] is False and lanes["test"]["alive"] is True
    assert r.json()["ok"] is False and not rig.daemon.healthy()


def test_a_poison_job_left_in_the_queue_ends_in_error_and_the_next_job_runs(tmp_path, github, smtp):
    """A job stored by an older daemon whose image record breaks every step (and, before,
    the lane: claimed first again after each restart) ends in error; the next job runs."""
    inbox, smtp_port = smtp
    port = free_port()
    runlog = tmp_path / "runs.log"
    config = write_config(tmp_path, github, smtp_port, port, runlog, max_attempts=1)
    rig = Rig(tmp_path, config, port, github, inbox, runlog)
    queue = Queue(tmp_path / "state")
    poison = JobRequest(
        key="release:old", source="release", title="old\nrelease", image={"kind": "release"}
    )
    _, poison_id = queue.accept_delivery("from-an-older-daemon", "release", poison)
    release = add_octopi_release(github, "1.1.0-after-poison")
    proc = serve(config, tmp_path / "serve.log")
    try:
        wait_up(rig.url, proc)
        good_id = rig.hook("release", release_payload(release)).json()["job"]
        wait_for("the good job", lambda: queue.get(good_id).state == "awaiting-approval")
        wait_for("the poison job's end", lambda: queue.get(poison_id).state == "error")
        assert "internal error" in queue.get(poison_id).error
        health = httpx.get(f"{rig.url}/healthz")
        assert health.status_code == 200
    finally:
        proc.kill()
        proc.wait()
