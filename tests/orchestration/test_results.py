"""The results store (runs, scenario_results) and the report assembled from the scheduler's jobs."""

from __future__ import annotations

import time
from pathlib import Path

from rig.errors import EXIT_INFRA, EXIT_PRODUCT
from rig.orchestration import results
from rig.orchestration.matrix import load_matrix
from rig.orchestration.pipeline import Attempt, PhaseRecord
from rig.orchestration.report import RunReport, ScenarioReport, assemble_report
from rig.orchestration.scheduler import Job

DEMO = Path(__file__).resolve().parents[2] / "matrix" / "demo.json"


def _run(run_id: str, finished: float, *scenarios: tuple[str, str, str, float]) -> RunReport:
    return RunReport(
        run_id,
        "m.json",
        {"version": "1.11.0"},
        "",
        finished - 100,
        finished,
        "passed",
        0,
        [],
        [
            ScenarioReport(sid, "", "img", "stable", None, "updated", [], out, "", dev, took, "")
            for sid, out, dev, took in scenarios
        ],
    )


def test_the_estimate_reads_the_newest_passed_duration(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert results.last_passed_duration(state, "s1") is None  # no table yet: no history
    results.store(state, _run("r1", 1000.0, ("s1", "passed", "pi3-a", 300.0)), tmp_path / "1")
    results.store(state, _run("r2", 2000.0, ("s1", "passed", "pi3-b", 200.0)), tmp_path / "2")
    results.store(state, _run("r3", 3000.0, ("s1", "failed", "pi3-a", 50.0)), tmp_path / "3")
    assert results.last_passed_duration(state, "s1") == 200.0
    assert results.last_passed_duration(state, "s2") is None
    newest_a = results.last_on_device(state, "pi3-a")
    assert newest_a is not None
    assert (newest_a.run_id, newest_a.outcome, newest_a.report) == (
        "r3",
        "failed",
        str(tmp_path / "3"),
    )
    assert results.last_on_device(state, "pi3-c") is None


def test_a_run_stopped_at_the_starting_state_is_no_passed_duration(tmp_path: Path) -> None:
    """`rig up` and a warm-up's --prepare-only end after prepare: the estimate must not
    take their half scenario for the whole one."""
    state = tmp_path / "state"
    results.store(state, _run("r1", 1000.0, ("s1", "passed", "pi3-a", 300.0)), tmp_path / "1")
    partial = _run("r2", 2000.0, ("s1", "passed", "pi3-b", 40.0))
    results.store(state, partial, tmp_path / "2", partial=True)
    assert results.last_passed_duration(state, "s1") == 300.0
    newest_b = results.last_on_device(state, "pi3-b")
    assert newest_b is not None and newest_b.outcome == "prepared"


def test_storing_a_run_again_replaces_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    results.store(state, _run("r1", 1000.0, ("s1", "interrupted", "pi3-a", 10.0)), tmp_path)
    results.store(state, _run("r1", 1000.0, ("s1", "passed", "pi3-a", 90.0)), tmp_path)
    assert results.last_passed_duration(state, "s1") == 90.0


def test_assembled_report_follows_the_matrix_order_and_says_why_scenarios_did_not_run(
    tmp_path: Path,
) -> None:
    matrix = load_matrix(DEMO)
    first, second, third = matrix.scenarios
    now = time.time()
    failed = Attempt("pi3-a", "failed", "1.11.8 not offered")
    failed.phases.append(PhaseRecord("update", "pi3-a", now - 5, now - 1, "failed", "no"))
    jobs = [
        Job(third, 60.0),  # never started
        Job(first, 60.0, attempts=[failed], started=now - 10, finished=now - 1),
    ]
    shots = tmp_path / "scenarios" / first.id
    shots.mkdir(parents=True)
    (shots / "update.png").write_bytes(b"png")
    report = assemble_report(
        run_id="r",
        matrix=matrix,
        jobs=jobs,
        directory=tmp_path,
        started=now - 20,
        interrupted=False,
        command="rig run demo.json",
        devices=["pi3-a"],
        start_version=lambda s: f"start of {s.id}",
    )
    assert [s.id for s in report.scenarios] == [first.id, third.id]
    done, never = report.scenarios
    assert (done.outcome, done.message, done.device) == ("failed", "1.11.8 not offered", "pi3-a")
    assert done.start_version == f"start of {first.id}"
    assert done.files == [f"scenarios/{first.id}/update.png"]
    assert done.attempts[0]["phases"][0]["phase"] == "update"
    assert abs(done.duration - 9.0) < 0.01
    assert (never.outcome, never.message, never.device, never.duration) == (
        "not-run",
        "not started",
        "-",
        0.0,
    )
    assert (report.outcome, report.exit_code) == ("error", EXIT_INFRA)  # a scenario never ran
    assert second.id not in [s.id for s in report.scenarios]

    lost = assemble_report(
        run_id="r",
        matrix=matrix,
        jobs=[Job(first, 60.0, attempts=[failed]), Job(second, 60.0)],
        directory=tmp_path,
        started=now,
        interrupted=True,
        command="",
        devices=[],
        start_version=lambda s: None,
        lease_lost="lease on pi3-b lost (taken over)",
    )
    assert [s.message for s in lost.scenarios] == [
        "1.11.8 not offered",
        "cancelled: lease on pi3-b lost (taken over)",
    ]
    assert (lost.outcome, lost.exit_code) == ("interrupted", EXIT_INFRA)

    only_failed = assemble_report(
        run_id="r",
        matrix=matrix,
        jobs=[Job(first, 60.0, attempts=[failed])],
        directory=tmp_path,
        started=now,
        interrupted=False,
        command="",
        devices=[],
        start_version=lambda s: None,
    )
    assert (only_failed.outcome, only_failed.exit_code) == ("failed", EXIT_PRODUCT)
