"""Block maps: which byte ranges of an image must be written, and their checksums.

A map is the contract between "what is in the image" and the writer: either a
``.bmap`` file made by the image's producer (bmaptool's XML format, versions 1.x
and 2.0) or one derived from the image's file systems (rig.card.usedmap). Ranges
not in the map are never written, so a map must never leave out a used block.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from rig.errors import ConfigError

BLOCK = 4096


@dataclass(frozen=True)
class Extent:
    """Bytes [start, end) of the image; ``digest`` is the producer's checksum, if any."""

    start: int
    end: int
    digest: str | None = None

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class BlockMap:
    image_size: int
    extents: list[Extent]
    origin: str  # "bmap" | "derived" | "full"
    checksum_type: str | None = None
    notes: list[str] = field(default_factory=list)
    until_eof: bool = False  # a stream of unknown length: image_size is only a cap

    @property
    def mapped_bytes(self) -> int:
        return sum(e.size for e in self.extents)

    @classmethod
    def full(cls, image_size: int, note: str = "") -> BlockMap:
        return cls(image_size, [Extent(0, image_size)] if image_size else [], "full", notes=[note])


def merge(ranges: list[tuple[int, int]], limit: int, align: int = BLOCK) -> list[Extent]:
    """Sort, widen to ``align`` boundaries (clipped to ``limit``) and join touching ranges."""
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        start = max(0, start - start % align)
        end = min(limit, -(-end // align) * align)
        if start >= end:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [Extent(s, e) for s, e in out]


def find_bmap(image: Path) -> Path | None:
    """The .bmap beside an image: foo.img.bmap, foo.bmap, or foo.img.xz -> foo.img.bmap."""
    name = image.name
    candidates = [name + ".bmap"]
    stem = name
    for _ in range(2):
        if "." not in stem:
            break
        stem = stem.rsplit(".", 1)[0]
        candidates.append(stem + ".bmap")
    for c in candidates:
        p = image.with_name(c)
        if p.is_file():
            return p
    return None


def _text(root: ET.Element, tag: str, where: str) -> str:
    el = root.find(tag)
    if el is None or el.text is None:
        raise ConfigError(f"bmap has no <{tag}>", where=where)
    return el.text.strip()


def parse_bmap(path: Path) -> BlockMap:
    """Parse a bmap file (1.x or 2.0), checking its own checksum when it has one."""
    where = str(path)
    raw = path.read_bytes()
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise ConfigError(f"bmap is not valid XML: {e}", where=where) from None
    if root.tag != "bmap":
        raise ConfigError("not a bmap file (root element is not <bmap>)", where=where)
    version = root.get("version", "")
    major = version.split(".")[0]
    if major not in ("1", "2"):
        raise ConfigError(f"unsupported bmap version {version!r} (1.x and 2.x are)", where=where)
    try:
        image_size = int(_text(root, "ImageSize", where))
        block = int(_text(root, "BlockSize", where))
        blocks = int(_text(root, "BlocksCount", where))
    except ValueError:
        raise ConfigError("bmap sizes are not integers", where=where) from None
    ctype_el = root.find("ChecksumType")
    ctype = ctype_el.text.strip().lower() if ctype_el is not None and ctype_el.text else None
    if ctype is None and major == "1":
        ctype = "sha1"
    if ctype is not None and ctype not in hashlib.algorithms_available:
        raise ConfigError(f"bmap checksum type {ctype!r} is unknown", where=where)
    file_sum = root.find("BmapFileChecksum")
    if file_sum is None:
        file_sum = root.find("BmapFileSHA1")
    if file_sum is not None and file_sum.text and ctype:
        expected = file_sum.text.strip()
        # the file's checksum is computed with its own value replaced by zeros
        zeroed = raw.replace(expected.encode(), b"0" * len(expected), 1)
        if hashlib.new(ctype, zeroed).hexdigest() != expected:
            raise ConfigError(
                "bmap file checksum does not match its contents (corrupted bmap?)", where=where
            )
    block_map = root.find("BlockMap")
    if block_map is None:
        raise ConfigError("bmap has no <BlockMap>", where=where)
    extents: list[Extent] = []
    for r in block_map.findall("Range"):
        text = (r.text or "").strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", text)
        if not m:
            raise ConfigError(f"bad bmap range {text!r}", where=where)
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if last < first or last >= blocks:
            raise ConfigError(
                f"bmap range {text!r} outside the image's {blocks} blocks", where=where
            )
        digest = r.get("chksum") or r.get("sha1") or r.get("sha256")
        start, end = first * block, min((last + 1) * block, image_size)
        if extents and start < extents[-1].end:
            raise ConfigError(f"bmap range {text!r} overlaps or is out of order", where=where)
        extents.append(Extent(start, end, digest))
    return BlockMap(image_size, extents, "bmap", checksum_type=ctype)


def render_bmap(image_size: int, extents: list[Extent], checksum_type: str = "sha256") -> str:
    """A bmaptool 2.0 file for ``extents`` (each with its digest), with its own checksum.

    Extents must be block-aligned (the end of the last may be the image's end)."""
    blocks = -(-image_size // BLOCK)
    mapped = sum(-(-e.size // BLOCK) for e in extents)
    ranges = []
    for e in extents:
        if e.start % BLOCK or (e.end % BLOCK and e.end != image_size) or e.digest is None:
            raise ValueError(f"extent {e.start}..{e.end} is not block-aligned or has no digest")
        first, last = e.start // BLOCK, -(-e.end // BLOCK) - 1
        span = f"{first}" if first == last else f"{first}-{last}"
        ranges.append(f'    <Range chksum="{e.digest}"> {span} </Range>')
    zeros = "0" * len(hashlib.new(checksum_type).hexdigest())
    text = (
        '<?xml version="1.0" ?>\n<bmap version="2.0">\n'
        f"  <ImageSize> {image_size} </ImageSize>\n  <BlockSize> {BLOCK} </BlockSize>\n"
        f"  <BlocksCount> {blocks} </BlocksCount>\n  <MappedBlocksCount> {mapped} "
        f"</MappedBlocksCount>\n  <ChecksumType> {checksum_type} </ChecksumType>\n"
        f"  <BmapFileChecksum> {zeros} </BmapFileChecksum>\n  <BlockMap>\n"
        + "\n".join(ranges)
        + "\n  </BlockMap>\n</bmap>\n"
    )
    digest = hashlib.new(checksum_type, text.encode()).hexdigest()
    return text.replace(zeros, digest, 1)
