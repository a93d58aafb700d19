"""A running virtual Raspberry Pi: boot from its card, serve SSH and OctoPrint, die at power cut.

The supervisor (rig.virtual.twin) calls ``power_on`` when the device's hub
port is powered with its card on the DUT side and ``power_cut`` when either
changes. A boot reads the card like the real first boot would
(``rig.virtual.firstboot.boot_card``), waits the configured boot delay, lays
out the card's root state, then starts the sandbox, the device's "systemd"
(a control socket the ``service``/``systemctl``/``reboot`` shims talk to),
the real OctoPrint as a service, the HTTP front (haproxy on OctoPi) and sshd.

State belongs to the card: everything lives under
``<state>/virtual/devices/<name>/<card-key>/`` and a reflashed card has a new
key, hence a fresh home, venv, OctoPrint basedir and SSH host key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from rig.errors import InfraError, RigError
from rig.virtual.board import lay_out_board
from rig.virtual.faults import DeviceFaults, VirtualSettings
from rig.virtual.proxy import HttpFront
from rig.virtual.sandbox import PATH, Sandbox, pip_environment
from rig.virtual.sshd import (
    DeviceSSHServer,
    Pty,
    load_or_create_host_key,
    pump_process,
    pump_pty,
)
from rig.virtual.venvs import base_venv, copy_venv

log = logging.getLogger(__name__)

OCTOPRINT_PORT = 5000  # where OctoPi runs OctoPrint, behind haproxy
STOP_TIMEOUT = 10.0  # systemd's TimeoutStopSec is 90 s; OctoPrint stops in ~1 s
RESTART_SEC = 1.0


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
            location=dev.power.location or "",
            port=int(dev.power.port or 0),
            serial=dev.mux.serial,
            host=dev.host or "127.0.0.1",
            ssh_port=dev.ssh_port,
            http_port=dev.http_port,
        )


def backend_address(host: str) -> str:
    """OctoPrint's own address behind the front: 127.a.b.c -> 127.a.(b+1).c."""
    parts = host.split(".")
    if len(parts) == 4 and parts[0] == "127" and int(parts[2]) < 255:
        return f"127.{parts[1]}.{int(parts[2]) + 1}.{parts[3]}"
    return "127.0.0.1"


def _octopi_version(outcome: Any) -> str:
    return str(getattr(outcome, "octopi_version", None) or getattr(outcome, "generation", ""))


def _venv_inside(outcome: Any, user: str) -> str:
    """0.18/1.0 keep the venv in the home; 1.1 in /opt/octopi/oprint, linked from ~/oprint."""
    path = getattr(outcome, "venv", None) or getattr(outcome, "octoprint_venv", None)
    if path:
        return str(path)
    version = _octopi_version(outcome)
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    return "/opt/octopi/oprint" if major_minor >= (1, 1) else f"/home/{user}/oprint"


class VirtualPi:
    """One virtual Pi 3. Thread-safe; every transition bumps ``generation``."""

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
    ) -> None:
        self.spec = spec
        self.card = card
        self.devices_dir = Path(state_dir) / "devices" / spec.name
        self.ap = ap
        self.settings = settings
        self.faults = faults or DeviceFaults()
        self.venv_cache = venv_cache
        self._say = say or (lambda msg: log.info("%s: %s", spec.name, msg))
        self.phase = "off"  # off booting up unreachable halted never failed
        self.reason = ""
        self.outcome: Any = None
        self.root: Path | None = None
        self.user = "pi"
        self.venv = "/home/pi/oprint"
        self.home = "/home/pi"
        self.basedir = "/home/pi/.octoprint"
        self.generation = 0
        self.boots = 0
        self.booted_at: float | None = None
        self._lock = threading.RLock()
        self._svc_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._cancel = threading.Event()
        self._sandbox: Sandbox | None = None
        self._sshd: DeviceSSHServer | None = None
        self._front: HttpFront | None = None
        self._control: socket.socket | None = None
        self._control_dir: Path | None = None
        self._octoprint: subprocess.Popen[bytes] | None = None
        self._service_gen = 0
        self._timers: list[threading.Timer] = []
        self._late_reboot: threading.Event | None = None  # set when it begins
        self._console_lock = threading.Lock()
        self._powered = time.monotonic()  # the console's clock starts at power on
        self._card_root: Path | None = None  # where the card's root is mounted while powered

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
        with self._lock:
            if self.phase != "off":
                return
            self._powered = time.monotonic()
            self._start_boot("power on")

    def power_cut(self) -> None:
        """Power gone: every process of the device dies at once, the network goes with it."""
        with self._lock:
            if self.phase == "off" and self._sandbox is None:
                return
            self.generation += 1
            self._cancel.set()
            self._teardown(graceful=False)
            self.phase = "off"
            self.say("power cut")

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
            with self._lock:
                if gen == self.generation:
                    self._teardown(graceful=False)
                    self.phase, self.reason = "failed", str(e)
            self.say(f"boot failed: {e}")
        except Exception as e:  # a bug must not kill the supervisor
            log.exception("%s: boot crashed", self.spec.name)
            with self._lock:
                if gen == self.generation:
                    self._teardown(graceful=False)
                    self.phase, self.reason = "failed", f"internal error: {e}"

    def _boot_steps(self, gen: int, cancel: threading.Event, why: str) -> None:
        from rig.virtual.card import card_state_key, first_boot_done
        from rig.virtual.firstboot import boot_card

        started = time.monotonic()
        self.say(f"booting ({why})")
        if self.faults.never_boots:
            with self._lock:
                if gen == self.generation:
                    self.phase, self.reason = "never", "fault: never_boots"
            self.say("never boots (configured fault)")
            return
        card = self.card()
        first = not first_boot_done(card)
        outcome = boot_card(card, ap=self.ap, first_boot_done=not first, log=self.say)
        # keyed after boot_card: the first boot gives the card its machine id
        key = getattr(outcome, "card_key", "") or card_state_key(card)
        root = self.devices_dir / key
        with self._lock:
            if gen != self.generation:
                return
            self.outcome, self.root = outcome, root
        if not getattr(outcome, "booted", False):
            with self._lock:
                if gen == self.generation:
                    self.phase = "failed"
                    self.reason = getattr(outcome, "reason", "") or "did not boot"
            self.say(f"does not boot: {self.reason}")
            return
        if cancel.wait(self.settings.boot_delay):
            return
        reboots = int(getattr(outcome, "reboots", 0) or 0)
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
            self._prepare(root, outcome, first)
        with self._lock:
            if gen != self.generation or cancel.is_set():
                if self._sandbox is None:  # cut while mounting: nothing else holds the card
                    self._teardown(graceful=False)
                return
            self._start_services(root, outcome)
            self.boots += 1
            self.booted_at = time.time()
            reachable = bool(getattr(outcome, "wifi_joined", False))
            self.phase = "up" if reachable else "unreachable"
            if not reachable:
                self.reason = getattr(outcome, "wifi_reason", "") or "Wi-Fi not joined"
            self._late_reboot = None
            if first and self.faults.reboot_after_up is not None:
                self._late_reboot = threading.Event()
            self._arm_faults(gen)
        self.say(f"{self.phase} after {time.monotonic() - started:.1f} s")

    def _prepare(self, root: Path, outcome: Any, first: bool) -> None:
        """Lay out the card's root state on the host (as the image + first boot would)."""
        if getattr(outcome, "userland", None):
            self._prepare_card_root(outcome)
            return
        users: dict[str, str] = dict(getattr(outcome, "users", {}) or {})
        self.user = getattr(outcome, "octoprint_user", None) or next(iter(users), "pi")
        homes: dict[str, str] = dict(getattr(outcome, "homes", {}) or {})
        self.home = homes.get(self.user) or f"/home/{self.user}"
        self.basedir = getattr(outcome, "basedir", None) or f"{self.home}/.octoprint"
        self.root = root
        home = self.host_path(self.home)
        etc = root / "etc"
        for d in (home, etc / "ssh", root / "opt" / "octopi", root / "var" / "log"):
            d.mkdir(parents=True, exist_ok=True)
        hostname = getattr(outcome, "hostname", None) or "octopi"
        (etc / "hostname").write_text(hostname + "\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
        (etc / "octopi_version").write_text(_octopi_version(outcome) + "\n")
        passwd = ["root:x:0:0:root:/root:/bin/bash"]
        group = ["root:x:0:", "sudo:x:27:" + ",".join(users)]
        names = [self.user] + [u for u in users if u != self.user]
        for i, name in enumerate(names):
            user_home = homes.get(name) or f"/home/{name}"
            passwd.append(f"{name}:x:{1000 + i}:{1000 + i}:,,,:{user_home}:/bin/bash")
            group.append(f"{name}:x:{1000 + i}:")
        (etc / "passwd").write_text("\n".join(passwd) + "\n")
        (etc / "group").write_text("\n".join(group) + "\n")
        keys = getattr(outcome, "ssh_keys", None) or {}
        if isinstance(keys, dict):
            for name, lines in keys.items():
                if lines:
                    ssh_dir = self.host_path(homes.get(name) or f"/home/{name}") / ".ssh"
                    ssh_dir.mkdir(parents=True, exist_ok=True)
                    (ssh_dir / "authorized_keys").write_text("\n".join(lines) + "\n")
        self.venv = _venv_inside(outcome, self.user)
        venv_host = self.host_path(self.venv)
        if not (root / ".venv-ready").exists():
            from rig.product.octoprint.constraints import requirements_for

            version = str(getattr(outcome, "octoprint_version", "") or "")
            if not version:
                raise InfraError(
                    "the card does not say which OctoPrint it has", where=f"device {self.spec.name}"
                )
            reqs = list(getattr(outcome, "octoprint_requirements", None) or [])
            reqs = reqs or requirements_for(version)
            base = base_venv(version, reqs, inside=self.venv, cache=self.venv_cache, say=self.say)
            copy_venv(base, venv_host)
            if self.venv != f"{self.home}/oprint":
                link = home / "oprint"
                if not link.is_symlink():
                    link.symlink_to(self.venv)
            (root / ".venv-ready").touch()
        basedir = self.host_path(self.basedir)
        if not (basedir / "config.yaml").exists():
            basedir.mkdir(parents=True, exist_ok=True)
            # what OctoPi ships in ~/.octoprint/config.yaml
            (basedir / "config.yaml").write_text(
                "server:\n"
                "  commands:\n"
                "    serverRestartCommand: sudo service octoprint restart\n"
                "    systemRestartCommand: sudo shutdown -r now\n"
                "    systemShutdownCommand: sudo shutdown -h now\n"
                "plugins:\n"
                "  discovery:\n"
                "    publicPort: 80\n"
            )
        lay_out_board(root, venv_host, basedir, self.faults)

    def _prepare_card_root(self, outcome: Any) -> None:
        """The card holds the whole device: mount its root; nothing is laid out beside it."""
        from rig.virtual.cardroot import mount_root

        users: dict[str, str] = dict(getattr(outcome, "users", {}) or {})
        self.user = getattr(outcome, "octoprint_user", None) or next(iter(users), "pi")
        self.home = self._home_of(self.user)
        self.basedir = getattr(outcome, "basedir", None) or f"{self.home}/.octoprint"
        self.venv = _venv_inside(outcome, self.user)
        at = self.devices_dir / "card-root"
        mount_root(self.card(), at)
        with self._lock:
            self._card_root = self.root = at
        if not (at / self.venv.lstrip("/") / "bin" / "octoprint").exists():
            raise InfraError(
                f"the card has no OctoPrint in {self.venv}", where=f"device {self.spec.name}"
            )
        # what the board shows its software (model, throttle flags), for this boot's faults
        lay_out_board(at, at / self.venv.lstrip("/"), self.host_path(self.basedir), self.faults)

    def host_path(self, inside: str) -> Path:
        """Where a path of the device lies on the host (only for the bound directories)."""
        assert self.root is not None
        if self._card_root is not None:
            return self._card_root / inside.lstrip("/")
        for prefix, sub in (
            ("/home/", "home/"),
            ("/opt/octopi/", "opt/octopi/"),
            ("/etc/", "etc/"),
        ):
            if inside.startswith(prefix):
                return self.root / sub / inside[len(prefix) :]
        raise ValueError(f"{inside} is not on the card's writable state")

    def _home_of(self, user: str) -> str:
        homes = getattr(self.outcome, "homes", {}) or {}
        return homes.get(user) or f"/home/{user}"

    def _env(self, user: str) -> dict[str, str]:
        if self._card_root is not None:
            from rig.virtual.hostpip import host_pip

            pip_env = host_pip().env  # its files are bound under /run/rig-host
        else:
            pip_env = pip_environment()
        return {
            "HOME": self._home_of(user),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
            "PATH": PATH,
            "LANG": "C.UTF-8",
            **pip_env,
        }

    # -- services -----------------------------------------------------------------

    def _start_services(self, root: Path, outcome: Any) -> None:
        self._control_dir = Path(tempfile.mkdtemp(prefix=f"rigv-{self.spec.name}-"))
        if self._card_root is not None:
            from rig.virtual.hostpip import host_pip

            self._control_dir.chmod(0o755)  # uid 1000 reaches the shims' socket
            box = Sandbox(
                name=self.spec.name,
                root=root,
                hostname=getattr(outcome, "hostname", None) or "octopi",
                mounts={"/run/rig": self._control_dir},
                rootfs=self._card_root,
                host_binds=host_pip().binds,
            )
        else:
            box = self._state_sandbox(root, outcome)
        box.start()
        self._sandbox = box
        self._start_control()
        self._service_start()  # under the device lock already (boot)
        self._start_network(root, outcome)

    def _state_sandbox(self, root: Path, outcome: Any) -> Sandbox:
        return Sandbox(
            name=self.spec.name,
            root=root,
            hostname=getattr(outcome, "hostname", None) or "octopi",
            mounts={
                "/home": root / "home",
                "/etc": root / "etc",
                "/opt/octopi": root / "opt" / "octopi",
                "/var": root / "var",
                "/run/rig": self._control_dir,
            },
        )

    def _start_network(self, root: Path, outcome: Any) -> None:
        if not getattr(outcome, "wifi_joined", False):
            return
        self._front = HttpFront(
            self.spec.name,
            self.spec.host,
            self.spec.http_port,
            (backend_address(self.spec.host), OCTOPRINT_PORT),
        )
        self._front.start()
        if getattr(outcome, "ssh_enabled", False):
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
                self._check_password,
                self._authorized_keys,
                self._run_session,
            )
            self._sshd.start()

    def _check_password(self, user: str, password: str) -> bool:
        from rig.virtual.firstboot import check_password

        if not getattr(self.outcome, "ssh_password_auth", True):
            return False
        hashed = (getattr(self.outcome, "users", {}) or {}).get(user)
        return bool(hashed) and check_password(hashed, password)

    def _authorized_keys(self, user: str) -> list[paramiko.PKey]:
        if self.root is None or user not in (getattr(self.outcome, "users", {}) or {}):
            return []
        path = self.host_path(self._home_of(user)) / ".ssh" / "authorized_keys"
        keys: list[paramiko.PKey] = []
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and not line.startswith("#"):
                    with contextlib.suppress(Exception):
                        import base64

                        keys.append(
                            paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
                        )
        return keys

    def _run_session(
        self, user: str, argv: list[str], channel: paramiko.Channel, pty: Pty | None = None
    ) -> None:
        box = self._sandbox
        try:
            if box is None or box.pid is None:
                channel.close()
                return
            env = self._env(user)
            if pty is not None:
                env["TERM"] = pty.term
                rc = self._run_on_pty(box, argv, env, user, channel, pty)
            else:
                cmd = box.command(argv, cwd=self._home_of(user), env=env)
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                rc = pump_process(proc, channel)
            if box.pid is None:  # power cut: the connection just drops
                channel.close()
                return
            channel.send_exit_status(rc if rc is not None and rc >= 0 else 128 - (rc or 0))
            channel.shutdown_write()
            channel.close()
        except (OSError, EOFError, paramiko.SSHException, InfraError) as e:  # client gone
            log.warning("%s: session ended: %s", self.spec.name, e)
            with contextlib.suppress(Exception):
                channel.close()

    def _run_on_pty(
        self,
        box: Sandbox,
        argv: list[str],
        env: dict[str, str],
        user: str,
        channel: paramiko.Channel,
        pty: Pty,
    ) -> int | None:
        """A login with a terminal: the pty becomes the session's controlling terminal."""
        import fcntl
        import termios

        master, slave = _device_pty(box)
        pty.master = master
        pty.apply_size()
        try:
            proc = subprocess.Popen(
                box.command(argv, cwd=self._home_of(user), env=env),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            )
        finally:
            os.close(slave)
        try:
            return pump_pty(proc, master, channel)
        finally:
            pty.master = None
            os.close(master)

    # -- the octoprint service (what systemd does on OctoPi) ----------------------

    def _service(self, action: str) -> tuple[int, str]:
        """One systemd job at a time; the device lock is held only for state changes,
        so a power cut never waits for OctoPrint to stop."""
        with self._svc_lock:
            if action in ("stop", "restart"):
                with self._lock:
                    proc = self._detach_service()
                _terminate(proc)
                if action == "stop":
                    return 0, ""
            if action in ("start", "restart"):
                with self._lock:
                    return self._service_start()
            if action in ("status", "is-active"):
                return self._service_status(action)
        return 1, f"unknown action {action}\n"

    def _service_start(self) -> tuple[int, str]:
        if self._octoprint is not None and self._octoprint.poll() is None:
            return 0, ""
        box, root = self._sandbox, self.root
        if box is None or root is None:
            return 1, "device is not running\n"
        argv = [
            f"{self.venv}/bin/octoprint",
            "serve",
            "--host",
            backend_address(self.spec.host),
            "--port",
            str(OCTOPRINT_PORT),
        ]
        if self.basedir != f"{self.home}/.octoprint":
            argv += ["--basedir", self.basedir]
        logfile = open(root / "var" / "log" / "octoprint.service.log", "ab")  # noqa: SIM115
        try:
            self._octoprint = subprocess.Popen(
                box.command(argv, cwd=self.home, env=self._env(self.user)),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        self._service_gen += 1
        threading.Thread(
            target=self._watch_service,
            args=(self._octoprint, self._service_gen, self.generation),
            daemon=True,
        ).start()
        return 0, ""

    def _watch_service(self, proc: subprocess.Popen[bytes], sgen: int, gen: int) -> None:
        """Restart=always: OctoPrint exiting on its own is started again a second later."""
        proc.wait()
        time.sleep(RESTART_SEC)
        with self._lock:
            if sgen == self._service_gen and gen == self.generation and self._sandbox:
                self.say(f"octoprint exited ({proc.returncode}); restarting")
                self._octoprint = None
                self._service_start()

    def _detach_service(self) -> subprocess.Popen[bytes] | None:
        proc = self._octoprint
        self._service_gen += 1
        self._octoprint = None
        return proc

    def _service_stop(self) -> None:
        _terminate(self._detach_service())

    def octoprint_pid(self) -> int | None:
        """Host pid of the OctoPrint process (the child of nsenter), if it runs."""
        proc = self._octoprint
        if proc is None or proc.poll() is not None:
            return None
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                children = (task / "children").read_text().split()
                if children:
                    return int(children[0])
        return None

    def _service_status(self, action: str) -> tuple[int, str]:
        pid = self.octoprint_pid()
        running = self._octoprint is not None and self._octoprint.poll() is None
        if action == "is-active":
            return (0, "active\n") if running else (3, "inactive\n")
        inner = _ns_pid(pid) if pid else None
        text = (
            "● octoprint.service - The snappy web interface for your 3D printer\n"
            "     Loaded: loaded (/etc/systemd/system/octoprint.service; enabled)\n"
        )
        if running:
            text += f"     Active: active (running)\n   Main PID: {inner or '?'} (octoprint)\n"
            return 0, text
        return 3, text + "     Active: inactive (dead)\n"

    # -- control socket: the shims' systemd ---------------------------------------

    def _start_control(self) -> None:
        assert self._control_dir is not None
        path = self._control_dir / "control.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        if self._card_root is not None:
            path.chmod(0o666)
        sock.listen(8)
        self._control = sock
        threading.Thread(target=self._control_loop, args=(sock,), daemon=True).start()

    def _control_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._control_request, args=(conn,), daemon=True).start()

    def _control_request(self, conn: socket.socket) -> None:
        after: Callable[[], None] | None = None
        try:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            argv = [str(a) for a in json.loads(data or b"[]")]
            rc, out, err, after = self._control_command(argv)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"rc": rc, "out": out, "err": err}).encode())
        except (OSError, ValueError) as e:
            log.debug("%s: control request failed: %s", self.spec.name, e)
        finally:
            conn.close()
        if after is not None:
            after()

    def _control_command(self, argv: list[str]) -> tuple[int, str, str, Callable[[], None] | None]:
        cmd, args = (argv[0], argv[1:]) if argv else ("", [])
        if cmd in ("reboot",) or (cmd == "shutdown" and "-r" in args):
            return 0, "", "", lambda: self._soft("reboot")
        if cmd in ("poweroff", "halt") or cmd == "shutdown":
            return 0, "", "", lambda: self._soft("halt")
        if cmd == "service":
            if len(args) < 2:
                return (
                    1,
                    "",
                    "Usage: service < option > | --status-all | [ service_name [ command ] ]\n",
                    None,
                )
            unit, action = args[0], args[1]
        elif cmd == "systemctl" and args[:1] == ["is-system-running"]:
            return self._system_state(wait="--wait" in args)
        elif cmd == "systemctl":
            words = [a for a in args if not a.startswith("-")]
            if len(words) < 2:
                return 1, "", "systemctl: too few arguments\n", None
            action, unit = words[0], words[1]
        else:
            return 1, "", f"{cmd}: not supported on this virtual Pi\n", None
        unit = unit.removesuffix(".service")
        if unit != "octoprint":
            return 5 if cmd == "systemctl" else 1, "", f"Unit {unit}.service not found.\n", None
        if action not in ("start", "stop", "restart", "status", "is-active"):
            return 1, "", f"Unknown operation '{action}'.\n", None
        rc, out = self._service(action)
        return rc, out, "", None

    def _system_state(self, wait: bool) -> tuple[int, str, str, None]:
        """`systemctl is-system-running [--wait]`: starting while a first-boot reboot is
        still to come (with --wait: until it begins, then stopping), else running."""
        pending = self._late_reboot
        if pending is None or (pending.is_set() and not wait):
            return (0, "running\n", "", None) if pending is None else (1, "stopping\n", "", None)
        if not wait:
            return 1, "starting\n", "", None
        pending.wait(timeout=600)
        return 1, "stopping\n", "", None

    def _soft(self, what: str) -> None:
        """`sudo reboot` / `shutdown -h`: services stop in order, then the board resets or halts."""
        with self._svc_lock:
            with self._lock:
                if self._sandbox is None:
                    return
                gen = self.generation
                proc = self._detach_service()
            _terminate(proc)  # outside the device lock: a power cut may still come first
        with self._lock:
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
        pending = self._late_reboot
        if pending is not None:

            def reboot() -> None:
                pending.set()
                self.say("first boot: rebooting once more, sshd was already up (configured)")
                # outside the timer's device lock: _soft takes the service lock first
                threading.Thread(target=self._soft, args=("reboot",), daemon=True).start()

            later(self.faults.reboot_after_up, reboot)

    def _if_current(self, gen: int, fn: Callable[[], None]) -> None:
        with self._lock:
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
            self._service_stop()
        self._service_gen += 1
        if self._sandbox is not None:
            self._sandbox.kill()
            self._sandbox = None
        if self._octoprint is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._octoprint.wait(timeout=5)
            self._octoprint = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None
        if self._card_root is not None:
            from rig.virtual.cardroot import unmount_root

            unmount_root(self._card_root)  # every process of the device is gone
            self._card_root = None
        self.booted_at = None

    # -- status ---------------------------------------------------------------------

    def installed_octoprint(self) -> str | None:
        """The OctoPrint version really installed in the venv now (it changes on update)."""
        if self.root is None:
            return None
        try:
            venv = self.host_path(self.venv)
        except ValueError:
            return None
        for info in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            if name.lower() == "octoprint":
                return version
        return None

    def status(self) -> dict[str, Any]:
        # no lock: a snapshot of plain attributes, never blocked by a stopping service
        box = self._sandbox
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
            "card_state": str(self.root) if self.root else None,
        }


def _ns_pid(host_pid: int) -> int | None:
    """The pid a process has inside its pid namespace (last NSpid field)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return None


def _group_members(pgid: int) -> list[int]:
    """Host pids in process group ``pgid`` (the service's "cgroup")."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """systemd's stop: SIGTERM, wait, then SIGKILL to what is left of the service."""
    if proc is None or proc.poll() is not None:
        return
    # SIGTERM to every process of the service but nsenter, which must stay to reap
    # OctoPrint (it would exit on SIGTERM at once and orphan it)
    for pid in _group_members(proc.pid):
        if pid != proc.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    # KillMode=control-group: whatever the service started (pip) goes too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


TIOCGPTPEER = 0x5441  # Linux >= 4.13: the slave of a master, whatever mount it lives in
TIOCSPTLCK = 0x40045431


def _device_pty(box: Sandbox) -> tuple[int, int]:
    """A terminal from the device's own /dev/pts (so `tty` names it inside), else the host's."""
    import fcntl
    import struct

    try:
        master = os.open(f"/proc/{box.pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, int(slave)
