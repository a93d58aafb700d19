"""Fixtures for the daemon: a GitHub double, a real SMTP server, a configured rig, the daemon."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_doubles import GitHubState, ServedApp, github_app
from daemon_rig import Inbox, Rig, free_port, write_config


@pytest.fixture
def github() -> Iterator[GitHubState]:
    state = GitHubState()
    app = github_app(state)
    with ServedApp(app) as api, ServedApp(app) as storage:
        state.storage_url = storage.url
        state.api_url = api.url  # type: ignore[attr-defined]
        state.api_port = api.port  # type: ignore[attr-defined]
        state.storage_port = storage.port  # type: ignore[attr-defined]
        yield state


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def rig(tmp_path: Path, github: GitHubState, smtp: tuple[Inbox, int]) -> Iterator[Rig]:
    inbox, smtp_port = smtp
    port = free_port()
    runlog = tmp_path / "runs.log"
    path = write_config(tmp_path, github, smtp_port, port, runlog)
    r = Rig(tmp_path, path, port, github, inbox, runlog)
    try:
        yield r
    finally:
        r.stop()
