"""Leases: never shared, never held forever by a dead run; health and quarantine."""

from __future__ import annotations

import subprocess
import sys
import time

from rig.orchestration.leases import Leases


def test_a_device_is_never_shared(tmp_path) -> None:
    a = Leases(tmp_path, holder="run-a")
    b = Leases(tmp_path, holder="run-b")
    assert a.acquire("pi3-a", "first run")
    assert not b.acquire("pi3-a", "second run")
    lease = b.holder_of("pi3-a")
    assert lease is not None and lease.purpose == "first run"
    a.release("pi3-a")
    assert b.acquire("pi3-a")


def test_expired_lease_is_taken_over(tmp_path) -> None:
    a = Leases(tmp_path, holder="run-a", ttl=0.1)
    assert a.acquire("pi3-a")
    b = Leases(tmp_path, holder="run-b")
    assert not b.acquire("pi3-a")
    time.sleep(0.2)
    assert b.acquire("pi3-a")


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
