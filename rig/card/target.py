"""Is it safe to overwrite this block device? Refuse mounted disks and the running system's.

A whole disk is refused when it, or any of its partitions, is mounted (per
/proc/self/mountinfo), used as swap, held by another kernel device (LVM, RAID,
dm-crypt: /sys/class/block/*/holders), or holds the running system's root.
Regular files are always writable targets (tests, image building).

:func:`open_checked` is the way in: the path is resolved once and opened once;
the checks look at the *opened* descriptor's device, and every later open goes
through ``/proc/self/fd/N`` (the same inode), so a symlink swapped between the
check and the write changes nothing. A partition is never a target; a missing
path is not created under /dev; a non-removable disk needs ``allow_fixed``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
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
    _check_block(st, target)


def _check_block(st: os.stat_result, target: Path) -> None:
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


@dataclass(frozen=True)
class Opened:
    """A checked target: a read-only descriptor and the path that reopens that same inode."""

    fd: int
    path: Path  # as the user named it (for messages)
    resolved: Path
    is_block: bool

    @property
    def via(self) -> Path:
        """Opening this opens the checked inode again, whatever the name points to now."""
        return Path(f"/proc/self/fd/{self.fd}")

    def reopen(self, flags: int) -> int:
        fd = os.open(self.via, flags | os.O_CLOEXEC)
        mine, theirs = os.fstat(self.fd), os.fstat(fd)
        if (mine.st_dev, mine.st_ino, mine.st_rdev) != (
            theirs.st_dev,
            theirs.st_ino,
            theirs.st_rdev,
        ):
            os.close(fd)
            raise ConfigError("the target changed while it was opened", where=str(self.path))
        return fd

    def close(self) -> None:
        os.close(self.fd)


def _sysfs(st: os.stat_result) -> Path:
    return Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def open_checked(target: Path, *, allow_fixed: bool = True, create: bool = False) -> Opened:
    """Resolve ``target`` once, open it once, and check what was opened (see the module doc).

    ``create``: a missing regular file may be created (image building; never under /dev).
    ``allow_fixed``: a block device that does not report removable media is accepted
    (a configured mux's card; loop devices). ConfigError, with the path, otherwise.
    """
    target = Path(target)
    resolved = Path(os.path.realpath(target))
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    if not os.path.lexists(target) or not resolved.exists():
        if not create or resolved.parts[:2] == ("/", "dev"):
            raise ConfigError(
                "does not exist",
                where=str(target),
                hint="name the card's whole-disk device (lsblk); an image file must exist first",
            )
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(resolved, flags, 0o644)
    except FileExistsError:
        # another writer created it between the look and the open: open what is there, as
        # if it had existed (the card lock, taken after the open, orders the two writers)
        try:
            fd = os.open(resolved, flags & ~(os.O_CREAT | os.O_EXCL))
        except OSError as e:
            raise ConfigError(f"cannot open: {e.strerror}", where=str(target)) from None
    except OSError as e:
        raise ConfigError(f"cannot open: {e.strerror}", where=str(target)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            check_fd(fd, target, allow_fixed=allow_fixed)
        elif not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a block device or a regular file", where=str(target))
    except BaseException:
        os.close(fd)
        raise
    return Opened(fd, target, resolved, stat.S_ISBLK(st.st_mode))


def check_fd(fd: int, target: Path, *, allow_fixed: bool = True) -> None:
    """The checks of :func:`check_writable` on an open block device, plus: no partition,
    removable media unless ``allow_fixed``."""
    st = os.fstat(fd)
    sysfs = _sysfs(st)
    if (sysfs / "partition").exists():
        raise ConfigError(
            "is a partition, not a whole card",
            where=str(target),
            hint="name the whole disk (e.g. /dev/sdb, not /dev/sdb1)",
        )
    _check_block(st, target)
    if not allow_fixed:
        try:
            removable = (sysfs / "removable").read_text().strip() == "1"
        except OSError:
            removable = False
        if not removable:
            raise ConfigError(
                "is not a removable disk",
                where=str(target),
                hint="SD card readers report removable media; for another disk you are "
                "sure about, add --allow-fixed",
            )
