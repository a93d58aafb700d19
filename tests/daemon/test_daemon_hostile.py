"""`rig serve` under attack and faults (issue 16): forged, malformed and hostile inputs sent
to a real daemon on loopback, the way an attacker or a careless user would send them.

Each test names the hostile inputs it tries; the closing note of the issue counts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_rig import SECRET, free_port, write_config

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
