"""How slow a Raspberry Pi 3 is, and the cgroups that make a virtual Pi that slow.

Magnitudes are a Pi 3's (sources in the README's "The pi3 profile"); every
rate is multiplied and every delay divided by ``time_scale`` (1: real Pi 3
speed; N: N times faster, so a benchmark of the rig runs scaled).

CPU: one Pi 3 core as a share of one core of this host comes from a
calibration on the same workload a published Pi 3 figure used (``sysbench
cpu``, primes up to 10000, one thread), or from ``virtual.pi3_core``. A whole
device may use 4 such cores; each process tree started into it (the
OctoPrint service, one SSH command) at most one, because a CFS quota limits
CPU time, not the speed of one thread: without the per-tree cap a
single-threaded pip or OctoPrint start would run on a whole host core.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.errors import InfraError
from rig.virtual import throttle
from rig.virtual.throttle import Cgroups, IoLimit

log = logging.getLogger(__name__)

# -- a Raspberry Pi 3 Model B (BCM2837, 4x Cortex-A53 at 1.2 GHz, 1 GB) -------------------

CORES = 4
MEMORY = 1 << 30
# sysbench 1.0.20 `cpu --threads=1`: 687.45 events/s on a Pi 3 B+ (1.4 GHz), scaled to
# the 3 B's 1.2 GHz (same core, same memory: a compute-bound loop scales with the clock)
SYSBENCH_EVENTS_PER_CORE = 687.45 * 1.2 / 1.4
# its SD card (a SanDisk Ultra class card, as OctoPi users have): sequential read is
# the Pi 3's SD bus limit; write and 4K random I/O measured on a Pi 3 B+
CARD = IoLimit(read_bps=20_000_000, write_bps=13_600_000, read_iops=2_300, write_iops=670)
# the same card on the host through a USB 2.0 SD mux (assumption: the card's write rate,
# USB 2.0 mass storage's usual ~30 MB/s read; see README)
MUX = IoLimit(read_bps=30_000_000, write_bps=12_600_000)
BOOT_SECONDS = 60.0  # power on to sshd: stock Raspbian Lite on a Pi 3 B


def scaled(limit: IoLimit, time_scale: float) -> IoLimit:
    def s(x: int | None) -> int | None:
        return None if x is None else round(x * time_scale)

    return IoLimit(s(limit.read_bps), s(limit.write_bps), s(limit.read_iops), s(limit.write_iops))


# -- calibration -------------------------------------------------------------------------

_measured: float | None = None
_measure_lock = threading.Lock()


def host_sysbench_events(seconds: float = 2.0) -> float:
    """This host's single-thread ``sysbench cpu`` events per second (the Pi 3's workload)."""
    if shutil.which("sysbench") is None:
        raise InfraError(
            "virtual.profile pi3 calibrates this host's CPU against a Pi 3 with sysbench, "
            "which is not installed",
            where="virtual rig (profile pi3)",
            hint="apt-get install sysbench, or set virtual.pi3_core (one Pi 3 core as a "
            "share of one host core, e.g. 0.13)",
        )
    cmd = ["sysbench", "cpu", "--threads=1", f"--time={max(1, round(seconds))}", "run"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise InfraError(f"sysbench failed: {e}", where="virtual rig (profile pi3)") from e
    m = re.search(r"events per second:\s*([0-9.]+)", out)
    if not m or float(m.group(1)) <= 0:
        raise InfraError("sysbench printed no events per second", where="virtual rig (profile pi3)")
    return float(m.group(1))


def core_share(configured: float | None) -> float:
    """One Pi 3 core in host cores: configured, or measured once per process."""
    global _measured
    if configured is not None:
        return configured
    with _measure_lock:
        if _measured is None:
            _measured = min(1.0, SYSBENCH_EVENTS_PER_CORE / host_sysbench_events())
        return _measured


# -- the groups ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Speed:
    """A Pi 3 at ``time_scale`` on this host."""

    core: float  # one Pi 3 core, in host cores (unscaled)
    time_scale: float = 1.0

    @property
    def process_cores(self) -> float:
        return self.core * self.time_scale

    @property
    def device_cores(self) -> float:
        return CORES * self.core * self.time_scale

    @property
    def card(self) -> IoLimit:
        return scaled(CARD, self.time_scale)


class DeviceGroup:
    """The cgroup of one virtual Pi while it is powered: everything it runs is in it."""

    def __init__(self, cg: Cgroups, state_dir: Path, name: str, speed: Speed) -> None:
        self.cg = cg
        self.rel = f"{throttle.tag_of(state_dir)}/dev-{name}"
        self.speed = speed
        self._sessions = itertools.count(1)
        self.card_device: str | None = None

    def start(self, card_block_device: str | None) -> None:
        """Create the group with the Pi 3's limits (after a stale one from a power cut)."""
        throttle.remove(self.cg, self.rel, timeout=0.5)
        self.cg.create(self.rel, parent_of_limits=True)
        self.cg.set_cpu(self.rel, self.speed.device_cores)
        self.cg.set_memory(self.rel, MEMORY)
        if card_block_device:
            self.card_device = throttle.device_number(card_block_device)
            self.cg.set_io(self.rel, self.card_device, self.speed.card)

    def leaf(self, kind: str) -> str:
        """A group for one process tree (``init``, ``octoprint``, ``session``: numbered)."""
        name = f"session-{next(self._sessions)}" if kind == "session" else kind
        rel = f"{self.rel}/{name}"
        self.cg.create(rel)
        self.cg.set_cpu(rel, self.speed.process_cores)
        if self.card_device and not self.cg.io_hierarchical:
            # v1: each process tree gets the card's rates (concurrent ones each, unlike v2)
            self.cg.set_io(rel, self.card_device, self.speed.card)
        return rel

    def argv(self, leaf: str, argv: list[str]) -> list[str]:
        return throttle.join_argv(self.cg, leaf, argv)

    def release(self, leaf: str) -> None:
        """A session ended: its group goes, unless something it started lives on (then it
        goes with the device)."""
        if not self.cg.pids(leaf):
            throttle.remove(self.cg, leaf, timeout=0.2)

    def stop(self) -> None:
        """Power off: every process is gone (or going); remove the groups."""
        throttle.remove(self.cg, self.rel)


def host_rel(state_dir: Path) -> str:
    return f"{throttle.tag_of(state_dir)}/host"


def join_host(cg: Cgroups, state_dir: Path, pid: int) -> str:
    """Put the rig's process (the card writer) into the host group; return the group."""
    rel = host_rel(state_dir)
    cg.create(rel)
    throttle.join(cg, rel, pid)
    return rel


def limit_host_card(cg: Cgroups, state_dir: Path, device: str, limit: IoLimit | None) -> None:
    """The card on the host side (a loop device) at the mux's rates; None lifts the limit."""
    rel = host_rel(state_dir)
    cg.create(rel)
    cg.set_io(rel, throttle.device_number(device), limit)


@dataclass(frozen=True)
class Throttle:
    """The pi3 profile on this machine: its cgroups and the speed to limit to."""

    cg: Cgroups
    speed: Speed
    state_dir: Path

    def device(self, name: str) -> DeviceGroup:
        return DeviceGroup(self.cg, self.state_dir, name, self.speed)


def check(settings: Any) -> None:
    """What the pi3 profile needs from this machine, as an InfraError saying how to get it
    (before the supervisor starts, so the user sees it rather than its log)."""
    if not settings.throttled:
        return
    throttle.detect()
    if settings.pi3_core is None and shutil.which("sysbench") is None:
        host_sysbench_events()  # raises with the hint


def for_settings(settings: Any, state_dir: Path, *, sweep: bool = False) -> Throttle | None:
    """None for the fast profile; for pi3 the machine's cgroups, calibrated, or an
    InfraError saying what is missing (pi3 never runs unthrottled)."""
    if not settings.throttled:
        return None
    cg = throttle.detect()
    speed = Speed(core_share(settings.pi3_core), settings.time_scale)
    if sweep:  # the supervisor starts: what a killed one left
        for gone in throttle.sweep(cg, throttle.tag_of(state_dir)):
            log.info("removed a stale cgroup: %s", gone)
    return Throttle(cg, speed, Path(state_dir))
