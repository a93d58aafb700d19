"""The card's root file system, mounted while its virtual Pi is powered.

A virtual Pi with a real userland runs *from its card*: the ext4 root
partition is mounted (a loop device at the partition's offset, ``nosuid`` so
the card's setuid ``sudo`` stays inert, ``nodev``) and becomes the sandbox's
``/``. Everything the device changes (pip's work, OctoPrint's config and logs,
the SSH host key) is written to the card; reflashing the card resets all of
it. The mount ends with the power: after every process of the device is gone,
so the file system is unmounted cleanly before the card can switch to the host.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from rig.errors import InfraError
from rig.virtual.card import Card

log = logging.getLogger(__name__)
BUSY_TIMEOUT = 20.0  # a power-cut device's last host-side helpers exit within milliseconds


def mount_root(card: Path, at: Path) -> None:
    """Mount the card's root partition at ``at`` (unmounting a stale mount first)."""
    if os.geteuid() != 0:
        raise InfraError(
            "a virtual Pi runs from its card's root file system, which needs root to mount",
            where=str(card),
            hint="run the virtual rig as root (CI does)",
        )
    part = Card(card).root
    if part is None:
        raise InfraError("the card has no root partition", where=str(card))
    at.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(at):
        unmount_root(at)
    opts = f"loop,offset={part.offset},sizelimit={part.size},nosuid,nodev,noatime"
    proc = subprocess.run(
        ["mount", "-t", "ext4", "-o", opts, str(card), str(at)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise InfraError(
            f"the card's root file system does not mount: {proc.stderr.strip()}",
            where=str(card),
        )


def unmount_root(at: Path, timeout: float = BUSY_TIMEOUT) -> None:
    """Unmount once the device's last process has let go (lazily only as a last resort).

    The device's processes die with its pid namespace, but the host-side
    ``nsenter`` that started a session sits in its mount namespace until it has
    reaped its child: for a few milliseconds the mount is busy. A lazy unmount
    then would let the file system's final write-back land on the card later,
    after the host may have written a new image to it.
    """
    deadline = time.monotonic() + timeout
    loop = _source(at)
    mine = _loop_id(loop) if loop else None
    while os.path.ismount(at):
        proc = subprocess.run(
            ["umount", str(at)], capture_output=True, text=True, check=False, timeout=120
        )
        if proc.returncode == 0:
            waited = time.monotonic() - (deadline - timeout)
            if waited > 1.0:  # the write-back of what the device wrote
                log.info("%s: unmounted after %.1f s", at, waited)
            # the loop device would go by itself (autoclear), but asynchronously: detach it
            # now, so the card is free when the power cut returns
            if loop and mine and _loop_id(loop) == mine:  # still ours, not reused by now
                subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=30)
            return
        if time.monotonic() > deadline:
            log.warning("%s: still busy (%s), detaching lazily", at, proc.stderr.strip())
            subprocess.run(["umount", "-l", str(at)], capture_output=True, check=False, timeout=60)
            return
        time.sleep(0.05)


def loop_of(at: Path) -> str | None:
    """The loop device the card's root is mounted from (its I/O is throttled, pi3)."""
    return _source(at)


def _source(at: Path) -> str | None:
    """The loop device mounted at ``at`` (from this process's mount table)."""
    target = str(at.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) > 4 and fields[4] == target and tail.split()[1:2]:
            source = tail.split()[1]
            return source if source.startswith("/dev/loop") else None
    return None


def _loop_id(loop: str) -> tuple[str, str] | None:
    """(backing file, offset) of a loop device: who it belongs to."""
    sys_dir = Path("/sys/block") / Path(loop).name / "loop"
    try:
        return (sys_dir / "backing_file").read_text().strip(), (sys_dir / "offset").read_text()
    except OSError:
        return None
