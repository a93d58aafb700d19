"""The card's block device: found below the mux's USB device, checked, opened exclusively.

Never "the newest /dev/sdX": the disk is the one whose sysfs path lies below
the mux's USB device (what pyudev's ``find_parent`` walks; done on sysfs
directly so it works without udevd and can be tested against a fake tree).
Before anything writes, the disk must be removable, below the mux, not mounted,
not held by another driver (dm, md), and openable with ``O_EXCL``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rig.errors import InfraError

SYS = Path("/sys")
DEV = Path("/dev")


@dataclass(frozen=True)
class Sysfs:
    """Where sysfs and /dev are (a fake tree in tests)."""

    sys: Path = SYS
    dev: Path = DEV
    mountinfo: Path = Path("/proc/self/mountinfo")

    def block(self, name: str) -> Path:
        return self.sys / "class" / "block" / name


REAL_SYSFS = Sysfs()


def usb_device_dir(node: Path, fs: Sysfs = REAL_SYSFS) -> Path | None:
    """The sysfs dir of the USB device (not interface) a class device hangs below."""
    cur = node.resolve()
    while cur != cur.parent and cur != fs.sys:
        if (cur / "idVendor").is_file() and (cur / "busnum").is_file():
            return cur
        cur = cur.parent
    return None


def disks_below(usb_dir: Path, fs: Sysfs = REAL_SYSFS) -> list[str]:
    """Names of whole disks (sdX) whose device path lies below ``usb_dir``."""
    root = usb_dir.resolve()
    found = []
    base = fs.sys / "class" / "block"
    if not base.is_dir():
        return []
    for entry in sorted(base.iterdir()):
        if (entry / "partition").exists():
            continue
        real = entry.resolve()
        if root in real.parents:
            found.append(entry.name)
    return found


def size_bytes(path: Path, fs: Sysfs = REAL_SYSFS) -> int:
    """Size of a disk (sysfs counts 512-byte sectors) or of a plain image file."""
    sys_size = fs.block(_name(path, fs)) / "size"
    if sys_size.exists():
        try:
            return int(sys_size.read_text().strip()) * 512
        except (OSError, ValueError):
            return 0
    st = path.stat()
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def wait_for_disk(
    find: Callable[[], Path | None],
    timeout: float,
    *,
    what: str,
    where: str,
    fs: Sysfs = REAL_SYSFS,
    poll: float = 0.1,
) -> Path:
    """Poll ``find`` until it names a disk with size > 0; InfraError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "no disk"
    while True:
        path = find()
        if path is not None:
            try:
                if size_bytes(path, fs) > 0:
                    return path
                last = f"{path} has size 0 (no card, or the reader is still probing)"
            except OSError:
                last = f"{path} vanished"
        if time.monotonic() >= deadline:
            raise InfraError(
                f"the card of {what} did not appear within {timeout:.0f}s ({last})",
                where=where,
                hint="is a card in the mux? `rig doctor` shows the mux and its disk",
            )
        time.sleep(poll)


def _name(path: Path, fs: Sysfs) -> str:
    """The kernel name of a disk node: its own name, or its link target's (/dev/disk/by-id)."""
    return path.name if fs.block(path.name).exists() else path.resolve().name


def _family(name: str, fs: Sysfs) -> list[str]:
    """major:minor of the disk and all its partitions."""
    out = []
    block = fs.block(name)
    for d in [block, *(p for p in block.glob("*") if (p / "partition").exists())]:
        try:
            out.append((d / "dev").read_text().strip())
        except OSError:
            pass
    return out


def _holders(name: str, fs: Sysfs) -> list[str]:
    block = fs.block(name)
    dirs = [
        block / "holders",
        *(p / "holders" for p in block.glob("*") if (p / "partition").exists()),
    ]
    return sorted({h.name for d in dirs if d.is_dir() for h in d.iterdir()})


def _mounted(devnos: list[str], fs: Sysfs) -> list[str]:
    try:
        lines = fs.mountinfo.read_text().splitlines()
    except OSError:
        return []
    return [
        line.split()[4] for line in lines if len(line.split()) > 4 and line.split()[2] in devnos
    ]


def check_card(
    path: Path,
    *,
    below: Path | None,
    where: str,
    require_removable: bool = True,
    fs: Sysfs = REAL_SYSFS,
) -> Path:
    """Refuse anything that is not the mux's idle card; returns the path when it is."""
    try:
        st = path.stat()
    except OSError as e:
        raise InfraError(f"{path} does not exist", where=where) from e
    if stat.S_ISREG(st.st_mode):  # the virtual rig without loop devices: the image is the card
        _check_file_free(path, where)
        return path
    if not stat.S_ISBLK(st.st_mode):
        raise InfraError(f"{path} is neither a block device nor an image file", where=where)
    name = _name(path, fs)
    block = fs.block(name)
    if (block / "partition").exists():
        raise InfraError(f"{path} is a partition, not the whole card", where=where)
    if below is not None:
        real = block.resolve()
        if below.resolve() not in real.parents:
            raise InfraError(
                f"{path} is not below the mux's USB device {below.name}: refusing to touch it",
                where=where,
                hint="a wrong disk would be overwritten; check the mux serial in rig.yaml",
            )
    if require_removable:
        try:
            removable = (block / "removable").read_text().strip()
        except OSError:
            removable = "?"
        if removable != "1":
            raise InfraError(
                f"{path} is not a removable disk: refusing to treat it as a card",
                where=where,
            )
    family = _family(name, fs)
    mounts = _mounted(family, fs)
    if mounts:
        raise InfraError(
            f"{path} is mounted at {', '.join(mounts)}",
            where=where,
            hint="unmount it (and disable desktop automount for the rig's cards)",
        )
    holders = _holders(name, fs)
    if holders:
        raise InfraError(
            f"{path} is in use by {', '.join(holders)} (device-mapper / raid)",
            where=where,
            hint=f"remove the holder (dmsetup remove / mdadm --stop) before using {path}",
        )
    os.close(open_card(path, os.O_RDONLY, where=where))
    return path


def _check_file_free(path: Path, where: str) -> None:
    fd = open_card(path, os.O_RDONLY, where=where)
    os.close(fd)


def open_card(path: Path, flags: int = os.O_RDWR, *, where: str = "") -> int:
    """Open the card exclusively: O_EXCL on a block device fails if anything mounted or opened it.

    For an image file (virtual rig without loop devices) an exclusive flock
    plays that role; the caller owns the returned descriptor (and its lock).
    """
    try:
        fd = os.open(path, flags | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise InfraError(
                f"{path} is busy (mounted or opened by another program)",
                where=where or str(path),
                hint="close whatever uses it; `lsof` or `fuser -v` names the process",
            ) from e
        if e.errno == errno.EACCES:
            raise InfraError(
                f"permission denied opening {path}",
                where=where or str(path),
                hint="install the udev rules (sudo scripts/install-flash-host): they give "
                "group rig the mux cards (and only them)",
            ) from e
        raise InfraError(f"cannot open {path}: {e.strerror}", where=where or str(path)) from e
    if stat.S_ISREG(os.fstat(fd).st_mode):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            raise InfraError(
                f"{path} is busy (another rig process has the card open)",
                where=where or str(path),
            ) from e
    return fd


def reread_partitions(fd: int) -> None:
    """BLKRRPART after writing, for systems where no udev watch does it."""
    try:
        fcntl.ioctl(fd, 0x125F)
    except OSError:
        pass
