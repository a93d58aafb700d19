"""The MBR partition table of a card or image: where its partitions are.

Never hard-code offsets: the boot partition starts at 4 MiB on Buster..early
Bookworm and at 8 MiB since 2025. A GPT disk (protective 0xEE entry) is
reported as such so callers can refuse it with a clear message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rig.errors import ConfigError

SECTOR = 512
FAT_TYPES = {
    0x01: "FAT12",
    0x04: "FAT16",
    0x06: "FAT16",
    0x0B: "FAT32",
    0x0C: "FAT32",
    0x0E: "FAT16",
}
LINUX = 0x83
GPT_PROTECTIVE = 0xEE


@dataclass(frozen=True)
class Partition:
    index: int  # 1-based, as in root=PARTUUID=<disk id>-02
    type: int
    start_lba: int
    sectors: int
    bootable: bool

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def is_fat(self) -> bool:
        return self.type in FAT_TYPES

    @property
    def is_linux(self) -> bool:
        return self.type == LINUX


@dataclass(frozen=True)
class PartitionTable:
    disk_id: int
    partitions: tuple[Partition, ...]

    @property
    def partuuid_prefix(self) -> str:
        return f"{self.disk_id:08x}"

    def boot(self, where: str = "") -> Partition:
        """The first FAT partition: the Raspberry Pi boot partition."""
        for p in self.partitions:
            if p.is_fat:
                return p
        raise ConfigError("no FAT boot partition in the partition table", where=where)

    def root(self) -> Partition | None:
        for p in self.partitions:
            if p.is_linux:
                return p
        return None


def parse_mbr(sector0: bytes, where: str = "") -> PartitionTable:
    """Parse the first 512 bytes; ConfigError for no signature, GPT or nonsense entries."""
    if len(sector0) < SECTOR or sector0[510:512] != b"\x55\xaa":
        raise ConfigError("no MBR partition table (missing 55 AA signature)", where=where)
    (disk_id,) = struct.unpack_from("<I", sector0, 0x1B8)
    parts = []
    for i in range(4):
        entry = sector0[0x1BE + 16 * i : 0x1BE + 16 * (i + 1)]
        ptype = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if ptype == 0 or count == 0:
            continue
        if ptype == GPT_PROTECTIVE:
            raise ConfigError(
                "this is a GPT disk; Raspberry Pi images use an MBR partition table",
                where=where,
                hint="write a Raspberry Pi OS / OctoPi image first",
            )
        parts.append(Partition(i + 1, ptype, start, count, entry[0] == 0x80))
    if not parts:
        raise ConfigError("the MBR has no partitions", where=where)
    return PartitionTable(disk_id, tuple(parts))


def read_partition_table(path: str, where: str | None = None) -> PartitionTable:
    with open(path, "rb") as f:
        return parse_mbr(f.read(SECTOR), where or str(path))


def build_mbr(disk_id: int, entries: list[tuple[int, int, int]]) -> bytes:
    """Sector 0 for up to four (type, start_lba, sectors) primary partitions (LBA only)."""
    if len(entries) > 4:
        raise ValueError("an MBR holds at most four primary partitions")
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 0x1B8, disk_id)
    for i, (ptype, start, count) in enumerate(entries):
        chs_max = b"\xfe\xff\xff"
        entry = b"\x00" + chs_max + bytes([ptype]) + chs_max + struct.pack("<II", start, count)
        sector[0x1BE + 16 * i : 0x1BE + 16 * (i + 1)] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)
