"""Leases: never shared, never held forever by a dead run; health and quarantine."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rig.cli import main
from rig.orchestration.leases import Heartbeat, Leases
from rig.virtual.hw import VirtualHardware, cleanup

HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from rig.orchestration.leases import Leases\n"
    "l = Leases(Path(sys.argv[1]), ttl=float(sys.argv[3]))\n"
    "assert l.acquire(sys.argv[2], 'rig run matrix.json')\n"
    "print('held', flush=True)\n"
    "sys.stdin.readline()\n"
    "print('renewed' if l.renew(sys.argv[2]) else 'lost', flush=True)\n"
    "time.sleep(60)\n"
)


def _holder(state: Path, device: str, ttl: float = 120.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), device, str(ttl)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_device_is_never_shared(tmp_path) -> None:
    a = Leases(tmp_path, holder="run-a")
    b = Leases(tmp_path, holder="run-b")
    assert a.acquire("pi3-a", "first run")
    assert not b.acquire("pi3-a", "second run")
    lease = b.holder_of("pi3-a")
    assert lease is not None and lease.purpose == "first run"
    a.release("pi3-a")
    assert b.acquire("pi3-a")


def test_an_expired_lease_from_another_host_is_taken_over_and_its_renew_says_so(
    tmp_path,
) -> None:
    a = Leases(tmp_path, holder="run-a", ttl=0.1)
    a.host = "other-flash-host"  # its pid means nothing here: only the expiry counts
    assert a.acquire("pi3-a")
    b = Leases(tmp_path, holder="run-b")
    assert not b.acquire("pi3-a")
    time.sleep(0.2)
    assert b.acquire("pi3-a")
    assert a.renew("pi3-a") is False  # no longer ours: the holder learns it
    assert b.renew("pi3-a") is True


def test_lease_of_a_killed_process_is_taken_over(tmp_path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from rig.orchestration.leases import Leases\n"
        "l = Leases(Path(sys.argv[1]))\n"
        "assert l.acquire('pi3-a', 'doomed run')\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        other = Leases(tmp_path, holder="next-run")
        assert not other.acquire("pi3-a")  # the holder is alive
        proc.kill()
        proc.wait()
        assert other.acquire("pi3-a")  # dead holder: taken over
    finally:
        proc.kill()


def test_repeated_infrastructure_errors_quarantine(tmp_path) -> None:
    health = Leases(tmp_path)
    assert not health.record("pi3-a", "error", "s1", "never came up")
    assert health.quarantined("pi3-a") is None
    assert health.record("pi3-a", "error", "s2", "never came up")
    assert "never came up" in health.quarantined("pi3-a")
    health.unquarantine("pi3-a")
    assert health.quarantined("pi3-a") is None
    health.record("pi3-a", "error", "s3")
    health.record("pi3-a", "passed", "s4")  # a success resets the count
    assert not health.record("pi3-a", "error", "s5")


def test_a_live_holder_that_stopped_renewing_keeps_its_lease(tmp_path) -> None:
    """SIGSTOP a holder (a swapped-out or debugged run) past its ttl: it is alive, so its
    lease is not taken over, and once it runs again its renew still holds."""
    proc = _holder(tmp_path, "pi3-a", ttl=0.2)
    try:
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # well past the ttl
        other = Leases(tmp_path, holder="next-run")
        assert not other.acquire("pi3-a")
        assert other.holder_of("pi3-a").pid == proc.pid
        proc.send_signal(signal.SIGCONT)
        proc.stdin.write("renew\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "renewed"
    finally:
        proc.kill()
        proc.wait()


def test_the_heartbeat_outlives_a_locked_database_and_reports_a_lost_lease(tmp_path) -> None:
    mine = Leases(tmp_path, holder="run-a", ttl=30)
    assert mine.acquire("pi3-a") and mine.acquire("pi3-b")
    lost: list[tuple[str, str]] = []
    beat = Heartbeat(
        tmp_path, "run-a", lambda: ["pi3-a", "pi3-b"], lambda d, w: lost.append((d, w)),
        interval=0.1, ttl=30, busy_timeout=0.2,
    ).start()  # fmt: skip
    try:
        # another process writes for a while: every renew meets "database is locked"
        locker = sqlite3.connect(tmp_path / "rig.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        time.sleep(1.0)
        before = mine.holder_of("pi3-a").expires
        locker.execute("COMMIT")
        locker.close()
        deadline = time.monotonic() + 5
        while mine.holder_of("pi3-a").expires <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat.thread.is_alive() and lost == []
        assert mine.holder_of("pi3-a").expires > before  # renewing again

        # someone else holds pi3-b now (a --force, a bug): the run is told, once
        mine.conn.execute("UPDATE leases SET holder='intruder' WHERE device='pi3-b'")
        deadline = time.monotonic() + 5
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert lost == [("pi3-b", "taken over by another holder")]
    finally:
        beat.close()


@pytest.fixture
def rig_yaml(tmp_path: Path):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(f"paths:\n  state: {tmp_path / 'state'}\nvirtual:\n  card_size: 8388608\n")
    yield cfg
    cleanup(tmp_path / "state" / "virtual")


def test_manual_commands_respect_a_runs_lease_unless_forced(rig_yaml, tmp_path, capsys) -> None:
    state = tmp_path / "state"
    hw = VirtualHardware(state / "virtual", use_loop=False)
    proc = _holder(state, "pi3-b")
    try:
        refused = [
            ["power", "pi3-b", "on"],
            ["power", "pi3-b", "cycle"],
            ["mux", "pi3-b", "host"],
            ["flash", "pi3-b", str(tmp_path / "any.img")],
            ["provision", "pi3-b"],
        ]
        (tmp_path / "any.img").write_bytes(b"\0" * 4096)
        for argv in refused:
            assert main(["--config", str(rig_yaml), *argv]) == 2, argv
            err = capsys.readouterr().err
            assert f"pi3-b is leased by rig run matrix.json (pid {proc.pid}" in err, argv
        assert hw.port_power("1-1", 2) is False and hw.mux_side(_serial(rig_yaml)) != "host"
        assert main(["--config", str(rig_yaml), "power", "pi3-b", "status"]) == 0  # reading
        assert main(["--config", str(rig_yaml), "power", "pi3-b", "on", "--force"]) == 0
        assert "--force: going ahead" in capsys.readouterr().err
        assert hw.port_power("1-1", 2) is True
        # a free device: the command holds the lease while it acts, then lets go
        assert main(["--config", str(rig_yaml), "power", "pi3-c", "on"]) == 0
        assert Leases(state).holder_of("pi3-c") is None
    finally:
        proc.kill()
        proc.wait()


def _serial(rig_yaml: Path) -> str:
    from rig.config import load_config

    return load_config(rig_yaml).device("pi3-b").mux.serial or ""
