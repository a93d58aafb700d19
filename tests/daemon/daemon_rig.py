"""Helpers for the daemon's tests: a configured rig and its daemon on loopback, a mail inbox,
OctoPi-UpToDate-shaped releases. (Named uniquely: test files import it, not conftest.)"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_doubles import TOKEN, GitHubState, ServedApp, acceptance_command

from rig.config import load_config
from rig.daemon.app import Daemon, create_app
from rig.daemon.settings import load_settings
from rig.daemon.webhooks import signature

SECRET = "webhook-secret-for-tests"
REPO = "OctoPrint/OctoPi-UpToDate"
MARKER = "<!-- mark:untested -->"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def serve(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real `rig serve` process for ``config`` (stdout and stderr appended to ``log``)."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "rig", "--config", str(config), "serve", "--retry-delay", "0.2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env=env,
        )


def wait_up(url: str, proc: subprocess.Popen) -> None:
    def up() -> bool:
        assert proc.poll() is None, "rig serve exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("rig serve to answer", up, timeout=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler: keeps every message it receives, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        self.messages.append(
            email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        )
        return "250 OK"

    def text(self, msg: email.message.EmailMessage) -> str:
        return msg.get_body(("plain",)).get_content()


@dataclass
class Rig:
    """A configured rig directory and, once started, its daemon on loopback."""

    dir: Path
    config_path: Path
    port: int
    github: GitHubState
    inbox: Inbox
    runlog: Path
    served: ServedApp | None = None
    daemon: Daemon | None = None
    deliveries: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daemon:
        settings = load_settings(load_config(self.config_path))
        self.daemon = Daemon(settings, retry_delay=0.2)
        app = create_app(self.daemon)
        self.served = ServedApp(app, self.port).__enter__()
        return self.daemon

    def stop(self) -> None:
        if self.served is not None:
            self.served.__exit__()
            self.served = None

    def hook(
        self,
        event: str,
        payload: Any,
        delivery: str | None = None,
        secret: str = SECRET,
        sign: bool = True,
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        delivery = delivery or str(uuid.uuid4())
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json",
        }
        if sign:
            headers["X-Hub-Signature-256"] = signature(secret.encode(), body)
        return httpx.post(f"{self.url}/hooks/github", content=body, headers=headers, timeout=10)

    def job(self, job_id: int) -> Any:
        assert self.daemon is not None
        return self.daemon.queue.get(job_id)

    def wait_state(self, job_id: int, *states: str, timeout: float = 30.0) -> Any:
        return wait_for(
            f"job {job_id} in {states}",
            lambda: (j := self.job(job_id)) is not None and j.state in states and j,
            timeout,
        )

    def approval_link(self, index: int = -1) -> str:
        text = self.inbox.text(self.inbox.messages[index])
        match = re.search(r"(http://\S+/approve/\S+)", text)
        assert match, text
        return match.group(1)


def write_config(
    base: Path, github: GitHubState, smtp_port: int, port: int, runlog: Path, **daemon: Any
) -> Path:
    secrets = base / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"webhook_secret": SECRET, "github_token": TOKEN}))
    os.chmod(secrets, 0o600)
    config = {
        "secrets": "secrets.yaml",
        "paths": {"state": "state", "reports": "reports", "images": "images"},
        "daemon": {
            "bind": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "acceptance_command": acceptance_command(runlog, daemon.pop("hold", None)),
            "max_attempts": 2,
            "publish": {"action": "unmark"},
            **daemon,
        },
        "mail": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "from": "rig@rig.test",
            "to": ["maintainer@rig.test"],
        },
        "github": {
            "api_url": github.api_url,  # type: ignore[attr-defined]
            # the storage double is on loopback, like a GitHub Enterprise storage host on a LAN
            "private_hosts": [f"127.0.0.1:{github.storage_port}"],  # type: ignore[attr-defined]
            "repositories": [
                {
                    "name": REPO,
                    "workflows": ["build.yml"],
                    "artifact": "octopi-*",
                    "asset": "octopi-*.zip",
                    "dispatch_event_type": "rig-test",
                    "image_hosts": [f"127.0.0.1:{github.storage_port}"],  # type: ignore[attr-defined]
                }
            ],
        },
    }
    path = base / "rig.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def image_bytes(tag: str, fail: bool = False) -> bytes:
    """A small stand-in image (the acceptance command under test reads only its head)."""
    head = b"FAIL" if fail else b"IMG0"
    return head + hashlib.sha256(tag.encode()).digest() * 1000


def release_payload(release: dict[str, Any], action: str = "published") -> dict[str, Any]:
    return {"action": action, "release": release, "repository": {"full_name": REPO}}


def add_octopi_release(github: GitHubState, tag: str, fail: bool = False) -> dict[str, Any]:
    """A release shaped like OctoPi-UpToDate's: zip, .sha256, rpi-imager.json, marker."""
    data = image_bytes(tag, fail)
    name = f"octopi-{tag}.zip"
    digest = hashlib.sha256(data).hexdigest()
    imager = {
        "os_list": [
            {
                "name": f"OctoPi {tag}",
                "image_download_sha256": digest,
                "image_download_size": len(data),
            }
        ]
    }
    return github.add_release(
        tag,
        f"OctoPi {tag}\n\n{MARKER}\n\nBuilt by CI.",
        {
            name: data,
            f"{name}.sha256": f"{digest}  {name}\n".encode(),
            f"{name}.md5": hashlib.md5(data).hexdigest().encode(),
            "rpi-imager.json": json.dumps(imager).encode(),
        },
    )
