"""`rig run`: a matrix from JSON to a verdict on all leased devices in parallel.

The runner wires the pieces: it resolves the images once, leases devices,
starts the release feed the devices ask for updates, lets the scheduler run
one pipeline per scenario and device, records results and device health in the
state store, and writes the report (also a partial one when interrupted).
"""

from __future__ import annotations

import secrets
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rig.card.catalog import CANDIDATE, load_catalog
from rig.config import RigConfig
from rig.device.console import ConsoleCapture
from rig.errors import ConfigError, InfraError
from rig.events import Event, EventBus, StepLog
from rig.orchestration import results as results_store
from rig.orchestration.eventlog import EventLog
from rig.orchestration.leases import Heartbeat, Leases
from rig.orchestration.matrix import Matrix, Scenario
from rig.orchestration.pipeline import (
    Attempt,
    DeviceKit,
    Phase,
    ScenarioPipeline,
)
from rig.orchestration.report import RunReport, append_step_summary, assemble_report, write_report
from rig.orchestration.representative import not_representative
from rig.orchestration.scheduler import Job, Scheduler
from rig.orchestration.writeslots import WriteSlots, parse_maximum
from rig.product.profile import DeviceAddress, Profile, ScenarioContext

KitFactory = Callable[[str, Scenario, Path, EventBus], DeviceKit]


class RigParts(Protocol):
    """What a run needs of the composition root (rig.root.Rig, built by the CLI/daemon)."""

    virtual: bool

    def kit(self, device: str, image: Path) -> DeviceKit: ...

    def image(self, name: str, log: StepLog | None = None) -> Path: ...

    def power(self, device: str) -> Any: ...

    def start(self) -> None: ...


@dataclass
class RunOptions:
    scenario_ids: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    candidate: Path | None = None
    report_dir: Path | None = None
    interactive: bool = False
    wait: float = 0.0  # seconds to wait for busy devices
    command: str = ""
    step_summary: Path | None = None  # append a Markdown summary here (CI: $GITHUB_STEP_SUMMARY)
    hold: bool = False  # `rig up`: stop at the starting state and keep the device up
    hold_seconds: float = 8 * 3600  # ... at most this long (nothing waits forever)
    prepare_only: bool = False  # stop every scenario at its starting state (the daemon's warm-up)
    snapshots: bool = True  # --no-snapshots: the pristine image, nothing kept


@dataclass
class RunOutcome:
    report: RunReport
    directory: Path

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


class Runner:
    def __init__(
        self,
        config: RigConfig,
        matrix: Matrix,
        options: RunOptions,
        *,
        rig: RigParts,
        bus: EventBus | None = None,
        kit_factory: KitFactory | None = None,
        profile_factory: Callable[[str], Profile] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.matrix = matrix
        self.options = options
        self.bus = bus or EventBus()
        self.rig = rig
        self.kit_factory = kit_factory or (lambda device, _s, image, _bus: rig.kit(device, image))
        self.profile_factory = profile_factory or _default_profile
        self.cancel = cancel or threading.Event()
        self.lease_lost = ""  # set when the heartbeat lost a lease: the run was cancelled
        self.lost_devices: set[str] = set()
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        run_cfg = config.sections.get("run", {})
        # only what rig.yaml sets: the pipeline takes the product's limit for the rest
        configured = run_cfg.get("timeouts", {})
        self.timeouts = {
            phase: float(configured[phase.value]) for phase in Phase if phase.value in configured
        }
        self.write_slots = WriteSlots(
            parse_maximum(
                run_cfg.get("max_parallel_writes", 2),
                len(options.devices or config.devices),
                f"{config.where}: run.max_parallel_writes",
            ),
            lambda decision: self.bus.emit(Event("log", decision)),
        )
        # a real Pi says nothing when its halt is done; a virtual one is done when sshd is gone
        self.halt_grace = 0.0 if config.virtual else float(run_cfg.get("snapshot_halt_seconds", 10))
        self.directory = options.report_dir or (
            config.paths.reports / f"{self.run_id}-{matrix.path.stem}"
        )
        self.images: dict[str, Path] = {}
        self.held: list[str] = []
        self.feed_url: str | None = None
        self.package_index: Any = None  # rig.packages.serve.DevicePackages while the run serves it
        self.summary_error: str | None = None
        self.credentials = credentials_for(config)
        self.bus.redact(self.credentials.admin_password)
        self.bus.redact(config.user.password.reveal())
        self.purpose = "rig up" if options.hold else "rig run"  # the lease says who holds it
        self.released = threading.Event()  # `rig up`: the person is done with the device
        self.on_held: Callable[[ScenarioContext], None] | None = None  # `rig up` shows access

    # --- selection ---------------------------------------------------------------

    def scenarios(self) -> list[Scenario]:
        if not self.options.scenario_ids:
            return list(self.matrix.scenarios)
        return [self.matrix.scenario(sid) for sid in self.options.scenario_ids]

    def candidate_devices(self) -> list[str]:
        names = list(self.options.devices) or list(self.config.devices)
        for n in names:
            self.config.device(n)  # ConfigError for an unknown name
        return names

    # --- leases ------------------------------------------------------------------

    def lease_devices(self, leases: Leases) -> list[str]:
        wanted = self.candidate_devices()
        deadline = time.monotonic() + self.options.wait
        skipped: dict[str, str] = {}
        while True:
            for name in wanted:
                if name in self.held:
                    continue
                reason = leases.quarantined(name)
                if reason:
                    skipped[name] = f"quarantined ({reason}); `rig devices release {name}`"
                    continue
                if leases.acquire(name, purpose=f"{self.purpose} {self.matrix.path}"):
                    self.held.append(name)
                    skipped.pop(name, None)
                else:
                    lease = leases.holder_of(name)
                    skipped[name] = f"busy: {lease.purpose} (pid {lease.pid})" if lease else "busy"
            if self.held or time.monotonic() >= deadline or self.cancel.is_set():
                break
            self.cancel.wait(1.0)
        for name, why in skipped.items():
            self.bus.emit(Event("log", f"{name} not used: {why}", device=name))
        if not self.held:
            detail = "; ".join(f"{n}: {w}" for n, w in skipped.items())
            raise InfraError(
                f"no device available ({detail})",
                hint="wait for the other run, or pass --wait SECONDS",
            )
        return self.held

    def _lease_lost(self, device: str, why: str) -> None:
        """A run that lost a device's lease stops: someone else may be driving it now."""
        self.bus.emit(Event("log", f"lease on {device} lost ({why}): cancelling", device=device))
        self.lease_lost = f"lease on {device} lost ({why})"
        self.lost_devices.add(device)  # not ours any more: not even powered off by us
        self.cancel.set()

    # --- images ------------------------------------------------------------------

    def resolve_images(self, scenarios: list[Scenario]) -> None:
        log = StepLog(self.bus)
        for name in sorted({s.image for s in scenarios}):
            if name == CANDIDATE:
                if self.options.candidate is None:
                    raise ConfigError(
                        "scenarios use @candidate but no --candidate IMAGE was given",
                        where=str(self.matrix.path),
                    )
                self.images[name] = self.options.candidate
                continue
            with log.step(f"image {name}"):
                self.images[name] = self.rig.image(name, log)

    # --- one attempt -------------------------------------------------------------

    def _context(self, scenario: Scenario, device: str, results: Path, log: StepLog):
        dev = self.config.device(device)
        return ScenarioContext(
            device=DeviceAddress(
                name=device,
                host=dev.host or f"{device}.local",
                ssh_port=dev.ssh_port,
                http_port=dev.http_port,
                user=self.config.user.name,
                password=self.config.user.password.reveal(),
                host_keys=self.config.ssh.get("host_keys", "accept-new"),
            ),
            scenario_id=scenario.id,
            channel=scenario.channel,
            target_version=self.matrix.release.version,
            release_channel=self.matrix.release.channel,
            expect=scenario.expect,
            checks=scenario.checks,
            results=results,
            log=log,
            product=self.matrix.release.product,
            start_version=scenario.start,
            update_mode=scenario.update_mode,
            options=dict(scenario.options),
            release_options=dict(self.matrix.release.options),
            user_checks=scenario.user_checks,
            image=None if scenario.image == CANDIDATE else self._image(scenario),
            feed_url=self.feed_url,
            package_index=self.package_index,
            interactive=self.options.interactive,
            admin_user=self.credentials.admin_user,
            admin_password=self.credentials.admin_password,
            model=scenario.model,
        )

    def _console(self, device: str, results: Path, log: StepLog) -> ConsoleCapture | None:
        """The device's serial console into results/console.log, where rig.yaml wires one."""
        dev = self.config.device(device)
        if not dev.console:
            return None
        capture = ConsoleCapture(dev.console, results / "console.log", dev.console_baud).start()
        log(capture.error or f"serial console {dev.console} -> console.log")
        return capture

    @staticmethod
    def _image(scenario: Scenario) -> Any:
        """The catalogue's entry for the scenario's image (its Python, its version...)."""
        try:
            return load_catalog().get(scenario.image)
        except ConfigError:
            return None

    def run_attempt(self, job: Job, device: str) -> Attempt:
        scenario = job.scenario
        n = len(job.attempts) + 1
        results = self.directory / "scenarios" / scenario.id
        if n > 1:
            results = results / f"attempt-{n}"
        results.mkdir(parents=True, exist_ok=True)
        log = StepLog(self.bus, device=device, scenario=scenario.id)
        self.events.attempt(scenario.id, device, results)  # its events into its scenario.log
        ctx = self._context(scenario, device, results, log)
        console = self._console(device, results, log)
        try:
            kit = self.kit_factory(device, scenario, self.images[scenario.image], self.bus)
            profile = self.profile_factory(self.matrix.release.product)
        except Exception as e:  # a device we cannot even build is an infrastructure error
            log(f"cannot set up device: {e}")
            attempt = Attempt(device, "error", str(e))
        else:
            pipeline = ScenarioPipeline(
                kit,
                ctx,
                profile,
                self.bus,
                timeouts=self.timeouts,
                write_slots=self.write_slots,
                cancel=self.cancel,
                on_prepared=self._hold
                if self.options.hold
                else self._interactive
                if self.options.interactive
                else None,
                stop_after_prepare=self.options.hold or self.options.prepare_only,
                held=lambda device=device: device not in self.lost_devices,
                snapshots=self.options.snapshots,
                halt_grace=self.halt_grace,
            )
            attempt = pipeline.run()
        finally:
            if console is not None:
                console.stop()
        self.bus.emit(
            Event(
                "result",
                f"{scenario.id}: {attempt.outcome}"
                + (f" ({attempt.message})" if attempt.message else ""),
                device,
                scenario.id,
                data={"outcome": attempt.outcome},
            )
        )
        self.events.end_attempt(scenario.id, device)
        job.facts = ctx.facts
        return attempt

    def _interactive(self, ctx: ScenarioContext) -> None:
        from rig.orchestration.interactive import hand_over

        choice = hand_over(ctx, self.credentials, self.handover_bind(), self.cancel)
        ctx.manual_update = choice == "verify"

    def handover_bind(self) -> str:
        """The flash host's address the person's machine reaches (run.handover_bind)."""
        from rig.orchestration.feed_server import reachable_address

        configured = self.config.sections.get("run", {}).get("handover_bind")
        return configured or reachable_address("192.0.2.1")

    def _hold(self, ctx: ScenarioContext) -> None:
        """`rig up`: the device is in its starting state; keep it so until released."""
        if self.on_held is not None:
            self.on_held(ctx)
        limit = self.options.hold_seconds
        ctx.log(f"holding the device until `rig down` (at most {limit / 3600:g} h)")
        deadline = time.monotonic() + limit
        while not (self.released.wait(1.0) or self.cancel.is_set()):
            if time.monotonic() > deadline:
                ctx.log(f"held for {limit / 3600:g} h: releasing it")
                break
        ctx.log("released")

    def _device_result(self, device: str, job: Job, attempt: Attempt) -> bool:
        quarantined = self.leases.record(device, attempt.outcome, job.scenario.id, attempt.message)
        if quarantined:
            self.bus.emit(
                Event(
                    "device", f"{device} quarantined after repeated infrastructure errors", device
                )
            )
        return quarantined

    # --- the whole run ---------------------------------------------------------------

    def run(self) -> RunOutcome:
        if not self.config.virtual and self.config.user.builtin:
            raise ConfigError(
                "real devices need their own user: the built-in one's password is public",
                where=f"{self.config.where}: user",
                hint="add user: {name: pi, password: {secret: pi_password}} to rig.yaml",
            )
        scenarios = self.scenarios()
        started = time.time()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.directory)  # events.jsonl: what every view is drawn from
        self.bus.subscribe(self.events)
        self.leases = Leases(self.config.paths.state)
        heartbeat: Heartbeat | None = None
        jobs = [Job(s, self._estimate(s)) for s in scenarios]
        feed = packages = None
        interrupted = False
        try:
            self.resolve_images(scenarios)
            devices = self.lease_devices(self.leases)
            heartbeat = Heartbeat(
                self.config.paths.state,
                self.leases.holder,
                lambda: list(self.held),
                self._lease_lost,
                ttl=self.leases.ttl,
            ).start()
            self.rig.start()  # the virtual Pis' supervisor, on the virtual rig
            feed = self._start_feed()
            packages = self._start_packages()
            threading.Thread(target=self._on_cancel, daemon=True, name="cancel-watch").start()
            models = {d: self.config.device(d).model for d in devices}
            scheduler = Scheduler(jobs, models, self.run_attempt, self._device_result, self.cancel)
            jobs = scheduler.run()
        except KeyboardInterrupt:
            interrupted = True
            self.cancel.set()
        finally:
            interrupted = interrupted or self.cancel.is_set()
            if interrupted:
                self._power_off_held()
            if heartbeat is not None:
                heartbeat.close()
            if feed is not None:
                feed.stop()
            if packages is not None:
                packages.stop()
            self.leases.release_all()
            report = self._report(jobs, started, interrupted)
            write_report(report, self.directory)
            self._append_summary(report)
            results_store.store(
                self.config.paths.state,
                report,
                self.directory / "report.html",
                partial=self.options.hold or self.options.prepare_only,
            )
            self.leases.close()
            self.events.close()
        return RunOutcome(report, self.directory)

    def _append_summary(self, report: RunReport) -> None:
        """A summary that cannot be written is said (summary_error), never ends the report."""
        if self.options.step_summary is None:
            return
        try:
            append_step_summary(report, self.options.step_summary, self.directory / "report.html")
        except OSError as e:
            self.summary_error = (
                f"could not append the run summary to {self.options.step_summary}: "
                f"{e.strerror or e}"
            )

    def _on_cancel(self) -> None:
        """On Ctrl-C/SIGTERM cut power at once: in-flight steps fail fast and nothing runs on."""
        self.cancel.wait()
        self._power_off_held()

    def _power_off_held(self) -> None:
        for name in self.held:
            if name in self.lost_devices:
                continue
            try:
                self.rig.power(name).off()
            except Exception as e:
                self.bus.emit(Event("log", f"could not power off {name}: {e}", device=name))

    def _start_feed(self):
        """The release feed of the products on the leased devices (one per run)."""
        from rig.asgi import BackgroundServer
        from rig.orchestration.feed_server import reachable_address

        profile = self.profile_factory(self.matrix.release.product)
        feed = getattr(profile, "release_feed", None)
        rel = self.matrix.release
        app = feed(rel.version, rel.channel, dict(rel.options)) if feed else None
        if app is None:
            return None
        run_cfg = self.config.sections.get("run", {})
        first = self.config.device(self.held[0])
        if self.config.virtual:
            bind = advertise = "127.0.0.1"
        else:
            bind = run_cfg.get("feed_bind", "0.0.0.0")
            advertise = run_cfg.get("feed_host") or reachable_address(first.host or "")
        server = BackgroundServer(app, bind, int(run_cfg.get("feed_port", 0))).start()
        self.feed_url = f"http://{advertise}:{server.port}"
        self.bus.emit(Event("log", f"release feed at {self.feed_url}"))
        return server

    def _start_packages(self):
        """The package cache the devices' pip asks during prepare and update (rig.packages),
        bound and advertised like the feed; None when rig.yaml turns it off."""
        from rig.orchestration.package_server import serve_for_run

        server, self.package_index = serve_for_run(self.config, self.held[0])
        if self.package_index is not None:
            self.bus.emit(Event("log", f"package cache at {self.package_index.url}"))
        return server

    def _estimate(self, scenario: Scenario) -> float:
        """Seconds, from this scenario's last successful run, else from its checks."""
        measured = results_store.last_passed_duration(self.config.paths.state, scenario.id)
        if measured is not None:
            return measured
        # the product's Pi 3 magnitudes, halved: a first guess that orders the queue
        profile = self.matrix.profile
        seconds = profile.phase_seconds
        work = seconds.get("prepare-pinned" if scenario.start else "prepare", 60)
        work += seconds.get("update", 120) + sum(profile.checks.get(c, 60) for c in scenario.checks)
        return 120 + work / 2 + 60 * len(scenario.user_checks)

    def _report(self, jobs: list[Job], started: float, interrupted: bool) -> RunReport:
        catalog = load_catalog()

        def representative(s: Scenario, facts: dict) -> str:
            python = catalog.get(s.image).python if s.image != CANDIDATE else None
            return not_representative(python, facts)

        return assemble_report(
            run_id=self.run_id,
            matrix=self.matrix,
            jobs=jobs,
            directory=self.directory,
            started=started,
            interrupted=interrupted,
            command=self.options.command or shlex.join(sys.argv),
            devices=self.held,
            start_version=lambda s: self.matrix.start_version(s, catalog, self.config.virtual),
            representative=representative,
            lease_lost=self.lease_lost,
        )


@dataclass(frozen=True)
class Credentials:
    """Who logs in where: the product's admin and the device user (from rig.yaml)."""

    admin_user: str
    admin_password: str
    admin_generated: bool  # made for this run: nobody else knows it
    device_user: str
    device_password: str

    def __repr__(self) -> str:  # never in a traceback or a log
        return f"Credentials(admin_user={self.admin_user!r}, device_user={self.device_user!r})"


def credentials_for(config: RigConfig) -> Credentials:
    """rig.yaml's admin password (a secret), else a new random one for this run."""
    configured = config.admin.password
    return Credentials(
        admin_user=config.admin.name,
        admin_password=configured.reveal() if configured else secrets.token_urlsafe(12),
        admin_generated=configured is None,
        device_user=config.user.name,
        device_password=config.user.password.reveal(),
    )


def _default_profile(name: str) -> Profile:
    from rig.product import get_profile

    return get_profile(name)
