"""Read a small file from the card's ext4 root partition, for detection only.

Which generation a card is shows best in ``/etc/octopi_version`` and
``/etc/os-release`` (VERSION_CODENAME). This is a read-only walk of ext2/3/4
(extents or block maps, linear directory scan, symlinks); anything it does not
understand returns None and detection falls back to the boot partition alone.
Nothing here ever writes.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from rig.card.mbr import SECTOR, parse_mbr
from rig.errors import RigError

EXT_MAGIC = 0xEF53
EXTENT_MAGIC = 0xF30A
INCOMPAT_64BIT = 0x80
FL_EXTENTS = 0x80000
FL_INLINE = 0x10000000
S_IFMT, S_IFDIR, S_IFLNK, S_IFREG = 0xF000, 0x4000, 0xA000, 0x8000
ROOT_INODE = 2
MAX_SIZE = 1 << 20  # detection reads small text files only


class _Unreadable(Exception):
    pass


class Ext4Reader:
    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self.f, self.offset, self.size = f, offset, size
        sb = self._read(1024, 1024)
        if struct.unpack_from("<H", sb, 56)[0] != EXT_MAGIC:
            raise _Unreadable("no ext superblock")
        self.block = 1024 << struct.unpack_from("<I", sb, 24)[0]
        self.first_data_block = struct.unpack_from("<I", sb, 20)[0]
        self.inodes_per_group = struct.unpack_from("<I", sb, 40)[0]
        rev = struct.unpack_from("<I", sb, 76)[0]
        self.inode_size = struct.unpack_from("<H", sb, 88)[0] if rev >= 1 else 128
        incompat = struct.unpack_from("<I", sb, 96)[0]
        self.desc_size = (
            (struct.unpack_from("<H", sb, 254)[0] or 64) if incompat & INCOMPAT_64BIT else 32
        )
        if not self.inodes_per_group or self.block > 65536:
            raise _Unreadable("odd geometry")

    def _read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > self.size:
            raise _Unreadable("outside the partition")
        self.f.seek(self.offset + pos)
        data = self.f.read(n)
        if len(data) != n:
            raise _Unreadable("short read")
        return data

    def _block(self, n: int) -> bytes:
        return self._read(n * self.block, self.block)

    def _inode(self, ino: int) -> bytes:
        group, index = divmod(ino - 1, self.inodes_per_group)
        desc_pos = (self.first_data_block + 1) * self.block + group * self.desc_size
        desc = self._read(desc_pos, self.desc_size)
        table = struct.unpack_from("<I", desc, 8)[0]
        if self.desc_size >= 64:
            table |= struct.unpack_from("<I", desc, 0x28)[0] << 32
        return self._read(table * self.block + index * self.inode_size, 128)

    def _blocks(self, inode: bytes) -> list[int]:
        """Physical blocks of the inode's data, in order (0 = hole)."""
        flags = struct.unpack_from("<I", inode, 0x20)[0]
        iblock = inode[0x28 : 0x28 + 60]
        if flags & FL_EXTENTS:
            out: dict[int, int] = {}
            self._extents(iblock, out, 0)
            return [out.get(i, 0) for i in range(max(out) + 1 if out else 0)]
        ptrs = list(struct.unpack_from("<15I", iblock))
        blocks = ptrs[:12]
        per = self.block // 4
        if ptrs[12]:
            blocks += struct.unpack_from(f"<{per}I", self._block(ptrs[12]))
        if ptrs[13]:
            for ind in struct.unpack_from(f"<{per}I", self._block(ptrs[13])):
                if ind:
                    blocks += struct.unpack_from(f"<{per}I", self._block(ind))
        return blocks

    def _extents(self, node: bytes, out: dict[int, int], depth_seen: int) -> None:
        magic, entries, _max, depth = struct.unpack_from("<HHHH", node, 0)
        if magic != EXTENT_MAGIC or depth_seen > 5:
            raise _Unreadable("bad extent tree")
        for i in range(entries):
            e = 12 + 12 * i
            if depth == 0:
                lblock, length, hi, lo = struct.unpack_from("<IHHI", node, e)
                if length > 32768:  # uninitialized extent: reads as zeros
                    continue
                for j in range(min(length, MAX_SIZE // self.block + 1)):
                    out[lblock + j] = ((hi << 32) | lo) + j
            else:
                _lblock, lo, hi = struct.unpack_from("<IIH", node, e)
                self._extents(self._block((hi << 32) | lo), out, depth_seen + 1)

    def _data(self, inode: bytes) -> bytes:
        size = struct.unpack_from("<I", inode, 4)[0]
        if size > MAX_SIZE:
            raise _Unreadable("file too large for detection")
        flags = struct.unpack_from("<I", inode, 0x20)[0]
        if flags & FL_INLINE:
            return inode[0x28 : 0x28 + min(size, 60)]
        parts = []
        for b in self._blocks(inode):
            parts.append(self._block(b) if b else bytes(self.block))
            if len(parts) * self.block >= size:
                break
        return b"".join(parts)[:size]

    def _lookup(self, dir_ino: int, name: str) -> int | None:
        data = self._data(self._inode(dir_ino))
        want = name.encode()
        pos = 0
        while pos + 8 <= len(data):
            ino, rec_len, name_len = struct.unpack_from("<IHB", data, pos)
            if rec_len < 8:
                break
            if ino and data[pos + 8 : pos + 8 + name_len] == want:
                return ino
            pos += rec_len
        return None

    def read_file(self, path: str) -> bytes | None:
        parts = [p for p in path.split("/") if p]
        ino, seen = ROOT_INODE, 0
        stack: list[int] = []  # directories walked, for ".." in symlinks
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                ino = stack.pop() if stack else ROOT_INODE
                continue
            child = self._lookup(ino, part)
            if child is None:
                return None
            node = self._inode(child)
            kind = struct.unpack_from("<H", node, 0)[0] & S_IFMT
            if kind == S_IFLNK:
                seen += 1
                if seen > 8:
                    return None
                size = struct.unpack_from("<I", node, 4)[0]
                flags = struct.unpack_from("<I", node, 0x20)[0]
                if size < 60 and not flags & (FL_EXTENTS | FL_INLINE):
                    target = node[0x28 : 0x28 + size].decode(errors="replace")
                else:
                    target = self._data(node).decode(errors="replace")
                if target.startswith("/"):
                    ino, stack = ROOT_INODE, []
                parts = [p for p in target.split("/") if p] + parts
                continue
            if parts:
                if kind != S_IFDIR:
                    return None
                stack.append(ino)
                ino = child
            else:
                return self._data(node) if kind == S_IFREG else None
        return None


def read_root_file(f: BinaryIO, path: str) -> bytes | None:
    """`path` from the first Linux partition of the disk open as `f`, or None."""
    try:
        f.seek(0)
        table = parse_mbr(f.read(SECTOR))
        root = table.root()
        if root is None:
            return None
        return Ext4Reader(f, root.offset, root.size).read_file(path)
    except (_Unreadable, RigError, struct.error, ValueError, OSError, IndexError, KeyError):
        return None
