"""Scheduling rules: parallel, longest first, retry on another device, quarantine."""

from __future__ import annotations

import threading
import time

from rig.orchestration.matrix import Scenario
from rig.orchestration.pipeline import Attempt
from rig.orchestration.scheduler import Job, Scheduler


def _job(sid: str, estimate: float = 1.0, model: str = "pi3", device: str | None = None) -> Job:
    return Job(
        Scenario(sid, "octopi-1.0.0", "stable", ("update",), model=model, device=device), estimate
    )


def _run(jobs, devices, outcome_for, quarantine_after=None):
    calls: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    failures: dict[str, int] = {}

    def attempt(job: Job, device: str) -> Attempt:
        with lock:
            calls.append((job.scenario.id, device, time.monotonic()))
        time.sleep(0.05)
        outcome = outcome_for(job, device)
        return Attempt(device, outcome, "" if outcome == "passed" else f"{outcome} on {device}")

    def on_result(device: str, job: Job, a: Attempt) -> bool:
        failures[device] = failures.get(device, 0) + 1 if a.outcome == "error" else 0
        return quarantine_after is not None and failures[device] >= quarantine_after

    done = Scheduler(jobs, devices, attempt, on_result, threading.Event()).run()
    return {j.scenario.id: j for j in done}, calls


def test_all_devices_work_in_parallel_longest_first() -> None:
    jobs = [_job("short", 1), _job("long", 10), _job("mid", 5)]
    done, calls = _run(jobs, {"a": "pi3", "b": "pi3", "c": "pi3"}, lambda j, d: "passed")
    assert {j.outcome for j in done.values()} == {"passed"}
    assert {d for _, d, _ in calls} == {"a", "b", "c"}
    starts = [t for _, _, t in calls]
    assert max(starts) - min(starts) < 0.04  # all three started together
    _one_device, calls1 = _run(
        [_job("short", 1), _job("long", 10), _job("mid", 5)], {"a": "pi3"}, lambda j, d: "passed"
    )
    assert [sid for sid, _, _ in calls1] == ["long", "mid", "short"]


def test_infrastructure_error_is_retried_on_another_device() -> None:
    done, calls = _run(
        [_job("s")], {"a": "pi3", "b": "pi3"}, lambda j, d: "error" if d == "a" else "passed"
    )
    job = done["s"]
    if calls[0][1] == "a":
        assert [a.device for a in job.attempts] == ["a", "b"]
        assert job.outcome == "passed"
    else:  # b took it first and passed: no retry needed
        assert [a.device for a in job.attempts] == ["b"]


def test_error_on_every_device_is_reported_once_retried() -> None:
    done, _calls = _run([_job("s")], {"a": "pi3", "b": "pi3"}, lambda j, d: "error")
    job = done["s"]
    assert job.outcome == "error"
    assert len(job.attempts) == 2 and {a.device for a in job.attempts} == {"a", "b"}


def test_product_failure_is_never_retried() -> None:
    done, calls = _run([_job("s")], {"a": "pi3", "b": "pi3"}, lambda j, d: "failed")
    assert done["s"].outcome == "failed"
    assert len(calls) == 1


def test_pinned_scenarios_and_models() -> None:
    jobs = [_job("pinned", device="b"), _job("pi4", model="pi4"), _job("any")]
    done, calls = _run(jobs, {"a": "pi3", "b": "pi3"}, lambda j, d: "passed")
    by_id = {sid: d for sid, d, _ in calls}
    assert by_id["pinned"] == "b"
    assert "pi4" not in by_id
    assert done["pi4"].outcome == "error" and "model pi4" in done["pi4"].attempts[0].message


def test_quarantined_device_takes_no_more_work() -> None:
    jobs = [_job(f"s{i}", 10 - i) for i in range(4)]
    done, calls = _run(
        jobs, {"bad": "pi3", "good": "pi3"}, lambda j, d: "error" if d == "bad" else "passed", 1
    )
    bad_calls = [sid for sid, d, _ in calls if d == "bad"]
    assert len(bad_calls) == 1  # quarantined after its first error
    assert all(j.outcome == "passed" for j in done.values())
