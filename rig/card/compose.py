"""Put file-system images together into a disk image with an MBR (sparse, no mounting).

Used to build realistic test and benchmark images from ``mkfs.fat``/``mkfs.ext4 -d``
output, the way Raspberry Pi OS images are laid out (boot partition at 4 or 8 MiB).
"""

from __future__ import annotations

import os
from pathlib import Path

from rig.card.mbr import SECTOR, build_mbr

MIB = 1 << 20


def compose_image(
    out: Path, parts: list[tuple[int, Path]], *, start_mib: int = 4, disk_id: int = 0x5EED0001
) -> Path:
    """Write ``out``: an MBR, then each (type, file-system image) at MiB boundaries, sparse."""
    entries = []
    offset = start_mib * MIB
    for ptype, fs in parts:
        size = fs.stat().st_size
        entries.append((ptype, offset // SECTOR, -(-size // SECTOR)))
        offset += -(-size // MIB) * MIB
    with open(out, "wb") as f:
        f.truncate(offset)
        f.write(build_mbr(disk_id, entries))
        for (_, fs), (_, lba, _) in zip(parts, entries, strict=True):
            _copy_sparse(fs, f.fileno(), lba * SECTOR)
    return out


def _copy_sparse(src: Path, fd: int, at: int) -> None:
    zero = bytes(MIB)
    with open(src, "rb") as s:
        pos = 0
        while True:
            data = s.read(MIB)
            if not data:
                break
            if data != zero[: len(data)]:
                os.pwrite(fd, data, at + pos)
            pos += len(data)
