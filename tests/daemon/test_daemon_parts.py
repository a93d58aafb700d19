"""The daemon's parts on their own: settings and secrets, mail over TLS, polling, publish
actions, the release feed route, and the workflow's signed curl recipe."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from daemon_doubles import GitHubState
from daemon_rig import (
    MARKER,
    REPO,
    SECRET,
    Inbox,
    add_octopi_release,
    free_port,
    release_payload,
    write_config,
)

from rig.config import load_config
from rig.daemon.github import GitHub
from rig.daemon.poller import poll_once
from rig.daemon.publish import publish
from rig.daemon.queue import Job, Queue
from rig.daemon.settings import load_settings
from rig.errors import ConfigError, InfraError, ValidationErrors

ROOT = Path(__file__).resolve().parents[2]


def test_secrets_come_from_file_env_or_systemd_credentials(tmp_path, monkeypatch, github):
    path = write_config(tmp_path, github, 25, 8470, tmp_path / "runs.log")
    settings = load_settings(load_config(path))
    assert settings.webhook_secret.reveal() == SECRET
    assert SECRET not in repr(settings)  # Secret hides itself in reprs and logs

    data = yaml.safe_load(path.read_text())
    del data["secrets"]
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("RIG_SECRET_WEBHOOK_SECRET", "from-env-0123456789")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "github_token").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = load_settings(load_config(path))
    assert settings.webhook_secret.reveal() == "from-env-0123456789"
    assert settings.github_token.reveal() == "from-credential"

    # the approval key is made once, kept 0600, and the same after a restart
    key = settings.state_dir / "daemon-approval.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_settings(load_config(path)).approval_key == settings.approval_key


def test_daemon_sections_are_schema_checked_with_located_errors(tmp_path, github):
    path = write_config(tmp_path, github, 25, 8470, tmp_path / "runs.log")
    data = yaml.safe_load(path.read_text())
    data["daemon"]["publish"] = {"action": "unmark", "command": "x"}
    data["mail"]["security"] = "tls"
    data["github"]["repositories"][0]["name"] = "no-slash"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationErrors) as err:
        load_config(path)
    where = {p for p, _ in err.value.problems}
    assert {"daemon.publish", "mail.security", "github.repositories[0].name"} <= where

    data = yaml.safe_load(path.read_text())
    data["daemon"]["publish"] = {"action": "unmark"}
    data["mail"] = {**data["mail"], "security": "starttls", "username": "rig"}
    data["github"]["repositories"][0]["name"] = REPO
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no SMTP password"):
        load_settings(load_config(path))


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    ca_key, ca, key, csr, cert = (
        tmp_path / n for n in ("ca.key", "ca.pem", "k.pem", "r.csr", "c.pem")
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=rig test CA",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a CA")
def test_mail_over_starttls_with_login_verifies_the_server(tmp_path, caplog):
    from rig.config import Secret
    from rig.daemon import mail
    from rig.daemon.settings import MailSettings

    ca, cert, key = _tls_files(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret-pw"
        logins.append((mechanism, ok))
        return AuthResult(success=ok)

    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    caplog.set_level(logging.DEBUG)
    try:
        settings = MailSettings(
            host="127.0.0.1",
            port=port,
            security="starttls",
            sender="rig@rig.test",
            to=("m@rig.test",),
            username="rig",
            password=Secret("s3cret-pw", "smtp_password"),
            ca_file=str(ca),
        )
        mail.send(settings, "[rig] hello", "body text")
        assert inbox.messages[0]["Subject"] == "[rig] hello"
        assert logins and all(ok for _, ok in logins)

        # without the private CA the server's certificate is not trusted: no mail
        untrusted = MailSettings(**{**settings.__dict__, "ca_file": None})
        with pytest.raises(InfraError, match="starttls"):
            mail.send(untrusted, "[rig] never", "x")
        assert len(inbox.messages) == 1
        assert "s3cret-pw" not in caplog.text
    finally:
        controller.stop()


def test_polling_queues_untested_releases_once(tmp_path, github):
    add_octopi_release(github, "1.1.0-1.11.0-polled")
    github.add_release("already-public", "no marker here", {"octopi-x.zip": b"x"})
    path = write_config(tmp_path, github, 25, 8470, tmp_path / "runs.log", poll_minutes=5)
    settings = load_settings(load_config(path))
    queue = Queue(settings.state_dir)
    gh = GitHub(settings.api_url, settings.github_token)
    try:
        assert len(poll_once(settings, queue, gh)) == 1
        assert poll_once(settings, queue, gh) == []
        # the webhook for the same release, arriving later, is the same job
        release = next(r for r in github.releases.values() if MARKER in r["body"])
        from rig.daemon.webhooks import job_request

        outcome, _ = queue.accept_delivery(
            "late", "release", job_request("release", release_payload(release), settings)
        )
        assert outcome == "known" and len(queue.jobs()) == 1
    finally:
        gh.close()


def _job(sha256: str = "ab" * 32, **image) -> Job:
    return Job(
        id=7,
        key="k",
        source="release",
        repo=REPO,
        sha=None,
        title="t",
        image=image,
        state="approved",
        phase=None,
        attempts=1,
        image_path="/x/octopi.zip",
        image_sha256=sha256,
        report_dir=None,
        result=None,
        error=None,
        lease_owner=None,
        created=0,
        updated=0,
        decision="approve",
    )


def test_publish_actions_against_the_api_double(github: GitHubState, tmp_path):
    from daemon_doubles import TOKEN

    from rig.config import Secret

    gh = GitHub(github.api_url, Secret(TOKEN))  # type: ignore[attr-defined]
    try:
        draft = github.add_release("v2", f"{MARKER}\nnotes", {"octopi.zip": b"x"}, draft=True)
        sha = hashlib.sha256(b"x").hexdigest()
        job = _job(sha, repo=REPO, tag="v2", publish_release={"id": draft["id"], "tag": "v2"})
        assert "published" in publish(job, {"action": "undraft"}, gh, "http://rig")
        assert github.releases[draft["id"]]["draft"] is False
        assert "already" in publish(job, {"action": "undraft"}, gh, "http://rig")
        assert "removed" in publish(job, {"action": "unmark"}, gh, "http://rig")
        assert github.releases[draft["id"]]["body"] == "notes"
        assert "already gone" in publish(job, {"action": "unmark"}, gh, "http://rig")

        publish(job, {"action": "dispatch", "event_type": "rig-approved"}, gh, "http://rig")
        sent = github.calls_to("POST", f"/repos/{REPO}/dispatches")[-1].body
        assert sent["event_type"] == "rig-approved"
        assert sent["client_payload"]["sha256"] == sha and sent["client_payload"]["tag"] == "v2"

        out = tmp_path / "published.txt"
        cmd = {"action": "command", "command": f'echo "$RIG_IMAGE_SHA256 $RIG_TAG" > {out}'}
        publish(job, cmd, gh, "http://rig")
        assert out.read_text().split() == [sha, "v2"]
        with pytest.raises(InfraError, match="exited 3"):
            publish(job, {"action": "command", "command": "exit 3"}, gh, "http://rig")
        with pytest.raises(ConfigError, match="names no release"):
            publish(
                _job(kind="artifact"),
                {"action": "unmark"},
                gh.__class__("http://127.0.0.1:9", None),
                "x",
            )
    finally:
        gh.close()


def test_release_feed_is_a_route_of_the_daemon(rig):
    data = yaml.safe_load(rig.config_path.read_text())
    data["daemon"]["matrix"] = str(ROOT / "matrix" / "demo.json")
    rig.config_path.write_text(yaml.safe_dump(data))
    rig.start()
    expected = json.loads((ROOT / "matrix" / "demo.json").read_text())["release"]["version"]
    r = httpx.get(f"{rig.url}/feed/releases/OctoPrint/OctoPrint", params={"series": "1"})
    assert r.status_code == 200 and r.json()[0]["tag_name"] == expected
    assert httpx.get(f"{rig.url}/feed/releases/someone/else").json() == []  # nothing to offer


def test_the_package_cache_is_a_route_of_the_daemon(rig, tmp_path):
    """Devices reach the cache at {public_url}/packages/simple/, proxied from the upstream."""
    import threading
    from wsgiref.simple_server import make_server

    import pypiserver

    dists = tmp_path / "dists"
    dists.mkdir()
    (dists / "rigdemo-1.0.tar.gz").write_bytes(b"an sdist")
    upstream = make_server("127.0.0.1", 0, pypiserver.app(roots=[str(dists)]))
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        data = yaml.safe_load(rig.config_path.read_text())
        data["run"] = {
            "package_index": f"http://127.0.0.1:{upstream.server_port}/simple/",
            "package_cache": str(tmp_path / "package-cache"),
        }
        rig.config_path.write_text(yaml.safe_dump(data))
        rig.start()
        page = httpx.get(f"{rig.url}/packages/simple/rigdemo/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert 'href="../../files/rigdemo/rigdemo-1.0.tar.gz#sha256=' in page.text
        dist = httpx.get(f"{rig.url}/packages/files/rigdemo/rigdemo-1.0.tar.gz")
        assert dist.status_code == 200 and dist.content == b"an sdist"
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert (tmp_path / "package-cache" / "files" / "rigdemo" / "rigdemo-1.0.tar.gz").is_file()


@pytest.mark.skipif(
    shutil.which("jq") is None or shutil.which("curl") is None,
    reason="the workflow step uses jq and curl",
)
def test_the_workflows_signed_curl_reaches_the_daemon(rig):
    """Run the `direct` step of workflows/notify-rig.yml, as written, against the daemon."""
    workflow = yaml.safe_load((ROOT / "workflows" / "notify-rig.yml").read_text())
    step = workflow["jobs"]["direct"]["steps"][0]
    data = b"an image"
    rig.github.blobs["direct"] = data
    rig.start()
    env = {
        **os.environ,
        "RIG_URL": rig.url,
        "RIG_SECRET": SECRET,
        "IMAGE_URL": f"{rig.github.storage_url}/storage/direct",
        "IMAGE_SHA256": hashlib.sha256(data).hexdigest(),
        "GITHUB_REPOSITORY": REPO,
    }
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr + done.stdout
    answer = json.loads(done.stdout)
    assert answer["outcome"] == "queued"
    job = rig.wait_state(answer["job"], "awaiting-approval")
    assert job.image_sha256 == hashlib.sha256(data).hexdigest()


def test_a_leased_job_is_not_claimed_twice_and_deliveries_are_recorded_once(tmp_path):
    from rig.daemon.queue import JobRequest

    a, b = Queue(tmp_path), Queue(tmp_path)  # two processes' views of one state file
    req = JobRequest(key="k1", source="release", title="t", image={"kind": "url"})
    assert a.accept_delivery("d1", "release", req) == ("queued", 1)
    first = a.claim("owner-a", ("queued",))
    assert first is not None and first.id == 1
    assert b.claim("owner-b", ("queued",)) is None  # leased
    assert b.recover("owner-b") == []  # b holds the worker lock now: a's lease is stale
    assert b.claim("owner-b", ("queued",)).id == 1

    # one batch (the webhook route's group commit): a redelivery inside it is a duplicate
    req2 = JobRequest(key="k2", source="release", title="t2", image={"kind": "url"})
    assert b.accept_deliveries(
        [("d2", "release", req2, ""), ("d2", "release", req2, ""), ("d3", "release", req2, "")]
    ) == [("queued", 2), ("duplicate", 2), ("known", 2)]
    assert a.accept_delivery("d4", "ping", None, "ping") == ("ignored", None)
    assert a.accept_delivery("d4", "ping", None, "ping") == ("duplicate", None)
