"""SSH device access against a real SSH server on 127.0.0.1 (paramiko's server side)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import paramiko
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sshserver import SSHServer

from rig.device.clock import check_clock
from rig.device.ssh import SSHShell, forget_host_key
from rig.errors import ConfigError, InfraError


@pytest.fixture
def server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    s = SSHServer(home).start()
    yield s
    s.stop()


def shell(server, tmp_path, **kw) -> SSHShell:
    lines: list[str] = []
    options = {"port": server.port, "user": "pi", "password": "raspberry"}
    options.update(kw)
    log = lambda message, **data: lines.append(message)  # noqa: E731
    sh = SSHShell("127.0.0.1", known_hosts=tmp_path / "known_hosts", log=log, **options)
    sh.lines = lines
    return sh


def test_run_captures_status_output_and_logs(server, tmp_path):
    sh = shell(server, tmp_path)
    sh.wait_reachable(timeout=10)
    r = sh.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.exit_status, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert any("exit 3" in line for line in sh.lines)
    assert any("| out" in line for line in sh.lines)
    with pytest.raises(InfraError, match="exit 3"):
        sh.run("exit 3")
    sh.close()


def test_put_and_read_files_in_home(server, tmp_path):
    sh = shell(server, tmp_path)
    sh.put_text("~/.octoprint/plugins/x.py", "print('hi')\n", mode=0o600)
    target = server.home / ".octoprint/plugins/x.py"
    assert target.read_text() == "print('hi')\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sh.read_bytes("~/.octoprint/plugins/x.py", offset=7) == b"hi')\n"
    assert sh.read_bytes("~/does-not-exist") is None
    sh.close()


def test_refused_port_times_out_with_reason(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sh = SSHShell("127.0.0.1", port=port, password="x", known_hosts=tmp_path / "kh")
    start = time.monotonic()
    with pytest.raises(InfraError, match="connection refused") as e:
        sh.wait_reachable(timeout=2, interval=0.2)
    assert "within 2s" in e.value.message
    assert time.monotonic() - start < 5


def test_wrong_password_says_authentication_failed(server, tmp_path):
    sh = shell(server, tmp_path, password="wrong")
    with pytest.raises(InfraError, match="authentication failed"):
        sh.wait_reachable(timeout=2, interval=0.5)


def test_accept_new_remembers_key_and_refuses_a_changed_one(server, tmp_path):
    # the retrying wait, as the profile connects: a loaded machine may drop a handshake
    shell(server, tmp_path).wait_reachable(timeout=30, interval=0.5)
    assert (tmp_path / "known_hosts").read_text().startswith(f"[127.0.0.1]:{server.port}")
    server.host_key = paramiko.RSAKey.generate(2048)  # the device was re-flashed
    sh = shell(server, tmp_path)
    with pytest.raises(InfraError, match="host key changed") as e:
        sh.wait_reachable(timeout=30)
    assert "known_hosts" in e.value.hint
    forget_host_key("127.0.0.1", server.port, tmp_path / "known_hosts")
    # after forgetting, the new key is accepted
    shell(server, tmp_path).wait_reachable(timeout=30, interval=0.5)


def test_strict_refuses_unknown_and_ignore_accepts_anything(server, tmp_path):
    with pytest.raises(InfraError, match="unknown host key"):
        shell(server, tmp_path, host_keys="strict").wait_reachable(timeout=5)
    sh = shell(server, tmp_path, host_keys="ignore")
    sh.wait_reachable(timeout=30, interval=0.5)  # retries what a loaded machine may drop
    assert not (tmp_path / "known_hosts").exists()
    with pytest.raises(ConfigError, match="host key policy"):
        shell(server, tmp_path, host_keys="trust-me")


def test_clock_check_passes_for_a_right_clock_and_fails_for_a_wrong_one(server, tmp_path):
    sh = shell(server, tmp_path)
    assert abs(check_clock(sh)) < 5
    (server.home / "bin").mkdir()
    fake = server.home / "bin" / "date"
    fake.write_text("#!/bin/sh\necho 86400.0\n")  # 1970-01-02: a Pi without NTP
    fake.chmod(0o755)
    sh.run("true")
    with pytest.raises(InfraError, match="device clock is off"):
        check_clock(_PathShell(sh, server.home / "bin"))


class _PathShell:
    """The same SSH shell with the fake `date` first on PATH."""

    def __init__(self, sh: SSHShell, bin_dir: Path) -> None:
        self.sh, self.bin, self.where = sh, bin_dir, sh.where

    def run(self, command: str, **kw):
        return self.sh.run(f"PATH={self.bin}:$PATH; {command}", **kw)
