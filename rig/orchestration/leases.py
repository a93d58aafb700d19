"""Device leases and health, shared by every `rig run` and the daemon.

A lease row says which process holds a device until when. Holders renew it
while they work; a lease whose holder died (its pid is gone on this host) or
that expired is taken over, so a crashed or killed run never holds a device
forever. Two runs never share a device: acquiring is one atomic UPDATE.
"""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rig import state

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        if row["expires"] < now:
            return True
        return row["host"] == self.host and not _pid_alive(row["pid"])

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
    def renew(self, device: str) -> None:
        self.conn.execute(
            "UPDATE leases SET expires=? WHERE device=? AND holder=?",
            (time.time() + self.ttl, device, self.holder),
        )

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
