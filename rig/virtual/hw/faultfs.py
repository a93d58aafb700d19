"""A failing card without device-mapper: one file served over FUSE, EIO from an offset on.

Where ``/dev/mapper/control`` is missing (containers, many CI machines) the
``write_error_at`` fault is built from what is left: this process mounts a
one-file FUSE file system whose file ``card`` reads and writes the card image,
except that writes at or beyond the fault offset fail with EIO (the part of a
write below the offset lands, as with dm's linear + error split). The card's
loop device is attached over that file, so the writer sees a real block device
whose writes really fail.

The kernel's FUSE protocol (``linux/fuse.h``) is spoken directly through
``/dev/fuse``: no libfuse, no extra package. Run as
``python -m rig.virtual.hw.faultfs CARD MOUNTPOINT OFFSET``; it serves until
unmounted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
from pathlib import Path

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # fuse_attr
INIT_OUT = struct.Struct("<IIIIHHIIHHI7I")
ENTRY_HEAD = struct.Struct("<QQQQII")
ATTR_OUT_HEAD = struct.Struct("<QII")
OPEN_OUT = struct.Struct("<QII")
READ_IN = struct.Struct("<QQII")
WRITE_IN = struct.Struct("<QQIIQII")
WRITE_OUT = struct.Struct("<II")
STATFS_OUT = struct.Struct("<QQQQQIIII6I")

LOOKUP, FORGET, GETATTR, SETATTR = 1, 2, 3, 4
OPEN, READ, WRITE, STATFS, RELEASE, FSYNC = 14, 15, 16, 17, 18, 20
FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = 25, 26, 27, 28, 29
INTERRUPT, DESTROY, BATCH_FORGET = 36, 38, 42
NO_REPLY = {FORGET, INTERRUPT, BATCH_FORGET}

FUSE_BIG_WRITES = 1 << 5
FOPEN_DIRECT_IO = 1 << 0
MAX_WRITE = 128 * 1024
ROOT, CARD = 1, 2
NAME = b"card"


class FaultFs:
    def __init__(self, card: Path, error_at: int) -> None:
        self.card = card
        self.error_at = error_at
        self.fd = os.open(card, os.O_RDWR)

    def attr(self, node: int) -> bytes:
        if node == ROOT:
            return ATTR.pack(
                ROOT, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0, 4096, 0
            )
        st = os.fstat(self.fd)
        mode = stat.S_IFREG | 0o600
        return ATTR.pack(
            CARD, st.st_size, st.st_blocks, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0
        )

    def handle(self, opcode: int, node: int, body: bytes) -> tuple[int, bytes]:
        """(negative errno or 0, reply payload) for one request."""
        if opcode == INIT:
            major, minor = struct.unpack_from("<II", body)
            if major != 7:
                return 0, struct.pack("<II", 7, 31) + bytes(INIT_OUT.size - 8)
            return 0, INIT_OUT.pack(
                7,
                min(minor, 31),
                128 * 1024,
                FUSE_BIG_WRITES,
                16,
                12,
                MAX_WRITE,
                1,
                32,
                0,
                0,
                *([0] * 7),
            )
        if opcode == LOOKUP:
            if node != ROOT or body.rstrip(b"\0") != NAME:
                return -errno.ENOENT, b""
            return 0, ENTRY_HEAD.pack(CARD, 0, 1, 1, 0, 0) + self.attr(CARD)
        if opcode in (GETATTR, SETATTR):
            if node not in (ROOT, CARD):
                return -errno.ENOENT, b""
            return 0, ATTR_OUT_HEAD.pack(1, 0, 0) + self.attr(node)
        if opcode in (OPEN, OPENDIR):
            return 0, OPEN_OUT.pack(0, FOPEN_DIRECT_IO if opcode == OPEN else 0, 0)
        if opcode == READ:
            _fh, offset, size, _flags = READ_IN.unpack_from(body)
            return 0, os.pread(self.fd, size, offset)
        if opcode == WRITE:
            _fh, offset, size, _wf, _lo, _fl, _pad = WRITE_IN.unpack_from(body)
            data = body[WRITE_IN.size : WRITE_IN.size + size]
            good = max(0, min(size, self.error_at - offset))
            if good:
                os.pwrite(self.fd, data[:good], offset)
            if good < size:
                return -errno.EIO, b""
            return 0, WRITE_OUT.pack(size, 0)
        if opcode == READDIR:
            return 0, b""
        if opcode == FSYNC:
            os.fsync(self.fd)
            return 0, b""
        if opcode in (FLUSH, RELEASE, RELEASEDIR, DESTROY):
            return 0, b""
        if opcode == STATFS:
            return 0, STATFS_OUT.pack(1 << 20, 0, 0, 2, 0, 4096, 255, 4096, 0, *([0] * 6))
        return -errno.ENOSYS, b""


def mount(mountpoint: Path) -> int:
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"rig-faultfs", str(mountpoint).encode(), b"fuse.rig-faultfs", 0, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount fuse on {mountpoint}: {os.strerror(err)}")
    return fd


def serve(card: Path, mountpoint: Path, error_at: int) -> None:
    fs = FaultFs(card, error_at)
    fd = mount(mountpoint)
    while True:
        try:
            request = os.read(fd, MAX_WRITE + 4096)
        except OSError as e:
            if e.errno == errno.ENODEV:  # unmounted
                return
            if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                continue
            raise
        _len, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
        if opcode in NO_REPLY:
            continue
        try:
            error, payload = fs.handle(opcode, node, request[IN_HEADER.size :])
        except OSError as e:
            error, payload = -(e.errno or errno.EIO), b""
        if error:
            payload = b""
        reply = OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload
        try:
            os.write(fd, reply)
        except OSError as e:
            if e.errno == errno.ENOENT:  # the request was interrupted meanwhile
                continue
            if e.errno == errno.ENODEV:
                return
            raise
        if opcode == DESTROY:
            return


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
