"""A virtual Pi's systemd, as far as OctoPi's users meet it.

The ``octoprint`` service (what ``/etc/systemd/system/octoprint.service`` does on
OctoPi): the real OctoPrint runs in the device's sandbox with ``Restart=always``,
one job at a time, stopped with SIGTERM then SIGKILL to its whole process group
(``KillMode=control-group``: a pip it started goes too). The control socket is
what the device's ``service``/``systemctl``/``reboot``/``shutdown`` shims talk to:
start/stop/restart/status of the unit, ``is-system-running [--wait]``, reboot and
halt (handed back to the device's power state machine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rig.virtual.device import VirtualPi

log = logging.getLogger(__name__)

OCTOPRINT_PORT = 5000  # where OctoPi runs OctoPrint, behind haproxy
STOP_TIMEOUT = 10.0  # systemd's TimeoutStopSec is 90 s; OctoPrint stops in ~1 s
RESTART_SEC = 1.0
Reply = tuple[int, str, str, Callable[[], None] | None]  # rc, stdout, stderr, then do this


def backend_address(host: str) -> str:
    """OctoPrint's own address behind the front: 127.a.b.c -> 127.a.(b+1).c."""
    parts = host.split(".")
    if len(parts) == 4 and parts[0] == "127" and int(parts[2]) < 255:
        return f"127.{parts[1]}.{int(parts[2]) + 1}.{parts[3]}"
    return "127.0.0.1"


class FakeSystemd:
    """The octoprint unit and the shims' control socket of one device.

    The device's lock guards the state both share (sandbox, generation); this
    object's own ``jobs`` lock makes one systemd job at a time, and is taken
    before the device's, so a power cut never waits for OctoPrint to stop.
    """

    def __init__(self, device: VirtualPi) -> None:
        self._pi = device
        self.jobs = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._gen = 0  # bumped whenever the running service is replaced or let go
        self._control: socket.socket | None = None
        self.control_dir: Path | None = None

    # -- the octoprint unit ---------------------------------------------------------

    def job(self, action: str) -> tuple[int, str]:
        """``systemctl <action> octoprint``."""
        pi = self._pi
        with self.jobs:
            if action in ("stop", "restart"):
                with pi.lock:
                    proc = self.detach()
                terminate(proc)
                if action == "stop":
                    return 0, ""
            if action in ("start", "restart"):
                with pi.lock:
                    return self.start()
            if action in ("status", "is-active"):
                return self._status(action)
        return 1, f"unknown action {action}\n"

    def start(self) -> tuple[int, str]:
        """Start OctoPrint in the sandbox (the device's lock is held)."""
        pi = self._pi
        if self._proc is not None and self._proc.poll() is None:
            return 0, ""
        box, layout = pi.sandbox, pi.layout
        if box is None or layout is None:
            return 1, "device is not running\n"
        argv = [
            f"{layout.venv}/bin/octoprint",
            "serve",
            "--host",
            backend_address(pi.spec.host),
            "--port",
            str(OCTOPRINT_PORT),
        ]
        if layout.basedir != f"{layout.home}/.octoprint":
            argv += ["--basedir", layout.basedir]
        logfile = open(layout.root / "var" / "log" / "octoprint.service.log", "ab")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                box.command(
                    argv,
                    cwd=layout.home,
                    env=layout.environment(layout.user),
                    group=box.cgroup.leaf("octoprint") if box.cgroup else None,
                ),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logfile.close()
        self._gen += 1
        threading.Thread(
            target=self._watch, args=(self._proc, self._gen, pi.generation), daemon=True
        ).start()
        return 0, ""

    def _watch(self, proc: subprocess.Popen[bytes], sgen: int, gen: int) -> None:
        """Restart=always: OctoPrint exiting on its own is started again a second later."""
        proc.wait()
        time.sleep(RESTART_SEC)
        pi = self._pi
        with pi.lock:
            if sgen == self._gen and gen == pi.generation and pi.sandbox:
                pi.say(f"octoprint exited ({proc.returncode}); restarting")
                self._proc = None
                self.start()

    def detach(self) -> subprocess.Popen[bytes] | None:
        """Let go of the running service (nobody restarts it); the caller stops it."""
        proc = self._proc
        self._gen += 1
        self._proc = None
        return proc

    def stop(self) -> None:
        terminate(self.detach())

    def forget(self) -> None:
        """The sandbox is gone (power cut): reap what is left of the service."""
        self._gen += 1
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def octoprint_pid(self) -> int | None:
        """Host pid of the OctoPrint process (the child of nsenter), if it runs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                children = (task / "children").read_text().split()
                if children:
                    return int(children[0])
        return None

    def _status(self, action: str) -> tuple[int, str]:
        pid = self.octoprint_pid()
        running = self._proc is not None and self._proc.poll() is None
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

    # -- the control socket -----------------------------------------------------------

    def open_control(self, shared: bool) -> Path:
        """The directory (bound at /run/rig inside) holding the shims' socket;
        ``shared``: uid 1000 inside must reach it (a card-rooted device)."""
        self.control_dir = Path(tempfile.mkdtemp(prefix=f"rigv-{self._pi.spec.name}-"))
        if shared:
            self.control_dir.chmod(0o755)
        return self.control_dir

    def serve_control(self, shared: bool) -> None:
        assert self.control_dir is not None
        path = self.control_dir / "control.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        if shared:
            path.chmod(0o666)
        sock.listen(8)
        self._control = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def close_control(self) -> None:
        import shutil

        if self._control is not None:
            self._control.close()
            self._control = None
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            self.control_dir = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._request, args=(conn,), daemon=True).start()

    def _request(self, conn: socket.socket) -> None:
        after: Callable[[], None] | None = None
        try:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            argv = [str(a) for a in json.loads(data or b"[]")]
            rc, out, err, after = self.command(argv)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"rc": rc, "out": out, "err": err}).encode())
        except (OSError, ValueError) as e:
            log.debug("%s: control request failed: %s", self._pi.spec.name, e)
        finally:
            conn.close()
        if after is not None:
            after()

    def command(self, argv: list[str]) -> Reply:
        """One shim's command line, as systemd and sysvinit's ``service`` answer it."""
        pi = self._pi
        cmd, args = (argv[0], argv[1:]) if argv else ("", [])
        if cmd in ("reboot",) or (cmd == "shutdown" and "-r" in args):
            return 0, "", "", lambda: pi.soft("reboot")
        if cmd in ("poweroff", "halt") or cmd == "shutdown":
            return 0, "", "", lambda: pi.soft("halt")
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
        rc, out = self.job(action)
        return rc, out, "", None

    def _system_state(self, wait: bool) -> Reply:
        """`systemctl is-system-running [--wait]`: starting while a first-boot reboot is
        still to come (with --wait: until it begins, then stopping), else running."""
        pending = self._pi.late_reboot
        if pending is None or (pending.is_set() and not wait):
            return (0, "running\n", "", None) if pending is None else (1, "stopping\n", "", None)
        if not wait:
            return 1, "starting\n", "", None
        pending.wait(timeout=600)
        return 1, "stopping\n", "", None


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


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
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
