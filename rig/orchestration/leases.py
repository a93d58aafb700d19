"""Device leases and health, shared by every `rig run` and the daemon.

A lease row says which process holds a device until when. Holders renew it
while they work; a lease whose holder died (its pid is gone on this host) is
taken over at once, and one held from another host once it expired, so a
crashed or killed run never holds a device forever. A live holder on this host
owns its lease even past its expiry (a stopped or swapped-out run is still
running): nobody takes it over while it lives. Two runs never share a device:
acquiring is one atomic UPDATE. ``renew`` says whether the lease is still ours,
and :class:`Heartbeat` renews and reports a lost lease instead of dying on a
busy database. Manual commands go through :func:`manual_lease`.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rig import state
from rig.errors import ConfigError
from rig.procs import pid_alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    device TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    purpose TEXT NOT NULL DEFAULT '',
    acquired REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS device_health (
    device TEXT PRIMARY KEY,
    infra_failures INTEGER NOT NULL DEFAULT 0,
    quarantined INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    last_result TEXT NOT NULL DEFAULT '',
    last_scenario TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL DEFAULT 0
);
"""

QUARANTINE_AFTER = 2  # consecutive infrastructure failures


@dataclass(frozen=True)
class Lease:
    device: str
    holder: str
    pid: int
    host: str
    purpose: str
    acquired: float
    expires: float


def _locked(method):
    """One connection is shared by the run's threads: one statement at a time."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Leases:
    """Leases and health for the devices of one state directory."""

    def __init__(self, state_dir: Path, holder: str | None = None, ttl: float = 120.0) -> None:
        self.conn = state.connect(state_dir)
        state.ensure_schema(self.conn, "leases", SCHEMA)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.holder = holder or f"{self.pid}@{self.host}"
        self.ttl = ttl
        self._lock = threading.RLock()

    @_locked
    def close(self) -> None:
        self.conn.close()

    def _stale(self, row: sqlite3.Row, now: float) -> bool:
        if row["host"] == self.host:  # here we know: the holder's pid tells
            return not pid_alive(row["pid"])
        return row["expires"] < now

    @_locked
    def acquire(self, device: str, purpose: str = "") -> bool:
        """Take the device if free or stale; False if another live holder has it."""
        now = time.time()
        with state.transaction(self.conn):
            row = self.conn.execute("SELECT * FROM leases WHERE device=?", (device,)).fetchone()
            if row is not None and row["holder"] != self.holder and not self._stale(row, now):
                return False
            self.conn.execute(
                "INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?,?)",
                (device, self.holder, self.pid, self.host, purpose, now, now + self.ttl),
            )
        return True

    @_locked
    def renew(self, device: str) -> bool:
        """Extend our lease; False when it is no longer ours (taken over or released)."""
        done = self.conn.execute(
            "UPDATE leases SET expires=? WHERE device=? AND holder=?",
            (time.time() + self.ttl, device, self.holder),
        )
        return done.rowcount == 1

    @_locked
    def release(self, device: str) -> None:
        self.conn.execute("DELETE FROM leases WHERE device=? AND holder=?", (device, self.holder))

    @_locked
    def release_all(self) -> None:
        self.conn.execute("DELETE FROM leases WHERE holder=?", (self.holder,))

    @_locked
    def holder_of(self, device: str) -> Lease | None:
        """The live lease on a device (stale leases count as free)."""
        row = self.conn.execute("SELECT * FROM leases WHERE device=?", (device,)).fetchone()
        if row is None or self._stale(row, time.time()):
            return None
        return Lease(**dict(row))

    # --- health --------------------------------------------------------------

    @_locked
    def health(self, device: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM device_health WHERE device=?", (device,)).fetchone()

    @_locked
    def quarantined(self, device: str) -> str | None:
        row = self.health(device)
        return row["reason"] if row is not None and row["quarantined"] else None

    @_locked
    def record(self, device: str, outcome: str, scenario: str, reason: str = "") -> bool:
        """Count an outcome against the device; True if this put it into quarantine."""
        with state.transaction(self.conn):
            row = self.health(device)
            failures = row["infra_failures"] if row else 0
            failures = failures + 1 if outcome == "error" else 0
            quarantine = failures >= QUARANTINE_AFTER
            why = f"{failures} infrastructure errors in a row; last: {reason}" if quarantine else ""
            self.conn.execute(
                "INSERT OR REPLACE INTO device_health VALUES (?,?,?,?,?,?,?)",
                (device, failures, int(quarantine), why, outcome, scenario, time.time()),
            )
        return quarantine

    @_locked
    def unquarantine(self, device: str) -> None:
        self.conn.execute(
            "UPDATE device_health SET quarantined=0, infra_failures=0, reason='' WHERE device=?",
            (device,),
        )


class Heartbeat:
    """Renew a holder's leases every ``interval`` seconds on its own connection.

    A busy database (``database is locked`` from another process's long write) is
    retried at the next beat, not fatal; a lease that is no longer ours, or that
    could not be renewed before it would expire, is reported once to ``on_lost``
    (the run cancels itself: it must not go on driving a device it does not hold).
    """

    def __init__(
        self,
        state_dir: Path,
        holder: str,
        devices: Callable[[], list[str]],
        on_lost: Callable[[str, str], None],
        *,
        interval: float = 20.0,
        ttl: float = 120.0,
        busy_timeout: float = 30.0,
    ) -> None:
        self.state_dir, self.holder, self.devices = state_dir, holder, devices
        self.on_lost, self.interval, self.ttl = on_lost, interval, ttl
        self.busy_timeout = busy_timeout
        self.stop = threading.Event()
        self.lost: set[str] = set()
        self.thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        leases: Leases | None = None
        renewed = {name: time.monotonic() for name in self.devices()}
        try:
            while not self.stop.wait(self.interval):
                for name in self.devices():
                    if name in self.lost:
                        continue
                    try:
                        if leases is None:
                            leases = Leases(self.state_dir, holder=self.holder, ttl=self.ttl)
                            ms = int(self.busy_timeout * 1000)
                            leases.conn.execute(f"PRAGMA busy_timeout={ms}")
                        if leases.renew(name):
                            renewed[name] = time.monotonic()
                            continue
                        why = "taken over by another holder"
                    except sqlite3.Error as e:
                        last = renewed.setdefault(name, time.monotonic())
                        if time.monotonic() - last < self.ttl:
                            continue  # busy: the next beat tries again
                        why = f"not renewed for {self.ttl:.0f}s: {e}"
                    self.lost.add(name)
                    self.on_lost(name, why)
        finally:
            if leases is not None:
                leases.close()


@contextmanager
def manual_lease(state_dir: Path, device: str, purpose: str, force: bool = False) -> Iterator[None]:
    """Hold ``device`` for a manual command (rig power/mux/flash/provision DEVICE).

    Another live holder (a `rig run`, the daemon's acceptance run) makes it a
    ConfigError naming the holder, unless ``force``: then the command runs and
    says whose lease it ignored.
    """
    leases = Leases(state_dir)
    try:
        if leases.acquire(device, purpose=purpose):
            try:
                yield
            finally:
                leases.release(device)
            return
        lease = leases.holder_of(device)
        who = f"{lease.purpose or lease.holder} (pid {lease.pid} on {lease.host})" if lease else "?"
        if not force:
            raise ConfigError(
                f"{device} is leased by {who}",
                where=f"device {device}",
                hint="wait for it to finish, or add --force if you know that run is wedged",
            )
        print(f"rig: warning: {device} is leased by {who}; --force: going ahead", file=sys.stderr)
        yield
    finally:
        leases.close()
