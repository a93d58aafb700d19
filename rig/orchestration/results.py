"""The results store: every run and scenario result, in the state store's SQLite.

`rig run` writes a run's verdict here when it ends; the runner's schedule
estimate, `rig devices` and the daemon's dashboard read it. This module owns the
``runs`` and ``scenario_results`` tables: nothing else writes SQL against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rig import state

if TYPE_CHECKING:
    from rig.orchestration.report import RunReport

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, matrix TEXT, release TEXT, started REAL, finished REAL,
    outcome TEXT, report TEXT
);
CREATE TABLE IF NOT EXISTS scenario_results (
    run_id TEXT, scenario TEXT, device TEXT, outcome TEXT, message TEXT,
    started REAL, finished REAL, duration REAL, PRIMARY KEY (run_id, scenario)
);
"""


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario's result in one run, as stored."""

    run_id: str
    scenario: str
    device: str
    outcome: str
    message: str
    finished: float
    duration: float
    report: str  # the run's report.html


def store(state_dir: Path, report: RunReport, report_html: Path, *, partial: bool = False) -> None:
    """Record a finished (or interrupted) run and each of its scenarios.

    A ``partial`` run (`rig up`, a warm-up's --prepare-only) stopped at the starting state:
    its scenarios are kept as ``prepared``, never as ``passed``, whose durations order the
    next run's scenarios (a half scenario would look like a short one)."""
    conn = state.connect(state_dir)
    try:
        state.ensure_schema(conn, "results", SCHEMA)
        with state.transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?)",
                (
                    report.run_id,
                    report.matrix,
                    report.release.get("version"),
                    report.started,
                    report.finished,
                    report.outcome,
                    str(report_html),
                ),
            )
            for s in report.scenarios:
                conn.execute(
                    "INSERT OR REPLACE INTO scenario_results VALUES (?,?,?,?,?,?,?,?)",
                    (
                        report.run_id,
                        s.id,
                        s.device,
                        "prepared" if partial and s.outcome == "passed" else s.outcome,
                        s.message,
                        report.started,
                        report.finished,
                        s.duration,
                    ),
                )
    finally:
        conn.close()


def last_passed_duration(state_dir: Path, scenario: str) -> float | None:
    """Seconds this scenario took when it last passed, None if it never has."""
    conn = state.connect(state_dir)
    try:
        state.ensure_schema(conn, "results", SCHEMA)
        row = conn.execute(
            "SELECT duration FROM scenario_results WHERE scenario=? AND outcome='passed' "
            "ORDER BY finished DESC LIMIT 1",
            (scenario,),
        ).fetchone()
    finally:
        conn.close()
    return float(row["duration"]) if row else None


def last_on_device(state_dir: Path, device: str) -> ScenarioResult | None:
    """The newest scenario result a device produced (with its run's report), if any."""
    conn = state.connect(state_dir)
    try:
        state.ensure_schema(conn, "results", SCHEMA)
        row = conn.execute(
            "SELECT s.run_id, s.scenario, s.device, s.outcome, s.message, s.finished, "
            "s.duration, r.report FROM scenario_results s LEFT JOIN runs r ON r.id = s.run_id "
            "WHERE s.device=? ORDER BY s.finished DESC, s.rowid DESC LIMIT 1",
            (device,),
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    return ScenarioResult(
        run_id=row["run_id"],
        scenario=row["scenario"],
        device=row["device"],
        outcome=row["outcome"],
        message=row["message"] or "",
        finished=float(row["finished"] or 0.0),
        duration=float(row["duration"] or 0.0),
        report=row["report"] or "",
    )
