"""A running virtual Raspberry Pi: boot from its card, serve SSH and OctoPrint, die at power cut.

The supervisor (rig.virtual.twin) calls ``power_on`` when the device's hub
port is powered with its card on the DUT side and ``power_cut`` when either
changes. This module is the device's power and boot state machine: a boot
reads the card like the real first boot would (``rig.virtual.firstboot.boot_card``,
a typed ``BootOutcome``), waits the configured boot delay, lays out or mounts
the card's root (rig.virtual.rootlayout), then starts the sandbox, the device's
systemd (rig.virtual.systemd: the octoprint unit and the shims' control socket),
the HTTP front (haproxy on OctoPi) and sshd (logins: rig.virtual.sessions);
the configured faults (Wi-Fi drop, power glitch, a late first-boot reboot) are
timers on the boot that armed them.

State belongs to the card: a card with a real userland is mounted and is the
device's ``/``; a host-userland card's state lives under
``<state>/virtual/devices/<name>/<card-key>/`` and a reflashed card has a new
key, hence a fresh home, venv, OctoPrint basedir and SSH host key.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.errors import RigError
from rig.virtual.faults import DeviceFaults, VirtualSettings
from rig.virtual.firstboot import BootOutcome
from rig.virtual.pi3 import DeviceGroup, Throttle
from rig.virtual.proxy import HttpFront
from rig.virtual.rootlayout import Layout, check_card_root, for_outcome, lay_out_state
from rig.virtual.sandbox import Sandbox
from rig.virtual.sessions import Sessions
from rig.virtual.sshd import DeviceSSHServer, load_or_create_host_key
from rig.virtual.systemd import OCTOPRINT_PORT, FakeSystemd, backend_address, terminate

log = logging.getLogger(__name__)

__all__ = ["OCTOPRINT_PORT", "DeviceSpec", "VirtualPi", "backend_address"]


@dataclass(frozen=True)
class DeviceSpec:
    """Where a virtual Pi is wired: hub port, mux serial, and its network address."""

    name: str
    location: str
    port: int
    serial: str
    host: str
    ssh_port: int
    http_port: int

    @classmethod
    def from_config(cls, dev: Any) -> DeviceSpec:
        return cls(
            name=dev.name,
            location=getattr(dev.power, "location", None) or "",
            port=int(dev.power.port or 0),
            serial=dev.mux.serial,
            host=dev.host or "127.0.0.1",
            ssh_port=dev.ssh_port,
            http_port=dev.http_port,
        )


class VirtualPi:
    """One virtual Pi 3. Thread-safe; every transition bumps ``generation``.

    ``phase``: off booting up unreachable halted never failed (``reason`` says why).
    """

    def __init__(
        self,
        spec: DeviceSpec,
        *,
        card: Callable[[], Path],
        state_dir: Path,
        ap: Any,
        settings: VirtualSettings,
        faults: DeviceFaults | None = None,
        venv_cache: Path | None = None,
        say: Callable[[str], None] | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.spec = spec
        self.card = card
        self.devices_dir = Path(state_dir) / "devices" / spec.name
        self.ap = ap
        self.settings = settings
        self.faults = faults or DeviceFaults()
        self.venv_cache = venv_cache
        self._say = say or (lambda msg: log.info("%s: %s", spec.name, msg))
        self.phase = "off"
        self.reason = ""
        self.outcome: BootOutcome | None = None
        self.layout: Layout | None = None  # where the booted card's files are
        self.generation = 0
        self.boots = 0
        self.booted_at: float | None = None
        self.lock = threading.RLock()
        self._prepare_lock = threading.Lock()
        self._cancel = threading.Event()
        self.sandbox: Sandbox | None = None
        self.systemd = FakeSystemd(self)
        self._sessions = Sessions(self)
        self._sshd: DeviceSSHServer | None = None
        self._front: HttpFront | None = None
        self._timers: list[threading.Timer] = []
        self.late_reboot: threading.Event | None = None  # set when it begins
        self._console_lock = threading.Lock()
        self._powered = time.monotonic()  # the console's clock starts at power on
        self._card_root: Path | None = None  # where the card's root is mounted while powered
        self.throttle = throttle  # the pi3 profile: as slow as a Pi 3 (rig.virtual.pi3)
        self.cgroup: DeviceGroup | None = None  # while powered

    @property
    def basedir(self) -> str:
        """OctoPrint's basedir inside the device (as the booted card has it)."""
        return self.layout.basedir if self.layout else "/home/pi/.octoprint"

    def host_path(self, inside: str) -> Path:
        """Where a path of the device lies on the host (see rootlayout.Layout.host_path)."""
        assert self.layout is not None
        return self.layout.host_path(inside)

    def say(self, msg: str) -> None:
        self._say(msg)
        # the serial console a USB adapter on the flash host would show (rig.yaml's
        # devices.<name>.console.port: <state>/virtual/devices/<name>/console)
        with contextlib.suppress(OSError), self._console_lock:
            self.devices_dir.mkdir(parents=True, exist_ok=True)
            with (self.devices_dir / "console").open("a") as console:
                console.write(f"[{time.monotonic() - self._powered:10.3f}] {msg}\r\n")

    # -- power ------------------------------------------------------------------

    def power_on(self) -> None:
        """Power reached the board with the card in place: boot (in the background)."""
        with self.lock:
            if self.phase != "off":
                return
            self._powered = time.monotonic()
            self._start_boot("power on")

    def power_cut(self) -> None:
        """Power gone: every process of the device dies at once, the network goes with it."""
        with self.lock:
            if self.phase == "off" and self.sandbox is None:
                return
            self.generation += 1
            self._cancel.set()
            self._teardown(graceful=False)
            self.phase = "off"
            self.say("power cut")

    def soft(self, what: str) -> None:
        """`sudo reboot` / `shutdown -h`: services stop in order, then the board resets or halts."""
        with self.systemd.jobs:
            with self.lock:
                if self.sandbox is None:
                    return
                gen = self.generation
                proc = self.systemd.detach()
            terminate(proc)  # outside the device lock: a power cut may still come first
        with self.lock:
            if gen != self.generation:
                return
            self.generation += 1
            self._cancel.set()
            self._teardown(graceful=False)
            self.say(what)
            if what == "reboot":
                self._start_boot("reboot")
            else:
                self.phase = "halted"

    def _start_boot(self, why: str) -> None:
        self.generation += 1
        self._cancel = threading.Event()
        self.phase = "booting"
        self.reason = ""
        gen, cancel = self.generation, self._cancel
        threading.Thread(
            target=self._boot, args=(gen, cancel, why), name=f"{self.spec.name}-boot", daemon=True
        ).start()

    # -- boot -------------------------------------------------------------------

    def _boot(self, gen: int, cancel: threading.Event, why: str) -> None:
        try:
            self._boot_steps(gen, cancel, why)
        except RigError as e:
            with self.lock:
                if gen == self.generation:
                    self._teardown(graceful=False)
                    self.phase, self.reason = "failed", str(e)
            self.say(f"boot failed: {e}")
        except Exception as e:  # a bug must not kill the supervisor
            log.exception("%s: boot crashed", self.spec.name)
            with self.lock:
                if gen == self.generation:
                    self._teardown(graceful=False)
                    self.phase, self.reason = "failed", f"internal error: {e}"

    def _boot_steps(self, gen: int, cancel: threading.Event, why: str) -> None:
        from rig.virtual.card import card_state_key, first_boot_done
        from rig.virtual.firstboot import boot_card

        started = time.monotonic()
        self.say(f"booting ({why})")
        if self.faults.never_boots:
            with self.lock:
                if gen == self.generation:
                    self.phase, self.reason = "never", "fault: never_boots"
            self.say("never boots (configured fault)")
            return
        card = self.card()
        first = not first_boot_done(card)
        outcome = boot_card(card, ap=self.ap, first_boot_done=not first, log=self.say)
        # keyed after boot_card: the first boot gives the card its machine id
        state = self.devices_dir / (outcome.card_key or card_state_key(card))
        with self.lock:
            if gen != self.generation:
                return
            self.outcome = outcome
            self.layout = for_outcome(state, outcome, card_rooted=False)
        if not outcome.booted:
            with self.lock:
                if gen == self.generation:
                    self.phase = "failed"
                    self.reason = outcome.reason or "did not boot"
            self.say(f"does not boot: {self.reason}")
            return
        if cancel.wait(self.settings.boot_delay):
            return
        reboots = outcome.reboots
        if first and self.settings.first_boot_reboot:
            reboots = max(reboots, 1)
        for _ in range(reboots if self.settings.first_boot_reboot else 0):
            self.say("first boot: rebooting once more (resize, firstrun)")
            if cancel.wait(self.settings.boot_delay):
                return
        # a boot cut short may still be laying out the card (building a venv): one at a time
        with self._prepare_lock:
            if cancel.is_set():
                return
            self._prepare(state, outcome)
        with self.lock:
            if gen != self.generation or cancel.is_set():
                if self.sandbox is None:  # cut while mounting: nothing else holds the card
                    self._teardown(graceful=False)
                return
            self._start_services(state, outcome)
            self.boots += 1
            self.booted_at = time.time()
            self.phase = "up" if outcome.wifi_joined else "unreachable"
            if not outcome.wifi_joined:
                self.reason = outcome.wifi_reason or "Wi-Fi not joined"
            self.late_reboot = None
            if first and self.faults.reboot_after_up is not None:
                self.late_reboot = threading.Event()
            self._arm_faults(gen)
        self.say(f"{self.phase} after {time.monotonic() - started:.1f} s")

    def _prepare(self, state: Path, outcome: BootOutcome) -> None:
        """The card's root: mounted (a real userland), or laid out on the host."""
        if not outcome.userland:
            layout = for_outcome(state, outcome, card_rooted=False)
            self.layout = layout
            lay_out_state(
                layout,
                outcome,
                self.faults,
                device=self.spec.name,
                venv_cache=self.venv_cache,
                say=self.say,
            )
            return
        from rig.virtual.cardroot import mount_root

        # the card holds the whole device: mount its root; nothing is laid out beside it
        at = self.devices_dir / "card-root"
        layout = for_outcome(at, outcome, card_rooted=True)
        mount_root(self.card(), at)
        with self.lock:
            self._card_root, self.layout = at, layout  # a failure from here on unmounts it
        check_card_root(layout, self.faults, self.spec.name)

    # -- services -----------------------------------------------------------------

    def _start_services(self, state: Path, outcome: BootOutcome) -> None:
        """``state``: the card's state directory (a card-rooted device: only its sshd key
        fallback and the sandbox's bookkeeping; everything else is on the card)."""
        root = state
        card_rooted = self._card_root is not None
        control = self.systemd.open_control(shared=card_rooted)
        hostname = outcome.hostname or "octopi"
        if self.throttle is not None:
            from rig.virtual.cardroot import loop_of

            # a Pi 3's CPU, memory and SD card for everything the device will run
            self.cgroup = self.throttle.device(self.spec.name)
            self.cgroup.start(loop_of(self._card_root) if self._card_root else None)
        if card_rooted:
            from rig.virtual.hostpip import host_pip

            box = Sandbox(
                name=self.spec.name,
                root=root,
                hostname=hostname,
                mounts={"/run/rig": control},
                rootfs=self._card_root,
                host_binds=host_pip().binds,
                cgroup=self.cgroup,
            )
        else:
            box = Sandbox(
                name=self.spec.name,
                root=root,
                hostname=hostname,
                mounts={
                    "/home": root / "home",
                    "/etc": root / "etc",
                    "/opt/octopi": root / "opt" / "octopi",
                    "/var": root / "var",
                    "/run/rig": control,
                },
                cgroup=self.cgroup,
            )
        box.start()
        self.sandbox = box
        self.systemd.serve_control(shared=card_rooted)
        self.systemd.start()  # under the device lock already (boot)
        self._start_network(root, outcome)

    def _start_network(self, root: Path, outcome: BootOutcome) -> None:
        if not outcome.wifi_joined:
            return
        self._front = HttpFront(
            self.spec.name,
            self.spec.host,
            self.spec.http_port,
            (backend_address(self.spec.host), OCTOPRINT_PORT),
        )
        self._front.start()
        if outcome.ssh_enabled:
            # outside the bound directories: nobody inside is root, so nobody may read it
            key_path = root / "sshd" / "ssh_host_ecdsa_key"
            if self._card_root is not None:  # on the card, where a Pi keeps it
                key_path = self._card_root / "etc" / "ssh" / "ssh_host_ecdsa_key"
            key = load_or_create_host_key(key_path)
            self._sshd = DeviceSSHServer(
                self.spec.name,
                self.spec.host,
                self.spec.ssh_port,
                key,
                self._sessions.check_password,
                self._sessions.authorized_keys,
                self._sessions.run,
            )
            self._sshd.start()

    # -- faults ---------------------------------------------------------------------

    def _arm_faults(self, gen: int) -> None:
        def later(seconds: float | None, fn: Callable[[], None]) -> None:
            if seconds is None:
                return
            t = threading.Timer(seconds, lambda: self._if_current(gen, fn))
            t.daemon = True
            t.start()
            self._timers.append(t)

        later(self.faults.wifi_drops_after, self._wifi_drop)
        later(self.faults.power_glitch_after, self._glitch)
        pending = self.late_reboot
        if pending is not None:

            def reboot() -> None:
                pending.set()
                self.say("first boot: rebooting once more, sshd was already up (configured)")
                # outside the timer's device lock: soft() takes the systemd's job lock first
                threading.Thread(target=self.soft, args=("reboot",), daemon=True).start()

            later(self.faults.reboot_after_up, reboot)

    def _if_current(self, gen: int, fn: Callable[[], None]) -> None:
        with self.lock:
            if gen == self.generation:
                fn()

    def _wifi_drop(self) -> None:
        self.say("Wi-Fi dropped (configured fault)")
        self._close_network()
        self.phase, self.reason = "unreachable", "fault: wifi_drops_after"

    def _glitch(self) -> None:
        self.say("power glitch (configured fault): brown-out reset")
        self.generation += 1
        self._cancel.set()
        self._teardown(graceful=False)
        self._start_boot("power glitch")

    # -- teardown -------------------------------------------------------------------

    def _close_network(self) -> None:
        for server in (self._sshd, self._front):
            if server is not None:
                server.stop()
        self._sshd = self._front = None

    def _teardown(self, graceful: bool) -> None:
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self._close_network()
        if graceful:
            self.systemd.stop()
        if self.sandbox is not None:
            self.sandbox.kill()
            self.sandbox = None
        self.systemd.forget()
        self.systemd.close_control()
        if self._card_root is not None:
            from rig.virtual.cardroot import unmount_root

            unmount_root(self._card_root)  # every process of the device is gone
            self._card_root = None
        if self.cgroup is not None:
            self.cgroup.stop()
            self.cgroup = None
        self.booted_at = None

    # -- status ---------------------------------------------------------------------

    def octoprint_pid(self) -> int | None:
        """Host pid of the OctoPrint process (the child of nsenter), if it runs."""
        return self.systemd.octoprint_pid()

    def installed_octoprint(self) -> str | None:
        """The OctoPrint version really installed in the venv now (it changes on update)."""
        if self.layout is None:
            return None
        try:
            venv = self.layout.host_path(self.layout.venv)
        except ValueError:
            return None
        for info in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            if name.lower() == "octoprint":
                return version
        return None

    def status(self) -> dict[str, Any]:
        # no lock: a snapshot of plain attributes, never blocked by a stopping service
        box, layout = self.sandbox, self.layout
        return {
            "device": self.spec.name,
            "phase": self.phase,
            "reason": self.reason,
            "booted": self.phase in ("up", "unreachable"),
            "address": self.spec.host,
            "ssh": f"{self.spec.host}:{self.spec.ssh_port}" if self._sshd else None,
            "http": f"{self.spec.host}:{self.spec.http_port}" if self._front else None,
            "octoprint_version": self.installed_octoprint()
            if self.phase in ("up", "unreachable")
            else None,
            "pid": self.octoprint_pid(),
            "sandbox_pid": box.pid if box else None,
            "boots": self.boots,
            "card_state": str(layout.root) if layout else None,
        }
