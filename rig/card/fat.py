"""Files in the FAT boot partition of a card or image, edited in place without mounting.

Why our own code (the options were tried, 2026-11):

- pyfatfs works, but it is built on PyFilesystem2 (`fs`), whose package
  ``__init__`` runs ``pkg_resources.declare_namespace``. The setuptools 65.5 of
  this venv prints nothing; setuptools >= 67.5 warns on every import (since 80.x
  "slated for removal as early as 2025-11-30"), and setuptools 82 removed
  ``pkg_resources``: ``import fs`` then fails. ``fs`` is unmaintained
  (PyFilesystem2 issue 577 open since 2023). In our trial it also left the
  FAT32 FSInfo free count wrong (fsck.fat: "Free cluster summary wrong").
- mtools (``mcopy -i img@@OFFSET``) is robust, but it is a binary the flash
  host must have, it is driven by parsing text output, one process per file
  makes an all-or-nothing change of several files impossible, and the tests
  need it as the *independent* reader of what we write.
- What provisioning needs is small: files in the root directory (and existing
  subdirectories), FAT16 and FAT32, VFAT long names. About 500 lines of plain
  code over a file object, with no dependency, unprivileged, on a block device
  or an image file alike.

Changes are transactional: every write goes to an in-memory sector cache and
nothing reaches the card until :meth:`FatVolume.commit` (data first, then the
FAT copies, then directory entries, then fsync). A failed step (partition
full, bad name) leaves the card byte-for-byte untouched.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rig.card.mbr import read_partition_table
from rig.errors import ConfigError, InfraError

ENTRY = 32
ATTR_READONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME = 0x08
ATTR_DIR = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LFN = 0x0F
FREE_SLOT = 0xE5
LFN_LAST = 0x40
CASE_LOWER_BASE = 0x08  # NT reserved byte: the 8.3 base is displayed in lower case
CASE_LOWER_EXT = 0x10

PRIO_DATA, PRIO_FAT, PRIO_DIR = 0, 1, 2  # commit order: never point at unwritten data

SHORT_OK = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
LONG_FORBIDDEN = set('"*/:<>?\\|')


def _lfn_checksum(short11: bytes) -> int:
    s = 0
    for c in short11:
        s = (((s & 1) << 7) + (s >> 1) + c) & 0xFF
    return s


def _dos_datetime(t: float | None = None) -> tuple[int, int]:
    tm = time.localtime(t)
    year = min(max(tm.tm_year, 1980), 2107)
    date = ((year - 1980) << 9) | (tm.tm_mon << 5) | tm.tm_mday
    clock = (tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec // 2)
    return clock, date


@dataclass(frozen=True)
class DirEntry:
    """One file or directory as a directory lists it."""

    name: str  # the long name when there is one, else the 8.3 name in its stored case
    short_name: str  # e.g. OCTOPI~1.TXT
    attr: int
    size: int
    first_cluster: int
    slots: tuple[int, ...]  # directory slot indices: long-name entries, then the 8.3 entry

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIR)


class _Directory:
    """The raw 32-byte slots of one directory: the FAT16 root region or a cluster chain."""

    def __init__(self, vol: FatVolume, cluster: int) -> None:
        self.vol = vol
        self.cluster = cluster  # 0: the fixed FAT12/16 root directory region
        if cluster == 0:
            self.chain: list[int] = []
            self.data = bytearray(vol._read(vol.root_offset, vol.root_entries * ENTRY))
        else:
            self.chain = vol._chain(cluster)
            self.data = bytearray(b"".join(vol._read_cluster(c) for c in self.chain))

    @property
    def slots(self) -> int:
        return len(self.data) // ENTRY

    def pos(self, slot: int) -> int:
        byte = slot * ENTRY
        if self.cluster == 0:
            return self.vol.root_offset + byte
        cs = self.vol.cluster_size
        return self.vol._cluster_pos(self.chain[byte // cs]) + byte % cs

    def raw(self, slot: int) -> bytes:
        return bytes(self.data[slot * ENTRY : (slot + 1) * ENTRY])

    def put(self, slot: int, entry: bytes) -> None:
        assert len(entry) == ENTRY
        self.data[slot * ENTRY : (slot + 1) * ENTRY] = entry
        self.vol._write(self.pos(slot), entry, PRIO_DIR)

    def entries(self) -> list[DirEntry]:
        found: list[DirEntry] = []
        parts: dict[int, bytes] = {}
        first = total = checksum = -1
        for slot in range(self.slots):
            e = self.raw(slot)
            if e[0] == 0x00:
                break
            if e[0] == FREE_SLOT:
                parts, first = {}, -1
                continue
            if e[11] & 0x3F == ATTR_LFN:
                seq = e[0] & 0x1F
                if e[0] & LFN_LAST:
                    parts, first, total, checksum = {}, slot, seq, e[13]
                if first < 0 or e[13] != checksum or seq < 1:
                    parts, first = {}, -1
                    continue
                parts[seq] = e[1:11] + e[14:26] + e[28:32]
                continue
            if e[11] & ATTR_VOLUME:
                parts, first = {}, -1
                continue
            short = self._short_text(e)
            long_name = None
            if first >= 0 and len(parts) == total and _lfn_checksum(e[:11]) == checksum:
                units = b"".join(parts[i] for i in range(1, total + 1))
                text = units.decode("utf-16-le", "replace")
                long_name = text.split("\x00", 1)[0]
            slots = tuple(range(first, slot + 1)) if long_name else (slot,)
            parts, first = {}, -1
            if short.upper() in (".", ".."):
                continue
            cluster = struct.unpack_from("<H", e, 26)[0]
            if self.vol.fat_type == "FAT32":
                cluster |= struct.unpack_from("<H", e, 20)[0] << 16
            found.append(
                DirEntry(
                    name=long_name or short,
                    short_name=short.upper(),
                    attr=e[11],
                    size=struct.unpack_from("<I", e, 28)[0],
                    first_cluster=cluster,
                    slots=slots,
                )
            )
        return found

    @staticmethod
    def _short_text(e: bytes) -> str:
        raw = bytearray(e[:11])
        if raw[0] == 0x05:
            raw[0] = 0xE5
        base = raw[:8].decode("cp437").rstrip(" ")
        ext = raw[8:11].decode("cp437").rstrip(" ")
        if e[12] & CASE_LOWER_BASE:
            base = base.lower()
        if e[12] & CASE_LOWER_EXT:
            ext = ext.lower()
        return f"{base}.{ext}" if ext else base

    def find(self, name: str) -> DirEntry | None:
        key = name.casefold()
        for entry in self.entries():
            if entry.name.casefold() == key or entry.short_name.casefold() == key:
                return entry
        return None

    def free_run(self, count: int) -> int | None:
        """First slot of `count` consecutive free slots, or None."""
        run_start, run = 0, 0
        for slot in range(self.slots):
            first = self.data[slot * ENTRY]
            if first == 0x00:  # end marker: everything from here on is free
                return self._tail(slot, count)
            if first == FREE_SLOT:
                if run == 0:
                    run_start = slot
                run += 1
                if run == count:
                    return run_start
            else:
                run = 0
        return None

    def _tail(self, end_marker: int, count: int) -> int | None:
        # free slots directly before the end marker join the free tail
        start = end_marker
        while start > 0 and self.data[(start - 1) * ENTRY] == FREE_SLOT:
            start -= 1
        return start if self.slots - start >= count else None


class FatVolume:
    """A FAT16/FAT32 file system at `offset` in a file or block device."""

    def __init__(self, file: BinaryIO, offset: int, size: int | None, where: str = "") -> None:
        self.file = file
        self.offset = offset
        self.where = where or getattr(file, "name", "FAT volume")
        self._pending: dict[int, tuple[int, bytes]] = {}  # sector -> (priority, bytes)
        boot = self._read_abs(offset, 512)
        self._parse_boot(boot, size)
        fat_bytes = self._read(self.fat_offset, self.fat_size)
        self._fat_orig = fat_bytes
        width = 2 if self.fat_type == "FAT16" else 4
        n = min(self.cluster_count + 2, len(fat_bytes) // width)
        self._fat = list(struct.unpack_from(f"<{n}{'H' if width == 2 else 'I'}", fat_bytes))
        self._fat_dirty = False
        self._free = sum(1 for c in range(2, n) if self._get(c) == 0)
        self._next = 2

    # --- boot sector ---------------------------------------------------------

    def _parse_boot(self, b: bytes, size: int | None) -> None:
        where = f"{self.where} @ byte {self.offset}"
        if b[510:512] != b"\x55\xaa" or b[0] not in (0xEB, 0xE9):
            raise ConfigError("the boot partition holds no FAT file system", where=where)
        bps, spc, reserved, nfats, root_entries, total16 = struct.unpack_from("<HBHBHH", b, 11)
        fat16_size = struct.unpack_from("<H", b, 22)[0]
        total32 = struct.unpack_from("<I", b, 32)[0]
        fat32_size = struct.unpack_from("<I", b, 36)[0]
        if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or nfats == 0:
            raise ConfigError("corrupt FAT boot sector (geometry)", where=where)
        fat_sectors = fat16_size or fat32_size
        total = total16 or total32
        root_sectors = (root_entries * ENTRY + bps - 1) // bps
        data_sector = reserved + nfats * fat_sectors + root_sectors
        if fat_sectors == 0 or total <= data_sector:
            raise ConfigError("corrupt FAT boot sector (sizes)", where=where)
        self.sector_size = bps
        self.cluster_size = bps * spc
        self.cluster_count = (total - data_sector) // spc
        if self.cluster_count < 4085:
            raise ConfigError("FAT12 is not supported (not a Raspberry Pi boot partition)", where)
        self.fat_type = "FAT16" if self.cluster_count < 65525 else "FAT32"
        self.size = total * bps
        if size is not None and self.size > size:
            raise ConfigError(
                f"the file system ({self.size} bytes) is larger than its partition ({size})",
                where=where,
            )
        self.fat_offset = reserved * bps
        self.fat_size = fat_sectors * bps
        self.fat_count = nfats
        self.root_offset = (reserved + nfats * fat_sectors) * bps
        self.root_entries = root_entries
        self.data_offset = data_sector * bps
        if self.fat_type == "FAT32":
            self.root_cluster = struct.unpack_from("<I", b, 44)[0]
            self.fsinfo_sector = struct.unpack_from("<H", b, 48)[0]
        else:
            self.root_cluster = 0
            self.fsinfo_sector = 0
        self.label = b[71 if self.fat_type == "FAT32" else 43 :][:11].decode("cp437").rstrip()

    # --- sector cache: reads see pending writes; commit() makes them real ----

    def _read_abs(self, pos: int, n: int) -> bytes:
        self.file.seek(pos)
        data = self.file.read(n)
        if len(data) != n:
            raise InfraError(
                f"short read: {len(data)} of {n} bytes", where=f"{self.where} @ byte {pos}"
            )
        return data

    def _read(self, pos: int, n: int) -> bytes:
        if n <= 0:
            return b""
        ss = self.sector_size
        data = bytearray(self._read_abs(self.offset + pos, n))
        if self._pending:
            for sector in range(pos // ss, (pos + n - 1) // ss + 1):
                hit = self._pending.get(sector)
                if hit is None:
                    continue
                s_start = sector * ss
                lo, hi = max(pos, s_start), min(pos + n, s_start + ss)
                data[lo - pos : hi - pos] = hit[1][lo - s_start : hi - s_start]
        return bytes(data)

    def _write(self, pos: int, data: bytes, prio: int) -> None:
        ss = self.sector_size
        end = pos + len(data)
        for sector in range(pos // ss, (end - 1) // ss + 1):
            s_start = sector * ss
            lo, hi = max(pos, s_start), min(end, s_start + ss)
            if lo == s_start and hi == s_start + ss:
                buf = bytearray(data[lo - pos : hi - pos])
            else:
                buf = bytearray(self._read(s_start, ss))
                buf[lo - s_start : hi - s_start] = data[lo - pos : hi - pos]
            old = self._pending.get(sector)
            self._pending[sector] = (min(prio, old[0]) if old else prio, bytes(buf))

    @property
    def dirty(self) -> bool:
        return bool(self._pending) or self._fat_dirty

    def commit(self) -> None:
        """Write every pending change: data, FAT copies (+ FSInfo), directories; then fsync."""
        if self._fat_dirty:
            self._stage_fat()
        if not self._pending:
            return
        ss = self.sector_size
        try:
            for sector, (_prio, buf) in sorted(self._pending.items(), key=lambda kv: kv[1][0]):
                self.file.seek(self.offset + sector * ss)
                self.file.write(buf)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:
            raise InfraError(
                f"writing the boot partition failed: {e.strerror or e}", where=self.where
            ) from e
        self._pending.clear()

    def discard(self) -> None:
        """Forget pending changes (the card was not touched)."""
        self._pending.clear()
        self._fat_dirty = False

    def _stage_fat(self) -> None:
        width = 2 if self.fat_type == "FAT16" else 4
        packed = struct.pack(f"<{len(self._fat)}{'H' if width == 2 else 'I'}", *self._fat)
        new = packed + self._fat_orig[len(packed) :]
        ss = self.sector_size
        for start in range(0, len(new), ss):
            chunk = new[start : start + ss]
            if chunk != self._fat_orig[start : start + ss]:
                for copy in range(self.fat_count):
                    self._write(self.fat_offset + copy * self.fat_size + start, chunk, PRIO_FAT)
        if self.fat_type == "FAT32" and self.fsinfo_sector:
            pos = self.fsinfo_sector * ss
            info = self._read(pos, 512)
            if info[:4] == b"RRaA" and info[484:488] == b"rrAa":
                self._write(pos + 488, struct.pack("<II", self._free, self._next), PRIO_FAT)
        self._fat_orig = new
        self._fat_dirty = False

    # --- clusters ----------------------------------------------------------

    @property
    def _eoc(self) -> int:
        return 0xFFFF if self.fat_type == "FAT16" else 0x0FFFFFFF

    def _get(self, n: int) -> int:
        v = self._fat[n]
        return v & 0x0FFFFFFF if self.fat_type == "FAT32" else v

    def _set(self, n: int, value: int) -> None:
        if self.fat_type == "FAT32":
            value = (self._fat[n] & 0xF0000000) | (value & 0x0FFFFFFF)
        self._fat[n] = value
        self._fat_dirty = True

    def _is_end(self, v: int) -> bool:
        return v >= (0xFFF8 if self.fat_type == "FAT16" else 0x0FFFFFF8)

    def _cluster_pos(self, n: int) -> int:
        return self.data_offset + (n - 2) * self.cluster_size

    def _read_cluster(self, n: int) -> bytes:
        return self._read(self._cluster_pos(n), self.cluster_size)

    def _chain(self, first: int) -> list[int]:
        chain: list[int] = []
        n = first
        limit = self.cluster_count + 2
        while 2 <= n < limit:
            chain.append(n)
            if len(chain) > self.cluster_count:
                raise InfraError("cluster chain loops (corrupt FAT)", where=self.where)
            n = self._get(n)
        if chain and not self._is_end(n):
            raise InfraError(f"cluster chain from {first} is broken", where=self.where)
        return chain

    @property
    def free_clusters(self) -> int:
        return self._free

    @property
    def free_bytes(self) -> int:
        return self._free * self.cluster_size

    def _allocate(self, count: int) -> list[int]:
        if count > self._free:
            raise self._full(count * self.cluster_size)
        got: list[int] = []
        limit = min(self.cluster_count + 2, len(self._fat))
        n = self._next
        while len(got) < count:
            if n >= limit:
                n = 2
            if self._get(n) == 0:
                got.append(n)
                self._set(n, self._eoc)
            n += 1
        for a, b in itertools.pairwise(got):
            self._set(a, b)
        self._free -= count
        self._next = n if n < limit else 2
        return got

    def _release(self, chain: list[int]) -> None:
        for n in chain:
            self._set(n, 0)
        self._free += len(chain)

    def _full(self, need: int) -> InfraError:
        return InfraError(
            f"the boot partition is full: {need} bytes needed, {self.free_bytes} free",
            where=self.where,
            hint="remove files from the boot partition or use an image with a larger one",
        )

    # --- paths ---------------------------------------------------------------

    @staticmethod
    def _split(path: str) -> list[str]:
        return [p for p in path.replace("\\", "/").split("/") if p]

    def _directory(self, parts: list[str]) -> _Directory:
        d = _Directory(self, self.root_cluster)
        for i, part in enumerate(parts):
            entry = d.find(part)
            if entry is None or not entry.is_dir:
                raise FileNotFoundError(f"/{'/'.join(parts[: i + 1])}: no such directory")
            d = _Directory(self, entry.first_cluster or self.root_cluster)
        return d

    def listdir(self, path: str = "/") -> list[DirEntry]:
        return self._directory(self._split(path)).entries()

    def stat(self, path: str) -> DirEntry | None:
        parts = self._split(path)
        if not parts:
            return None
        return self._directory(parts[:-1]).find(parts[-1])

    def exists(self, path: str) -> bool:
        try:
            return self.stat(path) is not None
        except FileNotFoundError:
            return False

    def read(self, path: str) -> bytes:
        entry = self.stat(path)
        if entry is None or entry.is_dir:
            raise FileNotFoundError(f"{path}: no such file on {self.where}")
        if entry.size == 0:
            return b""
        data = b"".join(self._read_cluster(c) for c in self._chain(entry.first_cluster))
        if len(data) < entry.size:
            raise InfraError(f"{path}: cluster chain shorter than the file", where=self.where)
        return data[: entry.size]

    # --- changes -------------------------------------------------------------

    def write(self, path: str, data: bytes) -> None:
        """Create or replace a file (the replaced file keeps its names)."""
        parts = self._split(path)
        if not parts:
            raise ValueError("empty path")
        d = self._directory(parts[:-1])
        name = parts[-1]
        existing = d.find(name)
        if existing is not None and existing.is_dir:
            raise IsADirectoryError(f"{path} is a directory")
        need = -(-len(data) // self.cluster_size)
        old = self._chain(existing.first_cluster) if existing and existing.first_cluster else []
        names = None if existing else self._new_names(d, name)
        extra = 0 if names is None else self._dir_growth(d, len(names))
        if need + extra > self._free + len(old):
            raise self._full(len(data))
        if need + extra > self._free:  # only fits by reusing the old clusters
            self._release(old)
            old = []
        if names is not None and extra:
            self._grow(d, extra)
        chain = self._allocate(need) if need else []
        for i, c in enumerate(chain):
            chunk = data[i * self.cluster_size : (i + 1) * self.cluster_size]
            self._write(self._cluster_pos(c), chunk.ljust(self.cluster_size, b"\0"), PRIO_DATA)
        first = chain[0] if chain else 0
        clock, date = _dos_datetime()
        if existing is not None:
            slot = existing.slots[-1]
            e = bytearray(d.raw(slot))
            e[11] |= ATTR_ARCHIVE
            struct.pack_into("<HHHH", e, 18, date, first >> 16, clock, date)
            struct.pack_into("<HI", e, 26, first & 0xFFFF, len(data))
            d.put(slot, bytes(e))
            self._release(old)
        else:
            assert names is not None
            self._place(d, names, ATTR_ARCHIVE, first, len(data), clock, date)

    def mkdir(self, path: str) -> None:
        """Create a directory (its parent must exist); no-op when it exists."""
        parts = self._split(path)
        d = self._directory(parts[:-1])
        existing = d.find(parts[-1])
        if existing is not None:
            if not existing.is_dir:
                raise FileExistsError(f"{path} exists and is a file")
            return
        names = self._new_names(d, parts[-1])
        extra = self._dir_growth(d, len(names))
        if 1 + extra > self._free:
            raise self._full(self.cluster_size)
        if extra:
            self._grow(d, extra)
        (cluster,) = self._allocate(1)
        clock, date = _dos_datetime()
        body = bytearray(self.cluster_size)
        parent = 0 if d.cluster == self.root_cluster else d.cluster
        for i, (nm, c) in enumerate(((b".", cluster), (b"..", parent))):
            e = bytearray(ENTRY)
            e[0:11] = nm.ljust(11, b" ")
            e[11] = ATTR_DIR
            struct.pack_into("<HHHHHH", e, 14, clock, date, date, c >> 16, clock, date)
            struct.pack_into("<H", e, 26, c & 0xFFFF)
            body[i * ENTRY : (i + 1) * ENTRY] = e
        self._write(self._cluster_pos(cluster), bytes(body), PRIO_DATA)
        self._place(d, names, ATTR_DIR, cluster, 0, clock, date)

    def delete(self, path: str) -> bool:
        """Remove a file; False when it was not there."""
        parts = self._split(path)
        try:
            d = self._directory(parts[:-1])
        except FileNotFoundError:
            return False
        entry = d.find(parts[-1]) if parts else None
        if entry is None:
            return False
        if entry.is_dir:
            raise IsADirectoryError(f"{path} is a directory")
        for slot in entry.slots:
            e = bytearray(d.raw(slot))
            e[0] = FREE_SLOT
            d.put(slot, bytes(e))
        if entry.first_cluster:
            self._release(self._chain(entry.first_cluster))
        return True

    # --- names and directory slots ---------------------------------------------

    def _new_names(self, d: _Directory, name: str) -> list[bytes]:
        """The 32-byte entries (long-name entries, then the 8.3 one) minus cluster/size/time."""
        if (
            name in (".", "..")
            or len(name) > 255
            or name != name.rstrip(" .")
            or any(c in LONG_FORBIDDEN or ord(c) < 32 for c in name)
        ):
            raise ValueError(f"{name!r} is not a valid FAT file name")
        short, case = _plain_short(name)
        if short is not None:
            e = bytearray(ENTRY)
            e[0:11] = short
            e[12] = case
            return [bytes(e)]
        taken = {e.short_name for e in d.entries()}
        short = _numbered_short(name, taken)
        checksum = _lfn_checksum(short)
        units = name.encode("utf-16-le")
        if len(units) % 26:
            units += b"\0\0"
            units += b"\xff" * (-len(units) % 26)
        pieces = [units[i : i + 26] for i in range(0, len(units), 26)]
        entries = []
        for seq in range(len(pieces), 0, -1):
            p = pieces[seq - 1]
            e = bytearray(ENTRY)
            e[0] = seq | (LFN_LAST if seq == len(pieces) else 0)
            e[1:11] = p[0:10]
            e[11] = ATTR_LFN
            e[13] = checksum
            e[14:26] = p[10:22]
            e[28:32] = p[22:26]
            entries.append(bytes(e))
        sfn = bytearray(ENTRY)
        sfn[0:11] = short
        entries.append(bytes(sfn))
        return entries

    def _dir_growth(self, d: _Directory, count: int) -> int:
        """Clusters a directory needs to hold `count` more slots (0 if they fit)."""
        if d.free_run(count) is not None:
            return 0
        if d.cluster == 0:
            raise InfraError(
                "the FAT16 root directory is full", where=self.where, hint="delete unused files"
            )
        per = self.cluster_size // ENTRY
        return -(-count // per)

    def _grow(self, d: _Directory, clusters: int) -> None:
        new = self._allocate(clusters)
        self._set(d.chain[-1], new[0])
        for c in new:
            self._write(self._cluster_pos(c), bytes(self.cluster_size), PRIO_DATA)
        d.chain += new
        d.data += bytes(clusters * self.cluster_size)

    def _place(
        self,
        d: _Directory,
        names: list[bytes],
        attr: int,
        first: int,
        size: int,
        clock: int,
        date: int,
    ) -> None:
        start = d.free_run(len(names))
        assert start is not None, "directory space was checked before"
        end_marker_used = any(d.data[(start + i) * ENTRY] == 0 for i in range(len(names)))
        for i, raw in enumerate(names):
            e = bytearray(raw)
            if i == len(names) - 1:
                e[11] = attr
                struct.pack_into("<BHHHHHH", e, 13, 0, clock, date, date, first >> 16, clock, date)
                struct.pack_into("<HI", e, 26, first & 0xFFFF, size)
            d.put(start + i, bytes(e))
        after = start + len(names)
        if end_marker_used and after < d.slots and d.data[after * ENTRY] != 0:
            d.put(after, bytes(ENTRY))  # keep the end marker right after the last entry


def _plain_short(name: str) -> tuple[bytes | None, int]:
    """An 8.3 entry when the name fits one without a long name (case kept by NT flags)."""
    base, dot, ext = name.partition(".")
    if not base or "." in ext or len(base) > 8 or len(ext) > 3 or (dot and not ext):
        return None, 0
    case = 0
    for part, flag in ((base, CASE_LOWER_BASE), (ext, CASE_LOWER_EXT)):
        if part != part.upper() and part != part.lower():
            return None, 0  # mixed case needs a long name
        if part and part == part.lower() and part != part.upper():
            case |= flag
    raw = (base.upper().ljust(8) + ext.upper().ljust(3)).encode("ascii", "replace")
    if any(c not in SHORT_OK for c in raw[: len(base)] + raw[8 : 8 + len(ext)]):
        return None, 0
    if raw[0] == 0xE5:
        return None, 0
    return raw, case


def _numbered_short(name: str, taken: set[str]) -> bytes:
    """BASE~N.EXT, unique in the directory."""

    def clean(s: str) -> str:
        out = []
        for ch in s.upper().replace(" ", ""):
            b = ch.encode("ascii", "replace")
            out.append(ch if len(b) == 1 and b[0] in SHORT_OK else "_")
        return "".join(out)

    stem, dot, ext = name.lstrip(".").rpartition(".")
    if not dot:
        stem, ext = ext, ""
    base = clean(stem.replace(".", "")) or "FILE"
    ext = clean(ext)[:3]
    for n in range(1, 1_000_000):
        tail = f"~{n}"
        candidate = base[: 8 - len(tail)] + tail
        text = f"{candidate}.{ext}" if ext else candidate
        if text not in taken:
            return (candidate.ljust(8) + ext.ljust(3)).encode("ascii")
    raise InfraError("no free 8.3 name")


@contextmanager
def open_boot_partition(
    path: str | os.PathLike[str], *, write: bool = True, where: str | None = None
) -> Iterator[FatVolume]:
    """The FAT boot partition of a card or image (MBR parsed, GPT refused).

    Commits on a clean exit, discards on an exception: the card is either
    fully changed or not at all.
    """
    label = where or str(path)
    table = read_partition_table(str(path), label)
    part = table.boot(label)
    mode = "r+b" if write else "rb"
    try:
        f = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as e:
        raise InfraError(f"cannot open: {e.strerror}", where=label) from e
    try:
        f.seek(0, os.SEEK_END)
        disk_size = f.tell()
        if part.end > disk_size:
            raise ConfigError(
                f"partition {part.index} ends at byte {part.end}, beyond the end "
                f"of the disk ({disk_size})",
                where=label,
                hint="the image is truncated",
            )
        vol = FatVolume(f, part.offset, part.size, label)
        try:
            yield vol
        except BaseException:
            vol.discard()
            raise
        if write:
            vol.commit()
    finally:
        f.close()


def read_boot_file(path: str | Path, name: str) -> bytes | None:
    """One file from a card's boot partition, or None (read-only convenience)."""
    with open_boot_partition(path, write=False) as vol:
        return vol.read(name) if vol.exists(name) else None
