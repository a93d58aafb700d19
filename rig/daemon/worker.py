"""The worker: takes jobs from the durable queue and walks them through their steps.

A job's steps are ``fetch`` (download + verify), ``pending`` (commit status),
``test`` (the acceptance command, i.e. `rig run MATRIX --candidate IMAGE`) and
``notify`` (statuses + mail). Each finished step is recorded; after a crash the
job resumes at the first step not recorded as done. The test step runs in its
own session; its pid and start time are recorded so that a restarted daemon
can stop an orphaned run before starting the step again (never two at once).

Two lanes, one thread each: the *test lane* (one job at a time: the devices are
the scarce thing, and `rig run` leases them itself) and the *publish lane*
(approved jobs; quick, device-free, so an approval is not stuck behind a
four-hour test run).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.config import SECRET_ENV_PREFIX, mask
from rig.daemon import mail
from rig.daemon.approval import Approvals
from rig.daemon.childenv import child_env
from rig.daemon.fetch import fetch
from rig.daemon.github import GitHub
from rig.daemon.publish import IDEMPOTENT, publish, publish_id, publish_target
from rig.daemon.queue import (
    APPROVED,
    AWAITING,
    ERROR,
    FAILED,
    PUBLISHED,
    QUEUED,
    RUNNING,
    UNCERTAIN,
    WARM,
    WARMED,
    Job,
    Queue,
)
from rig.daemon.settings import DaemonSettings, acceptance_argv
from rig.daemon.warm import (
    WARM_STEPS,
    load_acceptance,
    pinned_requirements,
    prepare_argv,
    prepared_scenarios,
)
from rig.errors import ConfigError, InfraError, RigError
from rig.procs import wait_unless

log = logging.getLogger(__name__)

TEST_STEPS = ("fetch", "pending", "test", "notify")
DELIVERY_DAYS = 30  # how long a delivery id is remembered (GitHub redelivers within days)


@dataclass
class Outcome:
    """What the acceptance command said."""

    exit_code: int
    passed: bool
    summary: str
    report_dir: Path


def _proc_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): tells a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is gone already


def _marked(run: str) -> list[int]:
    """Processes whose environment carries ``RIG_DAEMON_RUN=run``: an acceptance run (and its
    children) started by a daemon that died before it could record the pid."""
    needle = f"RIG_DAEMON_RUN={run}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def stop_orphan(detail: dict[str, Any], grace: float = 30.0) -> bool:
    """Stop an acceptance run left behind by a killed daemon; True if one was running.

    By its recorded pid and start time, or, when the daemon died between starting
    it and recording the pid, by the run marker recorded *before* it was started.
    """
    pid, start = detail.get("pid"), detail.get("start")
    targets: dict[int, str | None] = {}
    if pid and start and _proc_start(int(pid)) == start:
        targets[int(pid)] = start
    elif detail.get("run"):
        for found in _marked(str(detail["run"])):
            try:
                group = os.getpgid(found)
            except ProcessLookupError:
                continue
            targets.setdefault(group, _proc_start(group))
    if not targets:
        return False
    for group, began in targets.items():
        log.warning("stopping acceptance run %s left by a previous daemon", group)
        try:
            os.killpg(group, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _proc_start(group) == began:
                time.sleep(0.1)
            if _proc_start(group) == began:
                os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def summarize(results: dict[str, Any] | None, exit_code: int) -> str:
    if not results:
        return f"acceptance command exited {exit_code} (no results.json)"
    scenarios = results.get("scenarios") or []
    counts: dict[str, int] = {}
    for s in scenarios:
        counts[s.get("outcome", "?")] = counts.get(s.get("outcome", "?"), 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{len(scenarios)} scenario(s): {parts or 'none'}"


class Worker:
    """The daemon's background work; ``start()`` after the worker lock is held."""

    def __init__(
        self,
        settings: DaemonSettings,
        queue: Queue,
        approvals: Approvals,
        github_factory: Callable[[], GitHub] | None = None,
        retry_delay: float = 60.0,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.approvals = approvals
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.retry_delay = retry_delay
        self._github_factory = github_factory or (
            lambda: GitHub(settings.api_url, settings.github_token, egress=settings.egress())
        )
        self._threads: list[threading.Thread] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self.current: dict[str, Any] = {}  # lane -> job id (for the dashboard)
        self.beats: dict[str, float] = {}  # lane -> last time it looked for work
        self._pruned_at = -1e9  # monotonic time of the last pruning of old deliveries

    # lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        for job_id, detail in self.queue.recover(self.owner):
            if stop_orphan(detail):
                log.warning("job %s: interrupted acceptance run stopped", job_id)
        for name, target in (
            ("test", self._lane_test),
            ("publish", self._lane_publish),
            ("heartbeat", self._heartbeat),
        ):
            t = threading.Thread(target=target, name=f"rig-worker-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 75.0) -> None:
        """Stop the lanes; a running acceptance run gets SIGTERM and ``timeout`` seconds to
        power its devices off and write its partial report (systemd: TimeoutStopSec=90)."""
        self.stopping.set()
        self.wake.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        """Delete the download folder of every decided job (a flash host's disk is small;
        reports stay) and forget deliveries older than ``DELIVERY_DAYS``."""
        for job_id in self.queue.expire(time.time() - self.settings.approval_ttl):
            log.info("job %s: nobody decided before the approval link expired", job_id)
        images = self.settings.images_dir
        folders = {
            int(p.name[4:]): p
            for p in (images.iterdir() if images.is_dir() else ())
            if p.is_dir() and p.name.startswith("job-") and p.name[4:].isdigit()
        }
        for job_id in sorted(self.queue.final_ids(sorted(folders))):
            shutil.rmtree(folders[job_id], ignore_errors=True)
            log.info("job %s: removed its downloads %s", job_id, folders[job_id])
        if time.monotonic() - self._pruned_at < 3600:
            return
        self._pruned_at = time.monotonic()
        pruned = self.queue.prune_deliveries(time.time() - DELIVERY_DAYS * 86400)
        if pruned:
            log.info("forgot %s deliveries older than %s days", pruned, DELIVERY_DAYS)

    def _heartbeat(self) -> None:
        while not self.stopping.wait(10):
            try:
                self.queue.heartbeat(self.owner)
            except Exception:
                log.exception("heartbeat failed")

    def _wait(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    # lanes --------------------------------------------------------------------------

    def _lane_test(self) -> None:
        self._lane("test", (QUEUED, RUNNING), self._run_job, 2.0)

    def _run_job(self, job: Job) -> None:
        """The test lane runs test jobs and, when none waits, warm jobs (rig.daemon.warm)."""
        if job.kind == WARM:
            self._run_warm(job)
        else:
            self._run_test(job)

    def _lane_publish(self) -> None:
        self._lane("publish", (APPROVED,), self._run_publish, 1.0)

    def _lane(
        self, name: str, states: tuple[str, ...], run: Callable[[Job], None], idle: float
    ) -> None:
        """Claim, run, release, forever: no single job (nor a database hiccup) ends the lane.

        A job whose run raises anyway ends in ``error`` with the reason, so it is not
        claimed first again after a restart.
        """
        while not self.stopping.is_set():
            self.beats[name] = time.time()
            try:
                job = self.queue.claim(self.owner, states)
            except Exception:
                log.exception("%s lane: claiming a job failed", name)
                job = None
            if job is None:
                if name == "test":
                    try:
                        self._cleanup()
                    except Exception:
                        log.exception("cleaning up decided jobs failed")
                self._wait(idle)
                continue
            self.current[name] = job.id
            try:
                run(job)
            except Exception as e:
                log.exception("job %s: the %s lane's run raised", job.id, name)
                try:
                    self.queue.update(
                        job.id, state=ERROR, phase=None, error=f"internal error: {e!r}"[:500]
                    )
                except Exception:
                    log.exception("job %s: could not record its error", job.id)
            finally:
                self.current.pop(name, None)
                try:
                    self.queue.release(job.id, self.owner)
                except Exception:
                    log.exception("job %s: releasing its lease failed", job.id)

    def lanes(self) -> dict[str, dict[str, Any]]:
        """Liveness of each thread, for /healthz and the watchdog."""
        return {
            t.name.removeprefix("rig-worker-"): {
                "alive": t.is_alive(),
                "job": self.current.get(t.name.removeprefix("rig-worker-")),
            }
            for t in self._threads
        }

    # the test lane's steps ------------------------------------------------------------

    def _run_test(self, job: Job) -> None:
        attempt = job.attempts + 1
        if attempt > 2 * self.settings.max_attempts:  # killed mid-job again and again
            self.queue.update(
                job.id, state=ERROR, phase=None, error=f"interrupted {job.attempts} times; given up"
            )
            return
        self.queue.update(job.id, state=RUNNING, attempts=attempt, error=None)
        log.info("job %s: attempt %s: %s", job.id, attempt, job.title)
        done = self.queue.done_steps(job.id)
        gh = self._github_factory()
        redo = False  # once a step runs again, every later step does too: a result
        try:  # always belongs to the image fetched before it
            for step in TEST_STEPS:
                if self.stopping.is_set():
                    return  # lease released; the next start resumes here
                if not redo and step in done and self._still_valid(step, done[step]):
                    continue
                redo = True
                self.queue.update(job.id, phase=step)
                step_id = self.queue.step_start(job.id, step, attempt)
                try:
                    detail = getattr(self, f"_step_{step}")(self.queue.get(job.id), gh, step_id)
                except BaseException as e:
                    self.queue.step_end(step_id, "failed", {"error": str(e)})
                    raise
                self.queue.step_end(step_id, "done", detail)
                done[step] = detail
            if not redo:  # every step was done already, yet the job was queued again
                self.queue.update(job.id, state=ERROR, phase=None, error="nothing left to run")
        except RigError as e:
            if self.stopping.is_set():  # shutting down: resume at the next start
                self.queue.update(job.id, state=QUEUED, error=f"interrupted: {e}")
                return
            self._failed(job, attempt, e, gh)
        except Exception as e:  # a bug must not kill the lane
            log.exception("job %s failed unexpectedly", job.id)
            self._failed(job, attempt, InfraError(f"internal error: {e!r}"), gh)
        finally:
            gh.close()

    def _still_valid(self, step: str, detail: dict[str, Any]) -> bool:
        if step == "fetch":  # the image must still be there (a cleaned cache: fetch again)
            return Path(detail.get("path", "")).is_file()
        return True

    def _failed(self, job: Job, attempt: int, error: RigError, gh: GitHub) -> None:
        retry = isinstance(error, InfraError) and attempt < self.settings.max_attempts
        log.warning(
            "job %s attempt %s: %s%s", job.id, attempt, error, " (will retry)" if retry else ""
        )
        if retry:
            self.queue.update(
                job.id,
                state=QUEUED,
                error=str(error),
                not_before=time.time() + self.retry_delay * attempt,
            )
            return
        self.queue.update(job.id, state=ERROR, phase=None, error=str(error))
        job = self.queue.get(job.id) or job
        self._status(gh, job, "error", f"could not test: {error.message[:100]}")
        self._mail_safely(
            f"[rig] could not test {job.title}",
            f"The rig could not test {job.title} (attempt {attempt}):\n\n{error}\n\n"
            f"Job: {self.settings.public_url}/jobs/{job.id}\n",
            job,
        )

    def _step_fetch(self, job: Job, gh: GitHub, step_id: int) -> dict[str, Any]:
        dest = self.settings.images_dir / f"job-{job.id}"
        watch = self.settings.repo(job.repo) if job.repo else None
        hosts = watch.image_hosts if watch else self.settings.all_image_hosts()
        got = fetch(job.image, gh, dest, max_bytes=self.settings.max_image, image_hosts=hosts)
        image = dict(job.image)
        if got.get("asset"):  # publishing later requires this very asset, unchanged
            image["tested_asset"] = got["asset"]
        if (
            job.image.get("kind") == "url"
            and job.repo
            and (job.image.get("release_id") or job.image.get("tag"))
        ):  # the release a dispatch names is fixed now, before the test, by its id
            image["publish_release"] = self._named_release(job, gh)
        self.queue.update(job.id, image_path=got["path"], image_sha256=got["sha256"], image=image)
        if not job.sha and job.repo and job.image.get("tag") and self.settings.github_token:
            try:  # a release names a tag, not a commit: statuses need the commit
                sha = gh.commit_sha(job.repo, str(job.image["tag"]))
                self.queue.update(job.id, sha=sha)
                got["commit"] = sha
            except InfraError as e:
                log.warning("job %s: commit of tag %s unknown: %s", job.id, job.image["tag"], e)
        log.info("job %s: image %s verified (%s)", job.id, got["path"], ", ".join(got["verified"]))
        return got

    def _named_release(self, job: Job, gh: GitHub) -> dict[str, Any]:
        rid, tag = job.image.get("release_id"), job.image.get("tag")
        release = gh.release(str(job.repo), rid) if rid else gh.release_by_tag(str(job.repo), tag)
        if tag and release.get("tag_name") != tag:
            raise ConfigError(
                f"release {rid} is tagged {release.get('tag_name')!r}, not {tag!r}",
                where=f"job {job.id}: client_payload release_id/tag",
            )
        if not isinstance(release.get("id"), int):
            raise InfraError("GitHub sent a release without an id", where=f"job {job.id} fetch")
        return {"id": release["id"], "tag": release.get("tag_name")}

    def _step_pending(self, job: Job, gh: GitHub, step_id: int) -> dict[str, Any]:
        posted = self._status(gh, job, "pending", "testing the image on the rig")
        return {"posted": posted}

    def _step_test(self, job: Job, gh: GitHub, step_id: int) -> dict[str, Any]:
        attempt = self.queue.get(job.id).attempts  # type: ignore[union-attr]
        report_dir = self.settings.reports_dir / f"job-{job.id}" / f"attempt-{attempt}"
        report_dir.mkdir(parents=True, exist_ok=True)
        argv = acceptance_argv(self.settings, Path(job.image_path or ""), report_dir, job.id)
        logfile = report_dir / "acceptance.log"
        self.queue.update(job.id, report_dir=str(report_dir))
        run = uuid.uuid4().hex  # recorded before the start: a restart finds the run by it
        self.queue.step_detail(step_id, {"run": run})
        with open(logfile, "wb") as out:
            out.write(f"$ {mask(' '.join(argv))}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stoppable as a whole
                    env=self._run_env(job, run),
                )
            except OSError as e:
                raise ConfigError(
                    f"cannot start the acceptance command: {e}",
                    where="rig.yaml: daemon.acceptance_command",
                ) from e
            self._proc = proc
            self.queue.step_detail(
                step_id,
                {
                    "run": run,
                    "pid": proc.pid,
                    "start": _proc_start(proc.pid),
                    "argv": [mask(a) for a in argv],
                },
            )
            try:
                code = proc.wait(timeout=self.settings.acceptance_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise InfraError(
                    f"acceptance run did not finish in {self.settings.acceptance_timeout:.0f}s",
                    where=f"job {job.id} test",
                ) from None
            finally:
                self._proc = None
        if self.stopping.is_set() and code < 0:
            raise InfraError("daemon stopping: acceptance run interrupted", where="test")
        results = None
        results_path = report_dir / "results.json"
        if results_path.is_file():
            try:
                results = json.loads(results_path.read_text())
            except ValueError:
                results = None
        summary = summarize(results, code)
        if code == 3 or code < 0:
            raise InfraError(f"acceptance run: infrastructure error (exit {code}): {summary}")
        if code == 2:
            raise ConfigError(
                f"acceptance run: configuration or matrix error (exit 2); see {logfile}",
                where="rig.yaml: daemon.matrix",
            )
        if code not in (0, 1):
            raise InfraError(f"acceptance run exited {code}; see {logfile}")
        passed = code == 0 and (results is None or bool(results.get("passed", True)))
        result = {"exit_code": code, "passed": passed, "summary": summary}
        if results:
            result["scenarios"] = [
                {"id": s.get("id"), "outcome": s.get("outcome")}
                for s in results.get("scenarios", [])
            ]
        self.queue.update(job.id, result=result)
        return {**result, "argv": [mask(a) for a in argv]}

    def _run_env(self, job: Job, run: str) -> dict[str, str]:
        """A `rig run` child's environment: its markers and its own secrets, nothing more."""
        return child_env(
            {
                "RIG_DAEMON_JOB": str(job.id),
                "RIG_DAEMON_RUN": run,
                **{
                    SECRET_ENV_PREFIX + s.name.upper(): s.reveal()
                    for s in self.settings.run_secrets
                },
            },
            passthrough=self.settings.child_env,
        )

    def _step_notify(self, job: Job, gh: GitHub, step_id: int) -> dict[str, Any]:
        result = job.result or {}
        report = self.report_url(job)
        if result.get("passed"):
            self._status(gh, job, "success", f"tested green: {result.get('summary')}")
            target = publish_target(job, self.settings.publish)
            token = self.approvals.issue(job.id, job.image_sha256 or "", target)
            link = f"{self.settings.public_url}/approve/{token}"
            text = (
                f"The image {Path(job.image_path or '').name} tested green on the rig.\n\n"
                f"  build:   {job.title}\n"
                f"  sha256:  {job.image_sha256}\n"
                f"  results: {result.get('summary')}\n"
                f"  report:  {report}\n"
                f"  publish: {target}\n\n"
                f"Release it? Review and approve or reject here (the link works once,\n"
                f"for this image only, for {self.settings.approval_ttl / 3600:.0f} hours):\n\n"
                f"  {link}\n"
            )
            self._mail(f"[rig] tested green: {job.title} - release it?", text, job)
            self.queue.update(job.id, state=AWAITING, phase=None)
        else:
            self._status(gh, job, "failure", f"acceptance failed: {result.get('summary')}")
            text = (
                f"The image {Path(job.image_path or '').name} FAILED its acceptance tests.\n"
                f"It will not be published.\n\n"
                f"  build:   {job.title}\n"
                f"  sha256:  {job.image_sha256}\n"
                f"  results: {result.get('summary')}\n"
                f"  report:  {report}\n"
            )
            for s in result.get("scenarios", []):
                if s.get("outcome") != "passed":
                    text += f"  - {s.get('id')}: {s.get('outcome')}\n"
            self._mail(f"[rig] FAILED: {job.title}", text, job, attach_report=True)
            self.queue.update(job.id, state=FAILED, phase=None)
        return {"mailed": self.settings.mail is not None}

    def report_url(self, job: Job) -> str:
        return f"{self.settings.public_url}/jobs/{job.id}/report/report.html"

    # warm jobs -------------------------------------------------------------------------

    def _test_waiting(self) -> bool:
        """Stop warming: the daemon stops, or a test job can be claimed (it goes first)."""
        return self.stopping.is_set() or self.queue.test_waiting((QUEUED, RUNNING))

    def _run_warm(self, job: Job) -> None:
        """Warm what the build's acceptance run will need (rig.daemon.warm). Best effort:
        a failure ends the warm job in ``error`` with the reason, mails nobody, and is not
        retried (the test job does the same work itself, only later)."""
        tests = job.image.get("tests")
        if tests and self.queue.has_key_prefix(str(tests)):
            self.queue.update(
                job.id,
                state=WARMED,
                phase=None,
                result={"summary": "not needed any more: the build's test job came first"},
            )
            return
        attempt = job.attempts + 1
        self.queue.update(job.id, state=RUNNING, attempts=attempt, error=None)
        log.info("job %s: warming ahead: %s", job.id, job.title)
        done = self.queue.done_steps(job.id)
        summaries = []
        try:
            matrix = load_acceptance(self.settings)
            for step in WARM_STEPS:
                if step in done:
                    summaries.append(str(done[step].get("summary", "")))
                    continue
                self.queue.update(job.id, phase=step)
                step_id = self.queue.step_start(job.id, step, attempt)
                try:
                    detail = getattr(self, f"_warm_{step}")(job, matrix, step_id)
                except BaseException as e:
                    self.queue.step_end(step_id, "failed", {"error": str(e)})
                    raise
                if detail.get("stopped"):
                    self.queue.step_end(step_id, "interrupted", detail)
                    why = "the daemon stops" if self.stopping.is_set() else "a test job goes first"
                    log.info("job %s: warming stopped in %s: %s", job.id, step, why)
                    self.queue.update(job.id, state=QUEUED, error=f"pre-empted in {step}: {why}")
                    return
                self.queue.step_end(step_id, "done", detail)
                summaries.append(str(detail.get("summary", "")))
        except RigError as e:
            log.warning("job %s: warming failed: %s", job.id, e)
            self.queue.update(job.id, state=ERROR, phase=None, error=f"warming: {e}"[:500])
            return
        self.queue.update(
            job.id, state=WARMED, phase=None, result={"summary": "; ".join(summaries)}
        )

    def _warm_packages(self, job: Job, matrix: Any, step_id: int) -> dict[str, Any]:
        """Step ``packages``: each pinned start version's requirements into the cache."""
        from rig.packages.settings import package_settings
        from rig.packages.warm import warm_cache

        groups = pinned_requirements(matrix)
        if not groups:
            return {"summary": "packages: the matrix pins no start version"}
        config = self.settings.rig
        cache = package_settings(config) if config is not None else None
        if cache is None:
            return {"summary": "packages: the package cache is off (run.package_index)"}
        report_dir = self.settings.reports_dir / f"job-{job.id}"
        report_dir.mkdir(parents=True, exist_ok=True)
        fetched: list[str] = []
        for requirements in groups:
            warmed = warm_cache(
                cache, requirements, report_dir / "warm.log", stop=self._test_waiting
            )
            fetched += warmed.files
            if warmed.stopped:
                return {"stopped": True, "files": fetched, "summary": warmed.summary()}
        self.queue.update(job.id, report_dir=str(report_dir))
        return {
            "requirements": groups,
            "files": fetched,
            "summary": f"packages: {len(fetched)} file(s) for {len(groups)} start version(s)",
        }

    def _warm_prepare(self, job: Job, matrix: Any, step_id: int) -> dict[str, Any]:
        """Step ``prepare``: the hook for starting-state snapshots (see rig.daemon.warm)."""
        scenarios = prepared_scenarios(matrix)
        if not scenarios:
            return {"summary": "prepare: every scenario starts from the image being built"}
        return self.prepare_starting_states(job, scenarios, step_id)

    def prepare_starting_states(
        self, job: Job, scenarios: list[str], step_id: int
    ) -> dict[str, Any]:
        """The hook for starting-state snapshots: run ``scenarios`` up to prepare
        (`rig run --prepare-only`), stopped at once when a test job comes."""
        report_dir = self.settings.reports_dir / f"job-{job.id}" / f"prepare-{job.attempts + 1}"
        report_dir.mkdir(parents=True, exist_ok=True)
        argv = prepare_argv(self.settings, scenarios, report_dir)
        run = uuid.uuid4().hex
        self.queue.step_detail(step_id, {"run": run})
        with open(report_dir / "prepare.log", "wb") as out:
            out.write(f"$ {mask(' '.join(argv))}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self._run_env(job, run),
            )
            self._proc = proc
            self.queue.step_detail(
                step_id, {"run": run, "pid": proc.pid, "start": _proc_start(proc.pid)}
            )
            deadline = time.monotonic() + self.settings.acceptance_timeout
            try:  # a stopped run powers its devices off (SIGTERM), within a minute
                stopped = wait_unless(
                    proc, lambda: self._test_waiting() or time.monotonic() > deadline, grace=60
                )
            finally:
                self._proc = None
        stopped = stopped or self.stopping.is_set()
        summary = f"prepare: {len(scenarios)} scenario(s) exit {proc.returncode}"
        if stopped and time.monotonic() > deadline:
            raise InfraError(
                f"the prepare run did not finish in {self.settings.acceptance_timeout:.0f}s",
                where=str(report_dir / "prepare.log"),
            )
        return {"stopped": stopped, "scenarios": scenarios, "exit_code": proc.returncode,
                "report_dir": str(report_dir), "summary": summary}  # fmt: skip

    # the publish lane --------------------------------------------------------------

    def _run_publish(self, job: Job) -> None:
        """Publish once. The attempt is on disk before the action runs; an attempt that
        never recorded its end (a crash, a kill -9) is re-run only for the idempotent
        actions (unmark, undraft). A dispatch or command is then *uncertain*: a person
        decides, told so by mail; receivers can deduplicate on RIG_PUBLISH_ID."""
        action = self.settings.publish.get("action", "unmark")
        idempotent = action in IDEMPOTENT
        earlier = [s for s in self.queue.steps(job.id) if s["name"] == "publish"]
        unfinished = [s for s in earlier if s["state"] in ("started", "interrupted")]
        if unfinished and not idempotent:
            reason = (
                f"publish: the {action} action was started at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(unfinished[-1]['started']))}"
                " and the daemon stopped before it finished: it may or may not have run, "
                "so it is not run again automatically"
            )
            self.queue.update(job.id, state=UNCERTAIN, phase=None, error=reason)
            log.error("job %s: %s", job.id, reason)
            self._mail_safely(
                f"[rig] publishing uncertain: {job.title}",
                f"{reason}.\n\nCheck whether {publish_target(job, self.settings.publish)} "
                f"happened (publish id {publish_id(job)}); the job page:\n"
                f"{self.settings.public_url}/jobs/{job.id}\n",
                job,
            )
            return
        gh = self._github_factory()
        step_id = self.queue.step_start(
            job.id, "publish", job.attempts, {"action": action, "publish_id": publish_id(job)}
        )
        self.queue.update(job.id, phase="publish")
        try:
            what = publish(job, self.settings.publish, gh, self.settings.public_url)
        except Exception as e:
            error = e if isinstance(e, RigError) else InfraError(f"internal error: {e!r}")
            self.queue.step_end(step_id, "failed", {"error": str(error)})
            failures = 1 + sum(1 for s in earlier if s["state"] == "failed")
            retry = isinstance(error, InfraError) and idempotent
            if retry and failures < self.settings.max_attempts:
                self.queue.update(job.id, not_before=time.time() + self.retry_delay * failures)
            else:
                self.queue.update(job.id, state=ERROR, phase=None, error=f"publish: {error}")
                self._mail_safely(
                    f"[rig] publishing failed: {job.title}",
                    f"The approved image could not be published:\n\n{error}\n",
                    job,
                )
            return
        finally:
            gh.close()
        self.queue.step_end(step_id, "done", {"published": what})
        self.queue.update(job.id, state=PUBLISHED, phase=None)
        log.info("job %s published: %s", job.id, what)
        self._mail_safely(f"[rig] published: {job.title}", f"{what}\n", job)

    # helpers -----------------------------------------------------------------------

    def _status(self, gh: GitHub, job: Job, state: str, description: str) -> bool:
        if not (job.sha and job.repo and self.settings.github_token):
            return False
        try:
            gh.status(
                job.repo,
                job.sha,
                state,
                self.settings.status_context,
                description,
                f"{self.settings.public_url}/jobs/{job.id}",
            )
        except Exception as e:  # a status is informative: never worth a job or a lane
            log.warning("job %s: commit status %s not posted: %s", job.id, state, e)
            return False
        return True

    def _mail(self, subject: str, text: str, job: Job, attach_report: bool = False) -> None:
        if self.settings.mail is None:
            log.warning("job %s: no mail configured; %s", job.id, subject)
            return
        attachments: tuple[Path, ...] = ()
        if attach_report and job.report_dir:
            attachments = (Path(job.report_dir) / "report.html",)
        mail.send(self.settings.mail, subject, text, attachments=attachments)

    def _mail_safely(self, subject: str, text: str, job: Job) -> None:
        try:
            self._mail(subject, text, job)
        except Exception as e:  # a mail that cannot go out never takes the lane with it
            log.error("job %s: mail %r not sent: %s", job.id, subject[:80], e)
