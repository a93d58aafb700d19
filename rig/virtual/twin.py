"""The virtual rig's supervisor: boots and kills the virtual Pis as power and muxes change.

It watches the virtual hardware state (``VirtualHardware.version()`` every
100 ms): a device whose hub port is powered while its card is on the DUT side
boots; power off, or the card switched away, is a power cut. One supervisor
per state directory runs as a daemon (``rig twin up``, or ``ensure_twin`` from
the runner and ``rig power``), holds an flock on its pid file for its whole
life (so "is it running" never trusts a stale pid), and writes the devices'
status to ``twin/status.json`` for ``rig twin status`` and ``rig devices``.

The sandboxes die with it (bwrap ``--die-with-parent``), so even a killed
supervisor leaves no device processes behind; ``rig twin down`` also detaches
the loop devices the virtual muxes made.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rig.errors import InfraError, RigError
from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config

log = logging.getLogger(__name__)

POLL = 0.1
STATUS_EVERY = 0.5
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0


def twin_dir(config: Any) -> Path:
    return Path(config.paths.state) / "virtual" / "twin"


def access_point(config: Any) -> Any:
    """The virtual Wi-Fi the Pis can join: ``virtual.access_point``, else the config's Wi-Fi."""
    from rig.virtual.firstboot import AccessPoint

    raw = (config.sections.get("virtual") or {}).get("access_point") or {}
    return AccessPoint(
        ssid=raw.get("ssid", config.wifi.ssid),
        psk=str(raw.get("psk", config.wifi.psk.reveal())),
        country=raw.get("country", config.wifi.country),
    )


class Twin:
    """All virtual Pis of one config, driven by the virtual hardware state."""

    def __init__(self, config: Any, *, venv_cache: Path | None = None) -> None:
        from rig.virtual.hw.state import VirtualHardware

        self.config = config
        self.hw = VirtualHardware.from_config(config)
        self.settings = settings_from_config(config)
        self.dir = twin_dir(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        ap = access_point(config)
        from rig.virtual.pi3 import for_settings

        throttle = for_settings(self.settings, self.hw.state_dir, sweep=True)
        self.devices: dict[str, VirtualPi] = {}
        for name, dev in config.devices.items():
            spec = DeviceSpec.from_config(dev)
            self.devices[name] = VirtualPi(
                spec,
                card=lambda serial=spec.serial: self.hw.card_path(serial),
                state_dir=self.hw.state_dir,
                ap=ap,
                settings=self.settings,
                faults=self.settings.faults_for(name),
                venv_cache=venv_cache,
                say=lambda msg, name=name: log.info("%s: %s", name, msg),
                throttle=throttle,
            )
        self._wiring: dict[str, tuple[bool, str]] = {}
        self.stop_event = threading.Event()

    def step(self) -> None:
        """Bring every device in line with its port power and mux side."""
        snap = self.hw.snapshot()
        for name, pi in self.devices.items():
            spec = pi.spec
            powered = bool(snap["ports"].get(spec.location, {}).get(str(spec.port), False))
            side = str(snap["muxes"].get(spec.serial, {}).get("side", "off"))
            self._wiring[name] = (powered, side)
            if powered and side == "dut":
                pi.power_on()
            elif pi.phase != "off":
                pi.power_cut()

    def status(self) -> dict[str, Any]:
        devices = []
        for name, pi in self.devices.items():
            powered, side = self._wiring.get(name, (False, "off"))
            devices.append({**pi.status(), "powered": powered, "side": side})
        return {"pid": os.getpid(), "updated": time.time(), "devices": devices}

    def write_status(self) -> None:
        path = self.dir / "status.json"
        tmp = path.with_name(f".status.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.status(), indent=2))
        os.replace(tmp, path)

    def run(self) -> None:
        """Poll until ``stop_event``; then cut power to every device."""
        last = -1
        last_status = 0.0
        try:
            while not self.stop_event.is_set():
                version = self.hw.version()
                if version != last:
                    last = version
                    self.step()
                    last_status = 0.0
                if time.monotonic() - last_status >= STATUS_EVERY:
                    self.write_status()
                    last_status = time.monotonic()
                self.stop_event.wait(POLL)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for pi in self.devices.values():
            with contextlib.suppress(Exception):
                pi.power_cut()
        with contextlib.suppress(OSError):
            self.write_status()


# -- the daemon -----------------------------------------------------------------


def _pidfile(config: Any) -> Path:
    return twin_dir(config) / "twin.pid"


def running_pid(config: Any) -> int | None:
    """The supervisor's pid if one holds the lock for this state directory."""
    path = _pidfile(config)
    if not path.exists():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def ensure_twin(config: Any) -> None:
    """Start the virtual rig's supervisor for ``config`` unless it already runs (idempotent)."""
    if running_pid(config):
        return
    from rig.virtual.sandbox import require_sandbox

    settings_from_config(config)  # a config error is the caller's, with its exit code
    require_sandbox()
    _refuse_foreign_devices(config)
    d = twin_dir(config)
    d.mkdir(parents=True, exist_ok=True)
    logfile = d / "twin.log"
    cmd = [sys.executable, "-m", "rig.virtual.twin"]
    if config.source:
        cmd += ["--config", str(config.source)]
    cmd += ["--state", str(config.paths.state)]
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(config.source).parent) if config.source else None,
        )
    # reap the daemon when it ends, should this (long-lived) caller outlive it
    threading.Thread(target=proc.wait, name="twin-reaper", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _ready(config):  # ours, or another caller's that won the race
            return
        rc = proc.poll()
        if rc is not None and not running_pid(config):
            tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
            raise InfraError(
                f"the virtual rig did not start (exit {rc}): " + " | ".join(tail),
                where=str(logfile),
            )
        time.sleep(0.05)
    raise InfraError(
        f"the virtual rig did not report ready within {START_TIMEOUT:.0f} s", where=str(logfile)
    )


def _refuse_foreign_devices(config: Any) -> None:
    """Another virtual rig answering at our devices' addresses would take our SSH logins
    and updates: say so instead of silently talking to the wrong device."""
    import socket

    for name, dev in config.devices.items():
        if not dev.host:
            continue
        try:
            with socket.create_connection((dev.host, dev.ssh_port), timeout=0.3):
                pass
        except OSError:
            continue
        raise InfraError(
            f"{dev.host}:{dev.ssh_port} (device {name}) already answers: another virtual rig "
            "is running on these addresses",
            where=config.where,
            hint="stop it with `rig --config <its rig.yaml> twin down`, or give this rig's "
            "devices other addresses (host: 127.x.y.z)",
        )


def _ready(config: Any) -> bool:
    """A supervisor holds the lock and has written its status (so its devices exist)."""
    pid = running_pid(config)
    status = read_status(config)
    return bool(pid and status and status.get("pid") == pid)


def stop_twin(config: Any) -> list[str]:
    """Stop the supervisor (its devices lose power) and detach the virtual muxes' loops."""
    pid = running_pid(config)
    if pid and pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while running_pid(config) and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(config):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # the lock goes a moment before the process: wait until it is gone (or a zombie)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
    from rig.virtual.cardroot import unmount_root
    from rig.virtual.hw.state import cleanup

    removed = []
    # a supervisor killed outright could not unmount its devices' cards (their
    # processes died with it, so nothing holds them now)
    for at in sorted((Path(config.paths.state) / "virtual" / "devices").glob("*/card-root")):
        if os.path.ismount(at):
            unmount_root(at)
            removed.append(str(at))
    removed += cleanup(Path(config.paths.state) / "virtual")
    if settings_from_config(config).throttled:  # pi3: the host group, once nobody is in it
        from rig.virtual import pi3, throttle

        with contextlib.suppress(RigError):
            cg = throttle.detect()
            rel = pi3.host_rel(Path(config.paths.state) / "virtual")
            held = cg.pids(rel)  # a rig process still running (it writes cards) keeps it
            if any(d.is_dir() for d in cg.dirs(rel)) and not held and throttle.remove(cg, rel):
                removed.append(f"cgroup {rel}")
    (twin_dir(config) / "status.json").unlink(missing_ok=True)
    return removed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_status(config: Any) -> dict[str, Any] | None:
    try:
        return json.loads((twin_dir(config) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """The daemon: ``python -m rig.virtual.twin [--config FILE] [--state DIR]``."""
    from dataclasses import replace

    from rig.config import load_config

    parser = argparse.ArgumentParser(prog="rig.virtual.twin")
    parser.add_argument("--config")
    parser.add_argument("--state")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # port probes (connect, close) make paramiko log banner tracebacks; sshd logs its own
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    try:
        config = load_config(args.config, search=False)
        if args.state:
            config = replace(config, paths=replace(config.paths, state=Path(args.state)))
        d = twin_dir(config)
        d.mkdir(parents=True, exist_ok=True)
        lock = open(_pidfile(config), "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("a virtual rig already runs for %s", config.paths.state)
            return 0
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        twin = Twin(config)
        signal.signal(signal.SIGTERM, lambda *_: twin.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: twin.stop_event.set())
        twin.write_status()  # ensure_twin waits for this
        log.info("virtual rig up: %s", ", ".join(twin.devices))
        twin.run()
        log.info("virtual rig down")
        return 0
    except RigError as e:
        log.error("%s", e)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
