"""Slow a virtual Pi down to a Raspberry Pi 3 by the kernel's own means: cgroups.

Why cgroups: CPU time, memory and block I/O of a group of processes are what
the kernel already accounts and limits, for every process the group's members
start, with no cooperation from the code under test. Two interfaces exist and
both must work: cgroup v1 (one hierarchy per controller: ``cpu.cfs_quota_us``,
``memory.limit_in_bytes``, ``blkio.throttle.*``; this project's CI) and cgroup
v2 (one unified tree: ``cpu.max``, ``memory.max``, ``io.max``; Raspberry Pi OS
Bookworm and Trixie on the flash host). ``detect()`` picks what the machine
has; ``Cgroups`` is the small interface both implement.

Layout (``<base>`` is ``rig-virtual`` under the hierarchy's root on v2, under
the rig's own cgroup on v1)::

    <base>/<tag>/dev-<name>            one virtual Pi: 4 Pi 3 cores, 1 GiB, its card's rates
    <base>/<tag>/dev-<name>/init       the sandbox's pid 1
    <base>/<tag>/dev-<name>/octoprint  the service
    <base>/<tag>/dev-<name>/session-N  one SSH command each: 1 Pi 3 core
    <base>/<tag>/host                  the rig's own process: the card writes through the mux

A process joins before it runs any work: ``join_argv`` prefixes a command with
a shell that writes its own pid into the group and then ``exec``s the command.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rig.errors import InfraError

log = logging.getLogger(__name__)

BASE = "rig-virtual"
CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel's floor for cpu.cfs_quota_us / cpu.max
V1_CONTROLLERS = ("cpu", "memory", "blkio")
V2_CONTROLLERS = ("cpu", "io", "memory")
HINT = (
    "run the virtual rig as root on a machine with cgroup v1 (cpu, memory, blkio mounted "
    "under /sys/fs/cgroup) or cgroup v2 (cpu, io and memory in "
    "/sys/fs/cgroup/cgroup.controllers), or use `virtual.profile: fast`"
)


@dataclass(frozen=True)
class IoLimit:
    """Bytes and requests per second for one block device; None: unlimited."""

    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None


class Cgroups(Protocol):
    """One cgroup interface (v1 or v2); ``rel`` is a path below the rig's base."""

    version: int
    io_hierarchical: bool  # v1's blkio throttle applies to a group's own processes only

    def create(self, rel: str, *, parent_of_limits: bool = False) -> None: ...
    def set_cpu(self, rel: str, cores: float) -> None: ...
    def set_memory(self, rel: str, limit: int) -> None: ...
    def set_io(self, rel: str, device: str, limit: IoLimit | None) -> None: ...
    def procs_files(self, rel: str) -> list[Path]: ...
    def pids(self, rel: str) -> list[int]: ...
    def dirs(self, rel: str) -> list[Path]: ...


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise InfraError(
            f"cannot write {value.strip()!r} to {path}: {e.strerror}", where="cgroups", hint=HINT
        ) from None


def _mkdir(d: Path, *, parents: bool) -> None:
    # another device's power off may prune an empty parent at the same moment: try again
    for attempt in range(5):
        try:
            d.mkdir(parents=parents, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 4 or not parents:
                raise InfraError(
                    f"cannot create cgroup {d}: its parent went away", where="cgroups"
                ) from None
        except OSError as e:
            raise InfraError(
                f"cannot create cgroup {d}: {e.strerror}", where="cgroups", hint=HINT
            ) from None


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return []


class V1:
    """cgroup v1: one directory per controller (cpu, memory, blkio)."""

    version = 1
    io_hierarchical = False  # without the never-public "sane_behavior", v1 blk-throttle is flat

    def __init__(self, bases: dict[str, Path]) -> None:
        self.bases = bases  # controller -> <mount>/<own cgroup>/rig-virtual

    def dirs(self, rel: str) -> list[Path]:
        return [self.bases[c] / rel for c in V1_CONTROLLERS]

    def create(self, rel: str, *, parent_of_limits: bool = False) -> None:
        for d in self.dirs(rel):
            _mkdir(d, parents=True)

    def set_cpu(self, rel: str, cores: float) -> None:
        d = self.bases["cpu"] / rel
        _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(d / "cpu.cfs_quota_us", str(max(MIN_QUOTA_US, round(cores * CPU_PERIOD_US))))

    def set_memory(self, rel: str, limit: int) -> None:
        _write(self.bases["memory"] / rel / "memory.limit_in_bytes", str(limit))

    def set_io(self, rel: str, device: str, limit: IoLimit | None) -> None:
        d = self.bases["blkio"] / rel
        limit = limit or IoLimit()
        for name, value in (
            ("read_bps_device", limit.read_bps),
            ("write_bps_device", limit.write_bps),
            ("read_iops_device", limit.read_iops),
            ("write_iops_device", limit.write_iops),
        ):
            # 0 removes the device's rule
            _write(d / f"blkio.throttle.{name}", f"{device} {int(value or 0)}")

    def procs_files(self, rel: str) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs(rel)]

    def pids(self, rel: str) -> list[int]:
        return sorted({p for f in self.procs_files(rel) for p in _read_pids(f)})


class V2:
    """cgroup v2: one tree; controllers are enabled top-down in cgroup.subtree_control."""

    version = 2
    io_hierarchical = True

    def __init__(self, root: Path) -> None:
        self.root = root  # the cgroup2 mount
        self.base = root / BASE

    def dirs(self, rel: str) -> list[Path]:
        return [self.base / rel]

    def create(self, rel: str, *, parent_of_limits: bool = False) -> None:
        # every ancestor of a limited group passes the controllers down (a v2 group
        # that passes controllers down holds no processes itself: hence the leaves)
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        parts = Path(BASE, rel).parts
        for attempt in range(5):  # a parent pruned by another device's power off: again
            here = self.root
            try:
                for i, part in enumerate(parts):
                    _write(here / "cgroup.subtree_control", enable)
                    here = here / part
                    _mkdir(here, parents=False)
                    if i == len(parts) - 1 and parent_of_limits:
                        _write(here / "cgroup.subtree_control", enable)
                return
            except InfraError:
                if attempt == 4 or here.parent.exists():
                    raise

    def set_cpu(self, rel: str, cores: float) -> None:
        quota = max(MIN_QUOTA_US, round(cores * CPU_PERIOD_US))
        _write(self.base / rel / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def set_memory(self, rel: str, limit: int) -> None:
        _write(self.base / rel / "memory.max", str(limit))

    def set_io(self, rel: str, device: str, limit: IoLimit | None) -> None:
        limit = limit or IoLimit()

        def v(x: int | None) -> str:
            return str(int(x)) if x else "max"

        _write(
            self.base / rel / "io.max",
            f"{device} rbps={v(limit.read_bps)} wbps={v(limit.write_bps)} "
            f"riops={v(limit.read_iops)} wiops={v(limit.write_iops)}",
        )

    def procs_files(self, rel: str) -> list[Path]:
        return [self.base / rel / "cgroup.procs"]

    def pids(self, rel: str) -> list[int]:
        return _read_pids(self.base / rel / "cgroup.procs")


# -- detection ---------------------------------------------------------------------


def _mounts(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) > 4 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rest[0], set(rest[2].split(","))))
    return out


def _own_path(proc_cgroup: str, controller: str | None) -> str:
    """This process's cgroup in a hierarchy (v2: controller None), outside the rig's own."""
    for line in proc_cgroup.splitlines():
        num, ctrls, path = line.split(":", 2)
        if (controller is None and num == "0") or (
            controller is not None and controller in ctrls.split(",")
        ):
            # a process the rig moved (the rig itself, the supervisor it started) does not
            # nest a second tree inside its own
            return path.split(f"/{BASE}/", 1)[0].split(f"/{BASE}", 1)[0]
    return "/"


def detect(
    mountinfo: str | None = None, proc_cgroup: str | None = None, *, root: bool | None = None
) -> Cgroups:
    """The cgroup interface this machine offers for throttling, or a clear InfraError."""
    if root is None:
        root = os.geteuid() == 0
    mountinfo = mountinfo if mountinfo is not None else _read("/proc/self/mountinfo")
    proc_cgroup = proc_cgroup if proc_cgroup is not None else _read("/proc/self/cgroup")
    mounts = _mounts(mountinfo)
    v1 = {}
    for point, fstype, opts in mounts:
        for c in V1_CONTROLLERS:
            if fstype == "cgroup" and c in opts:
                v1[c] = Path(point)
    missing_v2: list[str] = []
    for point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        have = set(_read(f"{point}/cgroup.controllers").split())
        if set(V2_CONTROLLERS) <= have:
            if not root and not os.access(point, os.W_OK):
                break
            return V2(Path(point))
        missing_v2 = sorted(set(V2_CONTROLLERS) - have)
    if len(v1) == len(V1_CONTROLLERS) and root:
        bases = {}
        for c, point in v1.items():
            own = _own_path(proc_cgroup, c).lstrip("/")
            bases[c] = point / own / BASE
        return V1(bases)
    what = []
    if not root:
        what.append("the rig is not root and has no delegated cgroup")
    if v1 and len(v1) < len(V1_CONTROLLERS):
        what.append(f"cgroup v1 lacks {', '.join(sorted(set(V1_CONTROLLERS) - set(v1)))}")
    if missing_v2:
        what.append(f"cgroup v2 lacks the {', '.join(missing_v2)} controller(s)")
    if not mounts:
        what.append("no cgroup file system is mounted")
    raise InfraError(
        "virtual.profile pi3 throttles each virtual Pi with cgroups, which this machine "
        "does not offer: " + ("; ".join(what) or "no usable cgroup controllers"),
        where="virtual rig (profile pi3)",
        hint=HINT,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def tag_of(state_dir: Path) -> str:
    """Groups are named per state directory: two rigs on one machine keep apart."""
    return hashlib.sha1(str(Path(state_dir).resolve()).encode()).hexdigest()[:8]


def device_number(path: str | Path) -> str:
    """``major:minor`` of a block device node (what blkio/io limits name)."""
    st = os.stat(path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def join_argv(cg: Cgroups, rel: str, argv: list[str]) -> list[str]:
    """``argv`` run so that its process is in ``rel`` before it executes anything."""
    files = [str(f) for f in cg.procs_files(rel)]
    script = (
        'while [ "$1" != -- ]; do echo $$ > "$1" || '
        '{ echo "rig: cannot join cgroup $1" >&2; exit 125; }; shift; done; shift; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "rig-cgroup", *files, "--", *argv]


def join(cg: Cgroups, rel: str, pid: int) -> None:
    """Move a running process (all its threads) into ``rel``."""
    for f in cg.procs_files(rel):
        _write(f, str(pid))


def remove(cg: Cgroups, rel: str, *, timeout: float = 5.0) -> bool:
    """rmdir ``rel`` and everything below it, deepest first, once their processes are gone.

    False (and a log line) if a group still holds processes after ``timeout``:
    the next start sweeps it.
    """
    deadline = time.monotonic() + timeout
    ok = True
    for top in cg.dirs(rel):
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            ok = _rmdir(d, deadline) and ok
        ok = _rmdir(top, deadline) and ok
        if ok and len(Path(rel).parts) == 2:  # <tag>/dev-x: the state directory's, once empty
            with contextlib.suppress(OSError):
                top.parent.rmdir()
    return ok


def _rmdir(d: Path, deadline: float) -> bool:
    while True:
        try:
            d.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cgroup %s not removed: %s", d, e.strerror)
                return False
        time.sleep(0.02)


def sweep(cg: Cgroups, tag: str, pattern: str = "dev-*") -> list[str]:
    """Remove what a killed run left of this state directory's device groups (empty ones;
    a group still holding processes stays and is named in the log)."""
    gone: list[str] = []
    for top in cg.dirs(tag):
        for group in sorted(top.glob(pattern)) if top.is_dir() else []:
            if remove(cg, str(group.relative_to(top.parent)), timeout=0.2):
                gone.append(str(group))
    return gone
