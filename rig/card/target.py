"""Is it safe to overwrite this block device? Refuse mounted disks and the running system's.

A whole disk is refused when it, or any of its partitions, is mounted (per
/proc/self/mountinfo), used as swap, held by another kernel device (LVM, RAID,
dm-crypt: /sys/class/block/*/holders), or holds the running system's root.
Regular files are always writable targets (tests, image building).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rig.errors import ConfigError

SYS_BLOCK = Path("/sys/class/block")


def _devno(major_minor: str) -> tuple[int, int]:
    a, b = major_minor.split(":")
    return int(a), int(b)


def _disk_and_parts(dev: int) -> tuple[str | None, set[tuple[int, int]], list[str]]:
    """(kernel name, {devno of the disk and its partitions}, [names]) of a whole disk."""
    key = (os.major(dev), os.minor(dev))
    names: list[str] = []
    devnos = {key}
    link = Path(f"/sys/dev/block/{key[0]}:{key[1]}")
    if not link.exists():
        return None, devnos, names
    real = link.resolve()
    name = real.name
    names.append(name)
    for child in real.iterdir():
        if child.name.startswith(name) and (child / "dev").exists():
            devnos.add(_devno((child / "dev").read_text().strip()))
            names.append(child.name)
    return name, devnos, names


def _parent_disk(devno: tuple[int, int]) -> tuple[int, int]:
    """The whole disk a partition belongs to (itself for a whole disk)."""
    link = Path(f"/sys/dev/block/{devno[0]}:{devno[1]}")
    if not link.exists():
        return devno
    real = link.resolve()
    if (real / "partition").exists() and (real.parent / "dev").exists():
        return _devno((real.parent / "dev").read_text().strip())
    return devno


def mounted_devnos() -> dict[tuple[int, int], str]:
    """devno -> mount point for everything mounted in this mount namespace."""
    out: dict[tuple[int, int], str] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        f = line.split()
        if len(f) > 4:
            out.setdefault(_devno(f[2]), f[4])
    return out


def check_writable(target: Path) -> None:
    """ConfigError when writing ``target`` could destroy something in use."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        return
    if not stat.S_ISBLK(st.st_mode):
        raise ConfigError("not a block device or a regular file", where=str(target))
    _, devnos, names = _disk_and_parts(st.st_rdev)
    mounts = mounted_devnos()
    for d in devnos:
        if d in mounts:
            raise ConfigError(
                f"{target} (or one of its partitions) is mounted on {mounts[d]}",
                where=str(target),
                hint="unmount it first; rig never writes a mounted disk",
            )
    root = os.stat("/").st_dev
    root_disk = _parent_disk((os.major(root), os.minor(root)))
    if root_disk in devnos or (os.major(root), os.minor(root)) in devnos:
        raise ConfigError("this is the disk of the running system", where=str(target))
    for n in names:
        holders = SYS_BLOCK / n / "holders"
        if holders.is_dir() and any(holders.iterdir()):
            used_by = ", ".join(p.name for p in holders.iterdir())
            raise ConfigError(f"{n} is in use by {used_by}", where=str(target))
    try:
        swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        swaps = []
    for line in swaps:
        dev = line.split()[0]
        if os.path.exists(dev) and os.stat(dev).st_rdev in {os.makedev(*d) for d in devnos}:
            raise ConfigError(f"{dev} is used as swap", where=str(target))
