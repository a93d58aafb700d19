"""The rig's state store: one SQLite file (WAL) shared by the CLI and the daemon.

Each module that keeps state declares its own tables with ``ensure_schema``;
WAL plus a busy timeout lets `rig run`, `rig serve` and `rig devices` use it
at the same time from different processes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ensured: set[tuple[str, str]] = set()
_lock = threading.Lock()


def connect(state_dir: Path) -> sqlite3.Connection:
    """A connection to ``state_dir/rig.db``; callers close it (or use ``transaction``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        state_dir / "rig.db", timeout=30, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def ensure_schema(conn: sqlite3.Connection, name: str, ddl: str) -> None:
    """Run ``ddl`` (idempotent CREATE ... IF NOT EXISTS statements) once per process."""
    db = conn.execute("PRAGMA database_list").fetchone()["file"]
    key = (db, name)
    with _lock:
        if key in _ensured:
            return
        conn.executescript(ddl)
        _ensured.add(key)


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error: one writer at a time, no lost updates."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
