"""Derive the map of used blocks of an image from its partition table and file systems.

Only free space of a file system we understand is ever left out: the clusters the
FAT of the boot partition marks free, and the blocks the ext2/3/4 block bitmaps
of the root partition mark free. File-system metadata (boot sectors, FATs,
superblocks and their backups, group descriptors, bitmaps, inode tables) is
always used, and so is every zero block inside a used area. Whatever we do not
understand -- another partition type, an ext4 feature that changes where blocks
live, a journal that still needs recovery -- is written in full. The region
before the first partition (MBR, boot loaders of other boards) is always written;
space outside all partitions is not referenced by anything and is skipped.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from rig.card.bmap import BlockMap, merge
from rig.card.mbr import SECTOR, parse_mbr
from rig.errors import ConfigError


class Unknown(Exception):
    """This partition's layout is not understood: write it in full."""


def derive_map(image: Path) -> BlockMap:
    """The used-block map of a raw image file or a card's block device (seekable, raw)."""
    with open(image, "rb") as f:
        size = f.seek(0, os.SEEK_END)  # a block device's fstat size is 0: ask its end
        f.seek(0)
        try:
            table = parse_mbr(f.read(SECTOR), str(image))
        except ConfigError as e:
            return BlockMap.full(size, f"no usable MBR ({e.message}): writing everything")
        notes: list[str] = []
        first = min(p.offset for p in table.partitions)
        ranges: list[tuple[int, int]] = [(0, max(SECTOR, min(first, size)))]
        for p in table.partitions:
            end = min(p.end, size)
            if p.offset >= end:
                continue
            try:
                if p.is_fat:
                    used = list(fat_used(f, p.offset, end - p.offset))
                    kind = "FAT"
                elif p.is_linux:
                    used = list(ext_used(f, p.offset, end - p.offset))
                    kind = "ext"
                else:
                    raise Unknown(f"partition type 0x{p.type:02x}")
            except (Unknown, struct.error) as e:
                notes.append(f"partition {p.index}: {e or 'truncated'}; written in full")
                ranges.append((p.offset, end))
                continue
            ranges += [(p.offset + s, p.offset + e) for s, e in used]
            n = sum(x.size for x in merge(used, end - p.offset, 1))
            notes.append(f"partition {p.index} ({kind}): {n} of {end - p.offset} bytes used")
        return BlockMap(size, merge(ranges, size), "derived", notes=notes)


def _pread(f, offset: int, size: int) -> bytes:
    data = os.pread(f.fileno(), size, offset)
    if len(data) != size:
        raise Unknown(f"image ends inside file-system metadata at byte {offset}")
    return data


def bit_runs(bitmap: bytes, nbits: int) -> Iterator[tuple[int, int]]:
    """Runs [first, end) of set bits (bit i of byte j is item 8*j + i), first nbits only."""
    x = int.from_bytes(bitmap, "little") & ((1 << nbits) - 1)
    pos = 0
    while x:
        low = (x & -x).bit_length() - 1
        x >>= low
        pos += low
        ones = (x ^ (x + 1)).bit_length() - 1
        yield pos, pos + ones
        x >>= ones
        pos += ones


# --- FAT12/16/32 -------------------------------------------------------------------


def fat_used(f, base: int, size: int) -> Iterator[tuple[int, int]]:
    """Byte ranges (relative to the partition) a FAT file system uses."""
    bs = _pread(f, base, 512)
    if bs[510:512] != b"\x55\xaa":
        raise Unknown("no FAT boot sector signature")
    bps, spc, reserved, nfats, root_entries, tot16 = struct.unpack_from("<HBHBHH", bs, 11)
    fatsz16 = struct.unpack_from("<H", bs, 22)[0]
    tot32, fatsz32 = struct.unpack_from("<II", bs, 32)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or nfats == 0:
        raise Unknown("FAT boot sector does not look valid")
    fatsz = fatsz16 or fatsz32
    total = tot16 or tot32
    root_sectors = math.ceil(root_entries * 32 / bps)
    first_data = reserved + nfats * fatsz + root_sectors
    if not fatsz or total * bps > size or first_data >= total:
        raise Unknown("FAT geometry does not fit the partition")
    clusters = (total - first_data) // spc
    yield 0, first_data * bps  # boot sector, reserved sectors, FATs, root directory
    data_end = (first_data + clusters * spc) * bps
    yield data_end, size  # sectors after the last cluster, partition tail: not ours to judge
    fat = _pread(f, base + reserved * bps, fatsz * bps)
    cluster_bytes = spc * bps
    start = first_data * bps
    used = _fat_used_clusters(fat, clusters)
    for first, end in used:
        yield start + (first - 2) * cluster_bytes, start + (end - 2) * cluster_bytes


def _fat_used_clusters(fat: bytes, clusters: int) -> Iterator[tuple[int, int]]:
    """Runs of clusters (numbered from 2) whose FAT entry is not zero (free)."""
    last = clusters + 2
    if clusters < 4085:  # FAT12: 12-bit entries, two per three bytes
        entries = []
        for n in range(last):
            off = n * 3 // 2
            if off + 1 >= len(fat):
                raise Unknown("FAT12 table shorter than its cluster count")
            v = fat[off] | fat[off + 1] << 8
            entries.append(v >> 4 if n & 1 else v & 0xFFF)
    elif clusters < 65525:
        if len(fat) < last * 2:
            raise Unknown("FAT16 table shorter than its cluster count")
        entries = list(memoryview(fat)[: last * 2].cast("H"))
    else:
        if len(fat) < last * 4:
            raise Unknown("FAT32 table shorter than its cluster count")
        entries = [v & 0x0FFFFFFF for v in memoryview(fat)[: last * 4].cast("I")]
    run = None
    for n in range(2, last):
        if entries[n]:
            if run is None:
                run = n
        elif run is not None:
            yield run, n
            run = None
    if run is not None:
        yield run, last


# --- ext2/3/4 ---------------------------------------------------------------------

INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_64BIT = 0x80
# features that do not change where blocks live or how the bitmaps account for them
INCOMPAT_OK = 0x2 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x10000
INCOMPAT_OK |= 0x20000
RO_SPARSE_SUPER = 0x1
RO_GDT_CSUM = 0x10
RO_METADATA_CSUM = 0x400
RO_OK = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x400 | 0x1000 | 0x2000 | 0x8000
RO_OK |= 0x10000
COMPAT_SPARSE_SUPER2 = 0x200
BG_BLOCK_UNINIT = 0x2


def _is_power(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def ext_used(f, base: int, size: int) -> Iterator[tuple[int, int]]:
    """Byte ranges (relative to the partition) an ext2/3/4 file system uses."""
    sb = _pread(f, base + 1024, 1024)
    if struct.unpack_from("<H", sb, 0x38)[0] != 0xEF53:
        raise Unknown("no ext2/3/4 superblock")
    (blocks_lo, _r, _free, _fi, first_data, log_bs, _lc, bpg, _cpg, ipg) = struct.unpack_from(
        "<IIIIIIIIII", sb, 4
    )
    rev = struct.unpack_from("<I", sb, 0x4C)[0]
    inode_size = struct.unpack_from("<H", sb, 0x58)[0] if rev >= 1 else 128
    compat, incompat, ro = struct.unpack_from("<III", sb, 0x5C)
    reserved_gdt = struct.unpack_from("<H", sb, 0xCE)[0]
    desc_size = struct.unpack_from("<H", sb, 0xFE)[0]
    blocks_hi = struct.unpack_from("<I", sb, 0x150)[0]
    backup_bgs = struct.unpack_from("<II", sb, 0x24C)
    if incompat & INCOMPAT_RECOVER:
        raise Unknown("ext journal needs recovery")
    if incompat & (INCOMPAT_JOURNAL_DEV | INCOMPAT_META_BG) or incompat & ~INCOMPAT_OK:
        raise Unknown(f"ext feature_incompat 0x{incompat:x} not understood")
    if ro & ~RO_OK:
        raise Unknown(f"ext feature_ro_compat 0x{ro:x} not understood (bigalloc?)")
    if log_bs > 6 or bpg == 0 or ipg == 0:
        raise Unknown("ext superblock geometry does not look valid")
    bs = 1024 << log_bs
    if bpg > bs * 8:
        raise Unknown("ext blocks per group larger than one bitmap block")
    blocks = blocks_lo | (blocks_hi << 32 if incompat & INCOMPAT_64BIT else 0)
    if blocks * bs > size:
        raise Unknown("ext file system larger than its partition")
    if not (incompat & INCOMPAT_64BIT and desc_size >= 64):
        desc_size = 32
    groups = math.ceil((blocks - first_data) / bpg)
    gdt_blocks = math.ceil(groups * desc_size / bs)
    itable_blocks = math.ceil(ipg * inode_size / bs)
    gdt = _pread(f, base + (first_data + 1) * bs, gdt_blocks * bs)
    uninit_matters = bool(ro & (RO_GDT_CSUM | RO_METADATA_CSUM))

    def has_backup(g: int) -> bool:
        if g == 0:
            return True
        if compat & COMPAT_SPARSE_SUPER2:
            return g in backup_bgs
        if not ro & RO_SPARSE_SUPER:
            return True
        return g == 1 or _is_power(g, 3) or _is_power(g, 5) or _is_power(g, 7)

    yield 0, (first_data + 1) * bs  # boot block and primary superblock
    yield blocks * bs, size  # beyond the file system: written in full
    for g in range(groups):
        d = gdt[g * desc_size : (g + 1) * desc_size]
        bbitmap, ibitmap, itable = struct.unpack_from("<III", d, 0)
        flags = struct.unpack_from("<H", d, 0x12)[0]
        if desc_size >= 64:
            hi = struct.unpack_from("<III", d, 0x20)
            bbitmap |= hi[0] << 32
            ibitmap |= hi[1] << 32
            itable |= hi[2] << 32
        if not (bbitmap < blocks and ibitmap < blocks and itable + itable_blocks <= blocks):
            raise Unknown(f"ext group {g} descriptor points outside the file system")
        yield bbitmap * bs, (bbitmap + 1) * bs
        yield ibitmap * bs, (ibitmap + 1) * bs
        yield itable * bs, (itable + itable_blocks) * bs
        gstart = first_data + g * bpg
        gblocks = min(bpg, blocks - gstart)
        if has_backup(g):
            yield gstart * bs, (gstart + 1 + gdt_blocks + reserved_gdt) * bs
        if uninit_matters and flags & BG_BLOCK_UNINIT:
            continue  # no data in this group: only the metadata above
        bitmap = _pread(f, base + bbitmap * bs, bs)
        for first, end in bit_runs(bitmap, gblocks):
            yield (gstart + first) * bs, (gstart + end) * bs
