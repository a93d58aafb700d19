"""Scenarios across devices in parallel: one worker per leased device.

Longest scenarios start first; a scenario that hit an infrastructure error is
retried once on another device (the boot phase already power-cycled once);
product failures are final. A device with repeated infrastructure errors is
quarantined and takes no more work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rig.orchestration.matrix import Scenario
from rig.orchestration.pipeline import Attempt

MAX_ATTEMPTS = 2
log = logging.getLogger(__name__)


@dataclass
class Job:
    scenario: Scenario
    estimate: float
    attempts: list[Attempt] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    started: float = 0.0
    finished: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return self.attempts[-1].outcome if self.attempts else "not-run"


class Scheduler:
    """Hands jobs to device workers; thread-safe."""

    def __init__(
        self,
        jobs: list[Job],
        devices: dict[str, str],  # device name -> model
        run_attempt: Callable[[Job, str], Attempt],
        on_device_result: Callable[[str, Job, Attempt], bool],  # True: device quarantined
        cancel: threading.Event,
    ) -> None:
        self.pending = sorted(jobs, key=lambda j: -j.estimate)
        self.all_jobs = list(jobs)
        self.devices = dict(devices)
        self.run_attempt = run_attempt
        self.on_device_result = on_device_result
        self.cancel = cancel
        self.done: list[Job] = []
        self.in_flight = 0
        self.lock = threading.Condition()
        self.retired: set[str] = set()

    def _eligible(self, job: Job, device: str) -> bool:
        s = job.scenario
        if device in job.excluded or device in self.retired:
            return False
        if s.device is not None:
            return s.device == device
        return self.devices[device] == s.model

    def _can_ever_run(self, job: Job) -> bool:
        return any(self._eligible(job, d) for d in self.devices)

    def _next(self, device: str) -> Job | None:
        with self.lock:
            while True:
                if self.cancel.is_set():
                    return None
                for job in self.pending:
                    if self._eligible(job, device):
                        self.pending.remove(job)
                        self.in_flight += 1
                        return job
                # nothing for this device now; stop once nothing can come back for it
                if self.in_flight == 0 or device in self.retired:
                    return None
                self.lock.wait(0.5)

    def _finish(self, job: Job, device: str, attempt: Attempt) -> None:
        try:
            quarantined = self.on_device_result(device, job, attempt)
        except Exception:  # bookkeeping must never lose the job
            log.exception("recording the result of %s on %s failed", job.scenario.id, device)
            quarantined = False
        with self.lock:
            self.in_flight -= 1
            if quarantined:
                self.retired.add(device)
            retry = (
                attempt.outcome == "error"
                and len(job.attempts) < MAX_ATTEMPTS
                and not self.cancel.is_set()
            )
            if retry:
                job.excluded.add(device)
                if not self._can_ever_run(job):
                    retry = False
            if retry:
                self.pending.insert(0, job)
            else:
                job.finished = time.time()
                self.done.append(job)
            # jobs nobody can run any more (their devices retired) end as errors
            for stuck in [j for j in self.pending if not self._can_ever_run(j)]:
                self.pending.remove(stuck)
                if not stuck.attempts:
                    stuck.attempts.append(
                        Attempt("-", "error", "no healthy device of this model is available")
                    )
                stuck.finished = time.time()
                self.done.append(stuck)
            self.lock.notify_all()

    def worker(self, device: str) -> None:
        while True:
            job = self._next(device)
            if job is None:
                return
            if not job.started:
                job.started = time.time()
            try:
                attempt = self.run_attempt(job, device)
            except Exception as e:  # a bug in an attempt is that attempt's error, not a lost job
                log.exception("attempt of %s on %s crashed", job.scenario.id, device)
                attempt = Attempt(device, "error", f"{type(e).__name__}: {e}")
            job.attempts.append(attempt)
            self._finish(job, device, attempt)

    def run(self) -> list[Job]:
        with self.lock:
            for stuck in [j for j in self.pending if not self._can_ever_run(j)]:
                self.pending.remove(stuck)
                stuck.attempts.append(
                    Attempt(
                        "-",
                        "error",
                        f"no device can run it (model {stuck.scenario.model}"
                        + (f", device {stuck.scenario.device}" if stuck.scenario.device else "")
                        + ")",
                    )
                )
                self.done.append(stuck)
        threads = [
            threading.Thread(target=self.worker, args=(d,), name=f"worker-{d}", daemon=True)
            for d in self.devices
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        with self.lock:
            for job in self.pending:  # left over after a cancel
                job.attempts.append(Attempt("-", "interrupted", "not started: run interrupted"))
                self.done.append(job)
            self.pending.clear()
            for job in self.all_jobs:  # whatever happened, every job is reported
                if job not in self.done:
                    job.attempts.append(Attempt("-", "interrupted", "stopped before it finished"))
                    self.done.append(job)
        return self.done
