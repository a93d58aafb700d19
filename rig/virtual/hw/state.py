"""The virtual rig's hardware state: hub port power, mux sides, card images.

Several processes share it (the CLI, the scheduler, the virtual Pi supervisor),
so it lives in one JSON file guarded by ``flock`` and replaced atomically. The
emulated hub and muxes read and write it; the virtual Pis poll ``version()``
and boot from a card only while their port is powered and the card is on the
DUT side.

A card switched to the host appears as a block device: a loop device when we
are root and ``/dev/loop-control`` works, else the image file itself. A
``write_error_at`` fault puts a device-mapper ``error`` target behind that
offset so writes there really fail with EIO.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rig.errors import ConfigError, InfraError

log = logging.getLogger(__name__)

SIDES = ("host", "dut", "off")
DEFAULT_CARD_SIZE = 2 * 1024**3
# a powered-off virtual Pi unmounts its card within a second, unless the unmount must
# first write back what the device just wrote (a pip update: hundreds of MB on a busy disk)
RELEASE_TIMEOUT = 120.0
SECTOR = 512


def _run(*cmd: str, timeout: float = 30.0) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"{cmd[0]} failed: {e}", where="virtual hardware") from e
    if proc.returncode != 0:
        raise InfraError(
            f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
            where="virtual hardware",
        )
    return proc.stdout.strip()


def _root_can_open(node: str) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        fd = os.open(node, os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def loop_available() -> bool:
    """Loop devices need root and a working /dev/loop-control."""
    return _root_can_open("/dev/loop-control")


def dm_available() -> bool:
    """device-mapper needs root and the dm driver behind /dev/mapper/control."""
    return _root_can_open("/dev/mapper/control")


def power_key(power: Any) -> tuple[str, int]:
    """Where VirtualHardware keeps a device's power: (location, port) for ``port_power``.

    usb-hub ports live under the hub's location ("1-1"), YKUSH ports under
    "ykush:<serial>"; a ``command`` switch has no emulated hardware.
    """
    if power.driver == "ykush":
        return f"ykush:{power.serial}", int(power.port or 0)
    return str(getattr(power, "location", "") or ""), int(power.port or 0)


def write_fault_available() -> bool:
    """Whether ``write_error_at`` can be applied here (loop devices plus device-mapper or FUSE)."""
    return loop_available() and (dm_available() or Path("/dev/fuse").exists())


def _loop_backing(loop: str) -> str | None:
    name = Path(loop).name
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


def _mounted_loops(card: str) -> list[str]:
    """Loop devices over ``card`` other than a mux's: a virtual Pi's mounted card root.

    A loop device stays attached as long as its file system is alive, also after a
    lazy unmount, whose final write-back could still land on the card: so every
    such loop counts, mounted or not. (The mux's own loop is detached before this
    is asked.)
    """
    loops: list[str] = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip() == card:
                loops.append(f"/dev/{backing.parts[3]}")
        except OSError:
            continue
    return sorted(loops)


def _flush(dev: str) -> None:
    try:
        fd = os.open(dev, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unmount(mnt: Path) -> None:
    try:
        mounts = Path("/proc/self/mountinfo").read_text().split("\n")
    except OSError:
        return
    if any(len(line.split()) > 4 and line.split()[4] == str(mnt) for line in mounts):
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _stop(pid: int) -> None:
    """End a FUSE server we started (it exits by itself once unmounted)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: check it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class VirtualHardware:
    """Persistent, process-shared state of the virtual hub ports and muxes."""

    def __init__(
        self,
        state_dir: Path,
        *,
        faults: dict[str, dict[str, Any]] | None = None,
        card_size: int = DEFAULT_CARD_SIZE,
        card_sizes: dict[str, int] | None = None,
        use_loop: bool | None = None,
        mux_limit: Any = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        # pi3 profile: the card on the host side at a USB 2.0 SD mux's rates (a pi3.IoLimit)
        self.mux_limit = mux_limit
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.file = self.state_dir / "hardware.json"
        self._lockfile = self.state_dir / "hardware.lock"
        self.faults = faults or {}  # keyed by mux serial
        self.card_size = card_size
        self.card_sizes = card_sizes or {}  # keyed by mux serial: cards of another size
        self.use_loop = loop_available() if use_loop is None else use_loop
        # dm names are global to the machine: tie them to this state dir
        self._tag = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]

    @classmethod
    def from_config(cls, config: Any) -> VirtualHardware:
        """Built from a RigConfig: faults are configured per device, stored per mux serial."""
        section = config.sections.get("virtual", {}) or {}
        by_device = section.get("faults", {}) or {}
        faults: dict[str, dict[str, Any]] = {}
        for name, fault in by_device.items():
            if name in config.devices and isinstance(fault, dict):
                faults[config.devices[name].mux.serial] = fault
        size = int(section.get("card_size", DEFAULT_CARD_SIZE))
        sizes = {
            config.devices[name].mux.serial: int(n)
            for name, n in (section.get("card_sizes", {}) or {}).items()
            if name in config.devices
        }
        mux_limit = None
        if section.get("profile") == "pi3":
            from rig.virtual.pi3 import MUX, scaled

            mux_limit = scaled(MUX, float(section.get("time_scale", 1.0)))
        return cls(
            config.paths.state / "virtual",
            faults=faults,
            card_size=size,
            card_sizes=sizes,
            mux_limit=mux_limit,
        )

    # -- the shared JSON file -------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, write: bool) -> Iterator[dict[str, Any]]:
        with open(self._lockfile, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            data = self._read()
            before = json.dumps(data, sort_keys=True)
            yield data
            if write and json.dumps(data, sort_keys=True) != before:
                data["version"] = int(data.get("version", 0)) + 1
                tmp = self.file.with_name(f".hardware.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
                os.replace(tmp, self.file)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as e:
            raise InfraError(
                f"virtual hardware state is unreadable: {e}",
                where=str(self.file),
                hint="run `rig doctor`; deleting the file resets the virtual rig",
            ) from e
        data.setdefault("version", 0)
        data.setdefault("ports", {})
        data.setdefault("muxes", {})
        return data

    def version(self) -> int:
        with self._locked(write=False) as data:
            return int(data["version"])

    def snapshot(self) -> dict[str, Any]:
        """The whole state (for `rig devices`, the virtual Pi supervisor and tests)."""
        with self._locked(write=False) as data:
            return data

    # -- hub ports --------------------------------------------------------------

    def port_power(self, location: str, port: int) -> bool:
        with self._locked(write=False) as data:
            return bool(data["ports"].get(location, {}).get(str(port), False))

    def set_port_power(
        self, location: str, port: int, on: bool, *, hub_halves: bool = True
    ) -> None:
        """Set the port's VBUS. Set from outside the hub (tests, faults), both halves of an
        emulated USB3 hub follow, so GET_STATUS agrees; the hub itself passes hub_halves=False."""
        with self._locked(write=True) as data:
            data["ports"].setdefault(location, {})[str(port)] = bool(on)
            if hub_halves:
                for half in data.get("extra", {}).get(f"hub:{location}", {}).values():
                    if isinstance(half, dict) and str(port) in half:
                        half[str(port)] = bool(on)

    # -- device-private registers (hub halves, GPIO expanders) --------------------

    def extra(self, key: str) -> dict[str, Any]:
        with self._locked(write=False) as data:
            return dict(data.get("extra", {}).get(key, {}))

    def update_extra(self, key: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read-modify-write one device's registers under the lock; returns the new value."""
        with self._locked(write=True) as data:
            current = data.setdefault("extra", {}).setdefault(key, {})
            fn(current)
            return json.loads(json.dumps(current))

    # -- muxes ------------------------------------------------------------------

    def mux_side(self, serial: str) -> str:
        with self._locked(write=False) as data:
            return str(data["muxes"].get(serial, {}).get("side", "off"))

    def set_mux_side(self, serial: str, side: str) -> None:
        if side not in SIDES:
            raise ConfigError(f"mux side must be one of {SIDES}, not {side!r}", where=serial)
        with self._locked(write=True) as data:
            mux = data["muxes"].setdefault(serial, {"side": "off"})
            if mux.get("side") == side and (side != "host" or self._attached_ok(serial, mux)):
                return
            self._detach(mux)
            if side != "host":
                mux["side"] = side
                return
            mux["side"] = "off"  # the card leaves the DUT before the host sees it
        # a virtual Pi runs from its card's mounted root: the host may have the card only
        # once that device has let go of it (unmounted after its power cut)
        self._wait_released(serial)
        with self._locked(write=True) as data:
            mux = data["muxes"].setdefault(serial, {"side": "off"})
            self._detach(mux)
            self._attach(serial, mux)
            mux["side"] = "host"

    def _wait_released(self, serial: str, timeout: float = RELEASE_TIMEOUT) -> None:
        card = str(self.card_path(serial).resolve())
        deadline = time.monotonic() + timeout
        while held := _mounted_loops(card):
            if time.monotonic() > deadline:
                raise InfraError(
                    f"the card is still held by its virtual Pi after {timeout:.0f} s "
                    f"(loop device {', '.join(held)} over it)",
                    where=serial,
                    hint="rig twin status shows the device; rig twin down releases every card",
                )
            time.sleep(0.02)

    def card_path(self, serial: str) -> Path:
        path = self.state_dir / "cards" / f"{serial}.img"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:  # sparse: costs nothing until written
                if f.tell() == 0:
                    f.truncate(self.size_of(serial))
        return path

    def size_of(self, serial: str) -> int:
        """The bytes of the card in mux ``serial`` (cards sold as one size hold different
        byte counts, from one maker or model to the next)."""
        return self.card_sizes.get(serial, self.card_size)

    def host_disk(self, serial: str) -> Path | None:
        with self._locked(write=False) as data:
            mux = data["muxes"].get(serial, {})
            if mux.get("side") != "host":
                return None
            if self._attached_ok(serial, mux):
                return Path(mux.get("dm") or mux.get("loop") or self.card_path(serial))
        # the loop device went away behind our back (reboot, someone ran losetup -D): re-attach
        with self._locked(write=True) as data:
            mux = data["muxes"].setdefault(serial, {"side": "off"})
            if mux.get("side") != "host":
                return None
            if not self._attached_ok(serial, mux):
                self._detach(mux)
                self._attach(serial, mux)
            return Path(mux.get("dm") or mux.get("loop") or self.card_path(serial))

    # -- loop / device-mapper plumbing -------------------------------------------

    def _attached_ok(self, serial: str, mux: dict[str, Any]) -> bool:
        loop = mux.get("loop")
        if not loop:
            return True
        return _loop_backing(loop) == str(self.card_path(serial).resolve())

    def _dm_name(self, serial: str) -> str:
        return f"rigv-{self._tag}-{serial}"

    def _attach(self, serial: str, mux: dict[str, Any]) -> None:
        card = self.card_path(serial)
        mux.pop("loop", None)
        mux.pop("dm", None)
        if not self.use_loop:
            if self.mux_limit is not None:
                raise InfraError(
                    "virtual.profile pi3 throttles host-side card writes on a loop device, "
                    "and this machine has none (not root, or no /dev/loop-control)",
                    where=f"virtual mux {serial}",
                    hint="run as root where loop devices work, or use `virtual.profile: fast`",
                )
            return
        loop = _run("losetup", "--find", "--show", str(card))
        mux["loop"] = loop
        error_at = self.faults.get(serial, {}).get("write_error_at")
        if error_at is None:
            self._limit(mux, on=True)
            return
        if not dm_available():
            # no device-mapper here: serve the card through a FUSE file that fails from the offset
            self._detach(mux)
            self._attach_faultfs(serial, mux, int(error_at))
            return
        sectors = os.path.getsize(card) // SECTOR
        good = max(0, min(int(error_at) // SECTOR, sectors))
        table = ""
        if good:
            table += f"0 {good} linear {loop} 0\n"
        if sectors > good:
            table += f"{good} {sectors - good} error\n"
        name = self._dm_name(serial)
        try:
            subprocess.run(
                ["dmsetup", "create", name],
                input=table,
                text=True,
                capture_output=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as e:
            self._detach(mux)
            raise InfraError(f"dmsetup create {name} failed: {e}", where=serial) from e
        mux["dm"] = f"/dev/mapper/{name}"
        self._limit(mux, on=True)

    def _attach_faultfs(self, serial: str, mux: dict[str, Any], error_at: int) -> None:
        if not Path("/dev/fuse").exists():
            raise InfraError(
                "the write_error_at fault needs device-mapper or FUSE; this machine has neither",
                where=f"virtual mux {serial}",
                hint="drop virtual.faults.*.write_error_at, or run where /dev/mapper/control works",
            )
        mnt = self.state_dir / "faultfs" / serial
        mnt.mkdir(parents=True, exist_ok=True)
        _unmount(mnt)
        with open(mnt.with_suffix(".log"), "ab") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rig.virtual.hw.faultfs",
                    str(self.card_path(serial)),
                    str(mnt),
                    str(error_at),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        mux["faultfs"] = {"pid": proc.pid, "mount": str(mnt)}
        deadline = time.monotonic() + 10
        while not (mnt / "card").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                self._detach(mux)
                raise InfraError(
                    f"the FUSE file for the write fault did not come up (see {mnt}.log)",
                    where=f"virtual mux {serial}",
                )
            time.sleep(0.02)
        try:
            mux["loop"] = _run("losetup", "--find", "--show", str(mnt / "card"))
            self._limit(mux, on=True)
        except InfraError:
            self._detach(mux)
            raise

    def _limit(self, mux: dict[str, Any], *, on: bool) -> None:
        """pi3 profile: the host group's limit on the block device the writer opens.

        Applied by whichever process switches the mux; it throttles the processes in
        the host group (the rig's, rig.virtual.pi3.join_host) and names only this
        device, so nothing else of theirs slows down.
        """
        dev = mux.get("dm") or mux.get("loop")
        if self.mux_limit is None or not dev:
            return
        from rig.virtual import pi3, throttle

        try:
            pi3.limit_host_card(
                throttle.detect(), self.state_dir, dev, self.mux_limit if on else None
            )
        except (InfraError, OSError):
            if on:
                raise  # pi3 asked for: never silently unthrottled

    def _detach(self, mux: dict[str, Any]) -> None:
        self._limit(mux, on=False)  # a loop number is reused: its next card is not ours
        dm = mux.pop("dm", None)
        loop = mux.pop("loop", None)
        faultfs = mux.pop("faultfs", None)
        if dm:
            _flush(dm)
            with contextlib.suppress(InfraError):
                _run("dmsetup", "remove", "--retry", Path(dm).name)
        if loop:
            _flush(loop)
            if _loop_backing(loop) is not None:
                with contextlib.suppress(InfraError):
                    _run("losetup", "-d", loop)
        if faultfs:
            _unmount(Path(faultfs["mount"]))
            _stop(int(faultfs["pid"]))


def cleanup(state_dir: Path) -> list[str]:
    """Detach every loop and dm device the virtual hardware made under ``state_dir``.

    Returns what was detached. Also catches orphans the state file forgot
    (a process killed between losetup and the state write).
    """
    hw = VirtualHardware(state_dir, use_loop=False)
    removed: list[str] = []
    with hw._locked(write=True) as data:
        for mux in data["muxes"].values():
            for key in ("dm", "loop"):
                if mux.get(key):
                    removed.append(mux[key])
            hw._detach(mux)
            if mux.get("side") == "host":
                mux["side"] = "off"
    if os.geteuid() == 0:
        prefix = f"rigv-{hw._tag}-"
        with contextlib.suppress(InfraError, FileNotFoundError):
            if dm_available():
                out = _run("dmsetup", "ls")
                for line in out.splitlines():
                    name = line.split()[0] if line.split() else ""
                    if name.startswith(prefix):
                        _run("dmsetup", "remove", "--retry", name)
                        removed.append(f"/dev/mapper/{name}")
        faultfs = hw.state_dir / "faultfs"
        if faultfs.is_dir():
            for mnt in faultfs.iterdir():
                if mnt.is_dir() and os.path.ismount(mnt):
                    with contextlib.suppress(InfraError):
                        for line in _run("losetup", "-j", str(mnt / "card")).splitlines():
                            loop = line.split(":", 1)[0]
                            _flush(loop)
                            _run("losetup", "-d", loop)
                            removed.append(loop)
                    _unmount(mnt)
                    removed.append(str(mnt))
        cards = hw.state_dir / "cards"
        if cards.is_dir():
            for card in cards.glob("*.img"):
                with contextlib.suppress(InfraError):
                    out = _run("losetup", "-j", str(card.resolve()))
                    for line in out.splitlines():
                        loop = line.split(":", 1)[0]
                        _flush(loop)
                        _run("losetup", "-d", loop)
                        removed.append(loop)
    return removed
