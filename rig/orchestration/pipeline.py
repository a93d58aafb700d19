"""One scenario on one device: an explicit state machine of timed phases.

The phases are an enum and the runner is a loop over them, so the current phase
is always known to the live view, the report and the dashboard. Every phase has
a timeout and says what it waited for; nothing sleeps a fixed time.
"""

from __future__ import annotations

import concurrent.futures
import enum
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.checks.run import run_user_checks
from rig.errors import InfraError, ProductError, RigError
from rig.events import Event, EventBus, StepLog
from rig.orchestration.writeslots import WriteSlots
from rig.product.profile import Profile, ScenarioContext


class Phase(enum.Enum):
    TO_HOST = "to-host"
    WRITE = "write"
    PROVISION = "provision"
    TO_DUT = "to-dut"
    BOOT = "boot"
    PREPARE = "prepare"
    SNAPSHOT = "snapshot"  # keep the prepared card as a starting-state snapshot
    UPDATE = "update"
    VERIFY = "verify"
    CHECKS = "checks"
    COLLECT = "collect"
    POWER_OFF = "power-off"


# seconds; overridable in rig.yaml under run.timeouts.<phase>
DEFAULT_TIMEOUTS: dict[Phase, float] = {
    Phase.TO_HOST: 120,
    Phase.WRITE: 1800,
    Phase.PROVISION: 120,
    Phase.TO_DUT: 60,
    Phase.BOOT: 600,
    Phase.PREPARE: 900,
    Phase.SNAPSHOT: 1800,
    Phase.UPDATE: 900,
    Phase.VERIFY: 300,
    Phase.CHECKS: 900,
    Phase.COLLECT: 120,
    Phase.POWER_OFF: 60,
}

# the profile's methods that say how long a phase needs on this device and starting state
PROFILE_LIMITS = {
    Phase.BOOT: "boot_timeout",
    Phase.PREPARE: "prepare_timeout",
    Phase.UPDATE: "update_timeout",
}
BOOT_FIRST_WAIT = 0.4  # share of the boot phase waited before the one power cycle

# the phases that are the devices' own work (the rest is the rig's overhead)
DEVICE_PHASES = {Phase.WRITE, Phase.BOOT, Phase.PREPARE, Phase.UPDATE, Phase.VERIFY, Phase.CHECKS}


@dataclass
class PhaseRecord:
    phase: str
    device: str
    start: float
    end: float = 0.0
    outcome: str = "running"  # ok | failed | error | skipped | interrupted
    message: str = ""

    @property
    def duration(self) -> float:
        return max(0.0, (self.end or time.time()) - self.start)


@dataclass
class DeviceKit:
    """Everything the pipeline needs of one device, built by the runner."""

    name: str
    power: Any  # rig.hardware.protocols.PowerSwitch
    mux: Any  # CardMux: Mux + disk(timeout) + card_identity()
    host: str
    ssh_port: int
    to_host: Callable[[StepLog], Path]
    to_dut: Callable[[StepLog], None]
    write: Callable[[Path, StepLog], dict[str, Any]]  # (disk, log) -> write facts
    provision: Callable[..., dict[str, Any]]  # (disk, log, hostname_on_root=False) -> facts
    # rig.card.snapshots.CardSnapshots of this device and image; None: snapshots are off
    snapshots: Any = None


class Cancelled(RigError):
    """The run was interrupted (Ctrl-C / SIGTERM)."""


@dataclass
class Attempt:
    device: str
    outcome: str = "running"  # passed | failed | error | interrupted
    message: str = ""
    phases: list[PhaseRecord] = field(default_factory=list)


def wait_reachable(
    host: str, port: int, timeout: float, stop: Callable[[], bool] = lambda: False
) -> float:
    """Poll a TCP port until it accepts; returns the seconds it took."""
    start = time.monotonic()
    delay = 0.05
    last = "no answer"
    while True:
        if stop():
            raise Cancelled("stopped while waiting for the device")
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(0.1, timeout))):
                return time.monotonic() - start
        except OSError as e:
            last = e.strerror or str(e)
        if time.monotonic() - start >= timeout:
            raise InfraError(
                f"{host}:{port} not reachable after {timeout:.0f}s (last: {last})",
                hint="check Wi-Fi credentials and country in rig.yaml, and the device's power",
            )
        time.sleep(max(0.0, min(delay, timeout - (time.monotonic() - start))))
        delay = min(delay * 1.5, 1.0)


def wait_closed(
    host: str, port: int, timeout: float, stop: Callable[[], bool] = lambda: False
) -> float:
    """Poll a TCP port until it stops accepting (the device's sshd is gone)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if stop():
            raise Cancelled("stopped while waiting for the device to shut down")
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError:
            return time.monotonic() - start
        time.sleep(0.25)
    raise InfraError(
        f"{host}:{port} still answers {timeout:.0f}s after poweroff", hint="is sudo allowed?"
    )


class ScenarioPipeline:
    """Runs the phases of one scenario attempt on one device."""

    def __init__(
        self,
        kit: DeviceKit,
        ctx: ScenarioContext,
        profile: Profile,
        bus: EventBus,
        *,
        timeouts: dict[Phase, float] | None = None,
        write_slots: WriteSlots | None = None,
        cancel: threading.Event | None = None,
        on_prepared: Callable[[ScenarioContext], None] | None = None,
        stop_after_prepare: bool = False,
        held: Callable[[], bool] = lambda: True,
        snapshots: bool = True,
        halt_grace: float = 0.0,
    ) -> None:
        self.kit = kit
        self.ctx = ctx
        self.profile = profile
        self.bus = bus
        self.configured = dict(timeouts or {})  # rig.yaml's run.timeouts: these win
        self.timeouts = {**DEFAULT_TIMEOUTS, **self.configured}
        self.write_slots = write_slots or WriteSlots(8)
        self.cancel = cancel or threading.Event()
        self.on_prepared = on_prepared
        self.stop_after_prepare = stop_after_prepare  # `rig up`: the starting state is the goal
        self.held = held  # False once the run lost the device's lease: hands off from then on
        self.attempt = Attempt(kit.name)
        self.abandoned = threading.Event()  # a phase timed out: its thread must stop waiting
        self.log = ctx.log
        self.phase: Phase | None = None
        # --no-snapshots: neither use nor capture (the pristine image, as always)
        self.snapshots = kit.snapshots if snapshots else None
        self.halt_grace = halt_grace  # seconds a halting device needs after sshd is gone
        self.snapshot_key: str | None = None
        self.halted = False  # shut down for a snapshot and not booted since
        self.snapshot_inputs: dict[str, Any] = {}

    # --- one phase -------------------------------------------------------------

    def _run_phase(self, phase: Phase, fn: Callable[[], Any]) -> Any:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        self.phase = phase
        self.log.phase = phase.value
        record = PhaseRecord(phase.value, self.kit.name, time.time())
        self.attempt.phases.append(record)
        self.bus.emit(
            Event("phase-start", phase.value, self.kit.name, self.ctx.scenario_id, phase.value)
        )
        timeout = self.limit(phase)
        self.ctx.facts.setdefault("phase_limits", {})[phase.value] = round(timeout)
        pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"{self.kit.name}-{phase.value}"
        )
        try:
            future = pool.submit(fn)
            try:
                result = future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                self.abandoned.set()
                raise InfraError(
                    f"phase {phase.value} did not finish within {timeout:.0f}s",
                    where=f"{self.kit.name}: {phase.value}",
                ) from None
        except BaseException as e:
            record.end = time.time()
            record.outcome = (
                "failed"
                if isinstance(e, ProductError)
                else "interrupted"
                if isinstance(e, Cancelled | KeyboardInterrupt)
                else "error"
            )
            record.message = str(e)
            self.bus.emit(
                Event(
                    "phase-end",
                    f"{phase.value} {record.outcome}: {e}",
                    self.kit.name,
                    self.ctx.scenario_id,
                    phase.value,
                    data={"outcome": record.outcome, "duration": record.duration},
                )
            )
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        record.end = time.time()
        record.outcome = "ok"
        self.bus.emit(
            Event(
                "phase-end",
                f"{phase.value} ok",
                self.kit.name,
                self.ctx.scenario_id,
                phase.value,
                data={"outcome": "ok", "duration": record.duration},
            )
        )
        return result

    def limit(self, phase: Phase) -> float:
        """The phase's time limit: rig.yaml's when it sets one, else what the product says
        this model and starting state need (a Pi 3's first boot, a pin or an update that
        builds wheels on Python 3.7), never less than the default."""
        if phase in self.configured:
            return self.configured[phase]
        default = DEFAULT_TIMEOUTS[phase]
        needs = getattr(self.profile, PROFILE_LIMITS.get(phase, ""), None)
        if needs is None:
            return default
        seconds = float(needs(self.ctx))
        if phase == Phase.BOOT:  # a first wait of the normal silence, a cycle, a second wait
            return max(default, seconds / BOOT_FIRST_WAIT)
        return max(default, seconds + 60)

    # --- the whole scenario ----------------------------------------------------

    def run(self) -> Attempt:
        ctx, kit, log = self.ctx, self.kit, self.log
        try:
            disk = self._run_phase(Phase.TO_HOST, lambda: kit.to_host(log))

            def write() -> None:  # the slot is held for the write only: others boot meanwhile
                with self.write_slots.slot() as slot:
                    ctx.facts["write"] = self._write(disk)
                    slot.measured(ctx.facts["write"])

            self._run_phase(Phase.WRITE, write)
            self._run_phase(
                Phase.PROVISION,
                lambda: ctx.facts.__setitem__("provision", self._provision(disk)),
            )
            self._run_phase(Phase.TO_DUT, lambda: kit.to_dut(log))
            self._run_phase(Phase.BOOT, self._boot)
            self._run_phase(Phase.PREPARE, lambda: self.profile.prepare(ctx))
            if self.snapshot_key and ctx.snapshot is None:
                captured = self._run_phase(Phase.SNAPSHOT, self._capture)
                if self.stop_after_prepare and self.on_prepared is None:
                    # a warm-up (--prepare-only) wanted the snapshot, not a running device
                    self.attempt.outcome = "passed"
                    return self.attempt
                ctx.snapshot = captured  # the card is the snapshot now: prepare needs no pin
                self._run_phase(Phase.TO_DUT, lambda: kit.to_dut(log))
                self._run_phase(Phase.BOOT, self._boot)
                self._run_phase(Phase.PREPARE, lambda: self.profile.prepare(ctx))
            if self.on_prepared is not None:
                self.on_prepared(ctx)
            if self.stop_after_prepare:
                self.attempt.outcome = "passed"
                return self.attempt
            self._run_phase(Phase.UPDATE, lambda: self.profile.update(ctx))
            if ctx.expect == "updated":
                self._run_phase(Phase.VERIFY, lambda: self.profile.verify(ctx))
            checks = list(ctx.checks)
            if (checks or ctx.user_checks) and ctx.expect == "updated":
                self._run_phase(Phase.CHECKS, lambda: self._checks(checks, ctx.user_checks))
            self.attempt.outcome = "passed"
        except ProductError as e:
            self.attempt.outcome, self.attempt.message = "failed", str(e)
        except (Cancelled, KeyboardInterrupt) as e:
            self.attempt.outcome, self.attempt.message = "interrupted", str(e) or "interrupted"
        except RigError as e:
            self.attempt.outcome, self.attempt.message = "error", str(e)
        except Exception as e:  # a bug in the rig is an infrastructure error, with its type
            self.attempt.outcome, self.attempt.message = "error", f"{type(e).__name__}: {e}"
        finally:
            if self.cancel.is_set() and self.attempt.outcome in ("error", "failed", "running"):
                # the run was stopped (devices powered off under it): not the device's fault
                self.attempt.outcome = "interrupted"
                self.attempt.message = f"interrupted ({self.attempt.message})"
            self._finish()
        return self.attempt

    # --- starting-state snapshots ---------------------------------------------------

    def _write(self, disk: Path) -> dict[str, Any]:
        """The scenario's starting-state snapshot when there is one, else the image."""
        from rig.card.snapshots import SnapshotCorrupt

        ctx, log = self.ctx, self.log
        record = ctx.facts.setdefault("snapshot", {"used": None, "captured": None})
        wants = getattr(self.profile, "snapshot_inputs", None)
        product = wants(ctx) if wants is not None and self.snapshots is not None else None
        if product is None or self.snapshots is None:
            record["why_not"] = (
                "snapshots are off" if self.snapshots is None else "the product keeps none"
            )
            return self.kit.write(disk, log)
        self.snapshot_key, self.snapshot_inputs = self.snapshots.key(product, disk)
        found = self.snapshots.lookup(self.snapshot_key)
        if found is not None:
            log(f"writing starting-state snapshot {self.snapshot_key[:12]}", key=self.snapshot_key)
            try:
                facts = self.snapshots.write(found, disk, log)
            except SnapshotCorrupt as e:
                log(f"{e}; writing the image instead")
            else:
                ctx.snapshot = record["used"] = self.snapshot_key
                return facts
        log(f"no starting-state snapshot {self.snapshot_key[:12]} yet: writing the image")
        return self.kit.write(disk, log)

    def _provision(self, disk: Path) -> dict[str, Any]:
        """The boot partition's files; a snapshot's root already has the device's hostname
        (written with its fresh identity), so no file whose only work is to set it."""
        if self.ctx.snapshot is not None:
            return self.kit.provision(disk, self.log, hostname_on_root=True)
        return self.kit.provision(disk, self.log)

    def _capture(self) -> str | None:
        """Bring the product to a state worth keeping, shut the device down, read its card.

        A card that cannot be kept (not cleanly unmounted, a read error) is said and not
        kept: the scenario goes on from the card as it is."""
        from rig.card.snapshots import NotCapturable

        ctx, kit, log = self.ctx, self.kit, self.log
        before = getattr(self.profile, "before_snapshot", None)
        if before is not None:
            before(ctx)
        self._halt()
        disk = kit.to_host(log)
        assert self.snapshot_key is not None and self.snapshots is not None
        try:
            self.snapshots.capture(self.snapshot_key, self.snapshot_inputs, disk, log)
        except (NotCapturable, OSError) as e:
            log(f"starting state not kept: {e}")
            ctx.facts["snapshot"]["error"] = str(e)
            return None
        ctx.facts["snapshot"]["captured"] = self.snapshot_key
        return self.snapshot_key

    def _halt(self) -> None:
        """A clean shutdown (a real Pi must not lose power while it writes): sync, poweroff,
        wait for sshd to go, then the time a halt takes after it."""
        from rig.product.profile import ssh_shell

        host, port = self.kit.host, self.kit.ssh_port
        with self.log.step("shut the device down"):
            shell = ssh_shell(self.ctx)
            try:
                shell.run("sync && sudo -n poweroff", check=False, timeout=60)
            except InfraError:
                pass  # the connection may go with the shutdown
            finally:
                shell.close()
            wait_closed(host, port, 120, self._stopped)
            self.halted = True
            if self.halt_grace:  # a real Pi gives no sign when its halt is done
                self.cancel.wait(self.halt_grace)

    def _stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()

    def _boot(self) -> None:
        """Wait for SSH; if it never answers, power cycle once and wait again."""
        timeout = self.limit(Phase.BOOT)
        end = time.monotonic() + timeout * 0.9  # two waits and a cycle fit the phase
        host, port = self.kit.host, self.kit.ssh_port
        try:
            took = wait_reachable(host, port, timeout * BOOT_FIRST_WAIT, self._stopped)
        except InfraError as first:
            self.log(f"device not reachable ({first.message}); power cycling once")
            self.kit.power.cycle()
            try:
                took = wait_reachable(host, port, end - time.monotonic(), self._stopped)
            except InfraError as second:
                raise InfraError(
                    f"never came up: {second.message}, also after a power cycle",
                    where=f"{self.kit.name}: boot",
                    hint=second.hint,
                ) from None
        self.halted = False
        self.ctx.facts["boot_seconds"] = round(took, 2)
        self.log(f"{host}:{port} reachable after {took:.1f}s")

    def _checks(self, checks: list[str], user_checks: tuple[Path, ...] = ()) -> None:
        """The profile's built-in checks, then the user's own check files (one pytest run)."""
        failures = []
        for name in checks:
            try:
                with self.log.step(f"check {name}"):
                    self.profile.check(self.ctx, name)
            except ProductError as e:
                failures.append(f"{name}: {e.message}")
        if user_checks:
            try:
                names = ", ".join(p.name for p in user_checks)
                with self.log.step(f"user checks {names}"):
                    run_user_checks(self.ctx, user_checks, timeout=self.limit(Phase.CHECKS))
            except ProductError as e:
                failures.append(e.message)
        if failures:
            raise ProductError("; ".join(failures), where=f"{self.kit.name}: checks")

    def _collect(self) -> None:
        """Undo the rig's test settings on the card (when the profile can), then collect."""
        leave = getattr(self.profile, "leave", None)
        if leave is not None:
            try:
                leave(self.ctx)
            except RigError as e:
                self.log(f"could not restore the card's user settings: {e}")
        self.profile.collect(self.ctx)

    def _finish(self) -> None:
        """Collect what there is and power the device off, whatever happened (unless the
        device is someone else's now: then it is not touched at all)."""
        if not self.held():
            self.log("the device's lease was lost: not collecting, not powering it off")
            return
        booted = any(p.phase == Phase.BOOT.value and p.outcome == "ok" for p in self.attempt.phases)
        booted = booted and not self.halted  # a device shut down for its snapshot answers no one
        if booted:  # nothing to collect from a device that never answered
            try:
                self._run_phase(Phase.COLLECT, self._collect)
            except Exception as e:
                self.log(f"collect failed: {e}")
        try:
            cancel, self.cancel = self.cancel, threading.Event()  # power off even when cancelled
            self._run_phase(Phase.POWER_OFF, self.kit.power.off)
            self.cancel = cancel
        except Exception as e:
            self.log(f"power off failed: {e}")
            if self.attempt.outcome == "passed":
                self.attempt.outcome, self.attempt.message = "error", f"power off failed: {e}"
