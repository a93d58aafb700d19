"""The daemon's durable queue: deliveries, jobs, their steps and approval nonces in SQLite.

Everything the daemon must not forget lives here, in the rig's shared state
file (WAL), so a crash or reboot loses nothing. A job is run by whoever holds
its lease (owner + expiry, renewed by a heartbeat); the worker also holds an
exclusive flock on the state directory, so after a restart every lease not
held by the current process is stale and its job is taken back from the last
completed step.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.errors import InfraError
from rig.state import connect, ensure_schema, transaction

DDL = """
CREATE TABLE IF NOT EXISTS daemon_deliveries (
    delivery TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    received REAL NOT NULL,
    outcome TEXT NOT NULL,
    job_id INTEGER
);
CREATE TABLE IF NOT EXISTS daemon_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    repo TEXT,
    sha TEXT,
    title TEXT NOT NULL,
    image TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    image_path TEXT,
    image_sha256 TEXT,
    report_dir TEXT,
    result TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    decided_at REAL,
    decision TEXT
);
CREATE INDEX IF NOT EXISTS daemon_jobs_state ON daemon_jobs(state, id);
CREATE TABLE IF NOT EXISTS daemon_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES daemon_jobs(id),
    name TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS daemon_steps_job ON daemon_steps(job_id, id);
CREATE TABLE IF NOT EXISTS daemon_nonces (
    nonce TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES daemon_jobs(id),
    created REAL NOT NULL,
    used_at REAL,
    used_for TEXT
);
"""

# job states
QUEUED = "queued"  # waiting to be downloaded and tested
RUNNING = "running"  # a worker holds it: download, verify, test, notify
AWAITING = "awaiting-approval"  # tested green; the maintainer was mailed
APPROVED = "approved"  # waiting for the publish action
PUBLISHED = "published"
REJECTED = "rejected"
FAILED = "failed"  # the image failed its acceptance tests (not published)
ERROR = "error"  # could not test or publish (after retries)
EXPIRED = "expired"  # nobody decided before the approval link expired
UNCERTAIN = "uncertain"  # a non-idempotent publish was interrupted: a person checks
WARMED = "warmed"  # a warm job is done (or was not needed any more)
FINAL = (PUBLISHED, REJECTED, FAILED, ERROR, EXPIRED, UNCERTAIN, WARMED)

# job kinds: a test job tests an image; a warm job prepares for one still being built
TEST = "test"
WARM = "warm"
LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Job:
    id: int
    key: str
    source: str
    repo: str | None
    sha: str | None
    title: str
    image: dict[str, Any]
    state: str
    phase: str | None
    attempts: int
    image_path: str | None
    image_sha256: str | None
    report_dir: str | None
    result: dict[str, Any] | None
    error: str | None
    lease_owner: str | None
    created: float
    updated: float
    decision: str | None
    kind: str = TEST

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            key=row["key"],
            source=row["source"],
            repo=row["repo"],
            sha=row["sha"],
            title=row["title"],
            image=json.loads(row["image"]),
            state=row["state"],
            phase=row["phase"],
            attempts=row["attempts"],
            image_path=row["image_path"],
            image_sha256=row["image_sha256"],
            report_dir=row["report_dir"],
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"],
            lease_owner=row["lease_owner"],
            created=row["created"],
            updated=row["updated"],
            decision=row["decision"],
            kind=row["kind"],
        )


@dataclass(frozen=True)
class JobRequest:
    """What a webhook (or the poller) asks for: test this image."""

    key: str  # one job per build, however many deliveries announce it
    source: str
    title: str
    image: dict[str, Any]
    repo: str | None = None
    sha: str | None = None
    kind: str = TEST


class Queue:
    """Thread-safe access to the daemon tables: one SQLite connection per thread."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._local = threading.local()
        self._write_lock = threading.Lock()
        ensure_schema(self.conn, "daemon", DDL)
        self._add_kind()

    def _add_kind(self) -> None:
        """A state file from before warm jobs: every job it holds is a test job."""
        columns = {r["name"] for r in self.conn.execute("PRAGMA table_info(daemon_jobs)")}
        if "kind" not in columns:
            with self.tx() as c:
                columns = {r["name"] for r in c.execute("PRAGMA table_info(daemon_jobs)")}
                if "kind" not in columns:  # another process may have added it meanwhile
                    c.execute(
                        f"ALTER TABLE daemon_jobs ADD COLUMN kind TEXT NOT NULL DEFAULT '{TEST}'"
                    )

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.state_dir)
        # a delivery GitHub was told "202 queued" must survive a power cut, not only a
        # crash: WAL with a sync per commit (~0.2 ms here; webhooks are rare on a rig)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One writer per process at a time: threads queue on a lock (fair, no sleeping),
        so SQLite's busy handler (which sleeps in steps of up to 100 ms) only ever
        arbitrates between processes."""
        with self._write_lock, transaction(self.conn) as conn:
            yield conn

    # deliveries -> jobs -------------------------------------------------------

    def accept_delivery(
        self, delivery: str, event: str, request: JobRequest | None, ignored: str = ""
    ) -> tuple[str, int | None]:
        """Record a delivery once; queue its job unless the same build already has one.

        Returns ("duplicate" | "queued" | "known" | "ignored", job id).
        """
        return self.accept_deliveries([(delivery, event, request, ignored)])[0]

    def accept_deliveries(
        self, items: list[tuple[str, str, JobRequest | None, str]]
    ) -> list[tuple[str, int | None]]:
        """Several deliveries in one transaction (one sync for all: the webhook route's
        group commit); a redelivery inside the batch is seen as a duplicate."""
        now = time.time()
        results: list[tuple[str, int | None]] = []
        with self.tx() as c:
            for item in items:  # one bad item is refused alone: a savepoint each
                c.execute("SAVEPOINT delivery")
                try:
                    results.append(self._record(c, *item, now))
                except (sqlite3.Error, TypeError, ValueError) as e:
                    c.execute("ROLLBACK TO delivery")
                    results.append((f"refused: {e}"[:200], None))
                c.execute("RELEASE delivery")
        return results

    def _record(
        self,
        c: sqlite3.Connection,
        delivery: str,
        event: str,
        request: JobRequest | None,
        ignored: str,
        now: float,
    ) -> tuple[str, int | None]:
        seen = c.execute(
            "SELECT outcome, job_id FROM daemon_deliveries WHERE delivery = ?", (delivery,)
        ).fetchone()
        if seen is not None:
            return "duplicate", seen["job_id"]
        job_id = None
        outcome = f"ignored: {ignored}" if request is None else "queued"
        if request is not None:
            row = c.execute("SELECT id FROM daemon_jobs WHERE key = ?", (request.key,)).fetchone()
            if row is not None:
                job_id, outcome = row["id"], "known"
            else:
                job_id = c.execute(
                    "INSERT INTO daemon_jobs (key, source, repo, sha, title, image, state,"
                    " created, updated, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        request.key,
                        request.source,
                        request.repo,
                        request.sha,
                        request.title,
                        json.dumps(request.image),
                        QUEUED,
                        now,
                        now,
                        request.kind,
                    ),
                ).lastrowid
        c.execute(
            "INSERT INTO daemon_deliveries (delivery, event, received, outcome, job_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (delivery, event, now, outcome, job_id),
        )
        return ("ignored" if request is None else outcome), job_id

    # leases -------------------------------------------------------------------

    def claim(self, owner: str, states: tuple[str, ...]) -> Job | None:
        """Take the oldest job in one of ``states`` whose lease is free or stale: test jobs
        before any warm job, whenever either came."""
        now = time.time()
        marks = ",".join("?" * len(states))
        with self.tx() as c:
            row = c.execute(
                f"SELECT id FROM daemon_jobs WHERE state IN ({marks}) AND not_before <= ?"
                " AND (lease_owner IS NULL OR lease_expires < ?)"
                f" ORDER BY kind = '{WARM}', id LIMIT 1",
                (*states, now, now),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE daemon_jobs SET lease_owner = ?, lease_expires = ?, updated = ?"
                " WHERE id = ?",
                (owner, now + LEASE_SECONDS, now, row["id"]),
            )
            return Job.from_row(
                c.execute("SELECT * FROM daemon_jobs WHERE id = ?", (row["id"],)).fetchone()
            )

    def test_waiting(self, states: tuple[str, ...]) -> bool:
        """A test job in one of ``states`` that could be claimed now (it pre-empts warming)."""
        now = time.time()
        marks = ",".join("?" * len(states))
        return (
            self.conn.execute(
                f"SELECT 1 FROM daemon_jobs WHERE kind = '{TEST}' AND state IN ({marks})"
                " AND not_before <= ? AND (lease_owner IS NULL OR lease_expires < ?) LIMIT 1",
                (*states, now, now),
            ).fetchone()
            is not None
        )

    def has_key_prefix(self, prefix: str) -> bool:
        """Whether any job's key starts with ``prefix`` (e.g. a build's test job)."""
        row = self.conn.execute(
            "SELECT 1 FROM daemon_jobs WHERE substr(key, 1, length(?)) = ? LIMIT 1",
            (prefix, prefix),
        ).fetchone()
        return row is not None

    def heartbeat(self, owner: str) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "UPDATE daemon_jobs SET lease_expires = ? WHERE lease_owner = ?",
                (now + LEASE_SECONDS, owner),
            )

    def release(self, job_id: int, owner: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE daemon_jobs SET lease_owner = NULL, lease_expires = NULL"
                " WHERE id = ? AND lease_owner = ?",
                (job_id, owner),
            )

    def recover(self, owner: str) -> list[tuple[int, dict[str, Any]]]:
        """After a restart: free every lease not ours; return unfinished steps to clean up.

        Only call while holding the worker lock: then no other process can be
        running these jobs, whatever their lease says.
        """
        with self.tx() as c:
            stale = c.execute(
                "SELECT s.job_id, s.detail FROM daemon_steps s JOIN daemon_jobs j"
                " ON j.id = s.job_id WHERE s.state = 'started' AND j.lease_owner IS NOT NULL"
                " AND j.lease_owner != ?",
                (owner,),
            ).fetchall()
            c.execute(
                "UPDATE daemon_steps SET state = 'interrupted', ended = ? WHERE state = 'started'",
                (time.time(),),
            )
            c.execute(
                "UPDATE daemon_jobs SET lease_owner = NULL, lease_expires = NULL"
                " WHERE lease_owner IS NOT NULL AND lease_owner != ?",
                (owner,),
            )
        return [(r["job_id"], json.loads(r["detail"] or "{}")) for r in stale]

    # job updates --------------------------------------------------------------

    def update(self, job_id: int, **fields: Any) -> None:
        for k in ("result", "image"):
            if k in fields and not isinstance(fields[k], str | None):
                fields[k] = json.dumps(fields[k])
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE daemon_jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: int) -> Job | None:
        row = self.conn.execute("SELECT * FROM daemon_jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self, states: tuple[str, ...] | None = None, limit: int = 50) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.conn.execute(
                f"SELECT * FROM daemon_jobs WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
                (*states, limit),
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT * FROM daemon_jobs ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT state, count(*) n FROM daemon_jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def prune_deliveries(self, older_than: float) -> int:
        """Forget deliveries received before ``older_than`` (epoch): GitHub redelivers within
        days, not months; the jobs they made stay."""
        with self.tx() as c:
            return c.execute(
                "DELETE FROM daemon_deliveries WHERE received < ?", (older_than,)
            ).rowcount

    def final_ids(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` name a job in a final state (or no job at all)."""
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f"SELECT id, state FROM daemon_jobs WHERE id IN ({marks})", ids
        ).fetchall()
        known = {r["id"]: r["state"] for r in rows}
        return {i for i in ids if known.get(i, FINAL[0]) in FINAL}

    def delivery_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM daemon_deliveries").fetchone()[0]

    # steps --------------------------------------------------------------------

    def step_start(self, job_id: int, name: str, attempt: int, detail: dict | None = None) -> int:
        with self.tx() as c:
            return c.execute(
                "INSERT INTO daemon_steps (job_id, name, attempt, state, started, detail)"
                " VALUES (?, ?, ?, 'started', ?, ?)",
                (job_id, name, attempt, time.time(), json.dumps(detail or {})),
            ).lastrowid

    def step_detail(self, step_id: int, detail: dict[str, Any]) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE daemon_steps SET detail = ? WHERE id = ?", (json.dumps(detail), step_id)
            )

    def step_end(self, step_id: int, state: str, detail: dict[str, Any] | None = None) -> None:
        with self.tx() as c:
            if detail is None:
                c.execute(
                    "UPDATE daemon_steps SET state = ?, ended = ? WHERE id = ?",
                    (state, time.time(), step_id),
                )
            else:
                c.execute(
                    "UPDATE daemon_steps SET state = ?, ended = ?, detail = ? WHERE id = ?",
                    (state, time.time(), json.dumps(detail), step_id),
                )

    def done_steps(self, job_id: int) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT name, detail FROM daemon_steps WHERE job_id = ? AND state = 'done' ORDER BY id",
            (job_id,),
        )
        return {r["name"]: json.loads(r["detail"] or "{}") for r in rows}

    def steps(self, job_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM daemon_steps WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()

    # approval nonces ------------------------------------------------------------

    def add_nonce(self, job_id: int, nonce: str) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO daemon_nonces (nonce, job_id, created) VALUES (?, ?, ?)",
                (nonce, job_id, time.time()),
            )

    def nonce(self, nonce: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM daemon_nonces WHERE nonce = ?", (nonce,)).fetchone()

    def expire(self, older_than: float) -> list[int]:
        """Jobs whose every approval link is older than ``older_than`` (epoch): expired."""
        with self.tx() as c:
            rows = c.execute(
                "SELECT j.id FROM daemon_jobs j WHERE j.state = ? AND NOT EXISTS ("
                " SELECT 1 FROM daemon_nonces n WHERE n.job_id = j.id AND n.created >= ?)",
                (AWAITING, older_than),
            ).fetchall()
            ids = [r["id"] for r in rows]
            for job_id in ids:
                c.execute(
                    "UPDATE daemon_jobs SET state = ?, updated = ? WHERE id = ? AND state = ?",
                    (EXPIRED, time.time(), job_id, AWAITING),
                )
        return ids

    def decide(self, job_id: int, nonce: str, sha256: str, decision: str) -> bool:
        """Use the nonce and record the decision in one transaction: a link works once."""
        now = time.time()
        new_state = APPROVED if decision == "approve" else REJECTED
        try:
            with self.tx() as c:
                used = c.execute(
                    "UPDATE daemon_nonces SET used_at = ?, used_for = ?"
                    " WHERE nonce = ? AND job_id = ? AND used_at IS NULL",
                    (now, decision, nonce, job_id),
                ).rowcount
                moved = c.execute(
                    "UPDATE daemon_jobs SET state = ?, decision = ?, decided_at = ?, updated = ?"
                    " WHERE id = ? AND state = ? AND image_sha256 = ?",
                    (new_state, decision, now, now, job_id, AWAITING, sha256),
                ).rowcount
                if used != 1 or moved != 1:
                    raise _Refused
        except _Refused:
            return False
        return True


class _Refused(Exception):
    """Roll the decision back: the nonce was used or the job moved on."""


class WorkerLock:
    """An exclusive flock on the state directory: one `rig serve` works a state store."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "daemon.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InfraError(
                "another `rig serve` is already working this state directory",
                where=str(self.path),
                hint="stop the other daemon, or give this one its own daemon.state directory",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
