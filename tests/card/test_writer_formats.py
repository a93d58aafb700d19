"""The writer on real images: every format byte-exact, .bmap honoured, MBR last, records."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from _writer_images import check_trees, fill_random, have_tools, make_image, sample_trees

from rig.card import writer
from rig.card.bmap import parse_bmap
from rig.card.usedmap import derive_map
from rig.card.writer import card_records, write_image
from rig.errors import ConfigError

pytestmark = pytest.mark.skipif(not have_tools(), reason="needs mkfs.fat, mtools, e2fsprogs")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("img")
    boot, root = sample_trees(work)
    return make_image(work, boot, root), boot, root


_packed: dict[tuple[Path, str], Path] = {}


def _pack(img: Path, fmt: str, out: Path) -> Path:
    """The image packed as ``fmt``; made once per module (xz of 80 MB takes seconds)."""
    if (img, fmt) not in _packed:
        _packed[img, fmt] = _pack_now(img, fmt, img.parent)
    return _packed[img, fmt]


def _pack_now(img: Path, fmt: str, out: Path) -> Path:
    data = img.read_bytes()
    if fmt == "raw":
        return img
    if fmt == "zip":
        p = out / "disk.zip"
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            z.writestr("disk.img", data)
        return p
    if fmt == "xz":
        p = out / "disk.img.xz"
        p.write_bytes(lzma.compress(data, preset=0))
        return p
    if fmt == "gz":
        p = out / "disk.img.gz"
        p.write_bytes(gzip.compress(data, compresslevel=1))
        return p
    p = out / "disk.img.zst"
    p.write_bytes(zstandard.ZstdCompressor(level=1).compress(data))
    return p


def _used_ranges_equal(img: Path, target: Path) -> int:
    m = derive_map(img)
    with open(img, "rb") as a, open(target, "rb") as b:
        for e in m.extents:
            a.seek(e.start)
            b.seek(e.start)
            assert a.read(e.size) == b.read(e.size), f"bytes {e.start}..{e.end} differ"
    return m.mapped_bytes


FORMATS = [("raw", True)] + [(f, u) for f in ("zip", "xz", "gz", "zst") for u in (True, False)]


@pytest.mark.parametrize(
    ("fmt", "unpack"), FORMATS, ids=[f"{f}-{'unpacked' if u else 'streamed'}" for f, u in FORMATS]
)
def test_each_format_is_written_byte_exact(image, fmt, unpack, tmp_path):
    img, boot, root = image
    src = _pack(img, fmt, tmp_path)
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    r = write_image(
        src, target, unpack_dir=tmp_path / "unpacked" if unpack else None, state_dir=tmp_path
    )
    assert r.verified
    mapped = _used_ranges_equal(img, target)
    if fmt == "raw" or unpack:
        assert r.origin == "derived"
        assert r.bytes_written == mapped < img.stat().st_size // 2  # free space skipped
    else:
        assert r.origin == "full" and r.bytes_written == img.stat().st_size
    check_trees(target, boot, root, tmp_path)


def test_free_space_is_left_alone(image, tmp_path):
    img, _, _ = image
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    before = target.read_bytes()
    write_image(img, target)
    after = target.read_bytes()
    m = derive_map(img)
    gap_start = m.extents[-1].end if m.extents[-1].end < len(after) else m.extents[0].end
    # some unmapped byte range kept the garbage it had: nothing beyond the map was written
    gaps = [(a.end, b.start) for a, b in zip(m.extents, m.extents[1:], strict=False)]
    assert gaps, "the map should have gaps (free space)"
    s, e = max(gaps, key=lambda g: g[1] - g[0])
    assert after[s:e] == before[s:e]
    assert gap_start > 0


def test_bmap_is_honoured(image, tmp_path):
    img, _, _ = image
    if not shutil.which("bmaptool"):
        pytest.skip("bmaptool not installed")
    sparse = tmp_path / "sparse.img"
    subprocess.run(["cp", "--sparse=always", str(img), str(sparse)], check=True)
    subprocess.run(
        ["bmaptool", "create", "-o", str(tmp_path / "x.img.bmap"), str(sparse)], check=True
    )
    local = tmp_path / "x.img"
    shutil.copy(img, local)
    bm = parse_bmap(tmp_path / "x.img.bmap")
    assert bm.checksum_type == "sha256" and all(e.digest for e in bm.extents)
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    before = target.read_bytes()
    r = write_image(local, target)  # finds x.img.bmap beside it
    assert r.origin == "bmap" and r.bytes_written == bm.mapped_bytes
    after, want = target.read_bytes(), local.read_bytes()
    pos = 0
    for e in bm.extents:
        assert after[e.start : e.end] == want[e.start : e.end]
        if pos < e.start:
            assert after[pos : e.start] == before[pos : e.start], "unmapped bytes were written"
        pos = e.end


def test_image_not_matching_its_bmap_is_refused(image, tmp_path):
    img, _, _ = image
    if not shutil.which("bmaptool"):
        pytest.skip("bmaptool not installed")
    local = tmp_path / "y.img"
    shutil.copy(img, local)
    subprocess.run(
        ["bmaptool", "create", "-o", str(tmp_path / "y.img.bmap"), str(local)], check=True
    )
    bm = parse_bmap(tmp_path / "y.img.bmap")
    with open(local, "r+b") as f:  # damage a mapped byte after the bmap was made
        f.seek(bm.extents[-1].start + 10)
        f.write(b"\xff\x00\xff")
    with pytest.raises(ConfigError, match="does not match its bmap"):
        write_image(local, tmp_path / "card.bin")


def test_partition_table_is_written_last(image, tmp_path, monkeypatch):
    img, _, _ = image
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    old_mbr = img.read_bytes()[:512]
    with open(target, "r+b") as f:  # the card held an image before
        f.write(old_mbr)

    def interrupt(phase, done, total):
        if phase == "write" and done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_image(img, target, progress=interrupt)
    head = target.read_bytes()[:4096]
    assert head == bytes(4096), "an interrupted card must not have a partition table"
    write_image(img, target)
    assert target.read_bytes()[:512] == old_mbr


def test_records_per_card(image, tmp_path):
    img, _, _ = image
    target = tmp_path / "card.bin"
    first = write_image(img, target, state_dir=tmp_path, card_identity="mux-0001")
    r = write_image(img, target, state_dir=tmp_path, card_identity="mux-0001", verify=False)
    rec = {x["card"]: x for x in card_records(tmp_path)}["mux-0001"]
    assert rec["writes"] == 2 and rec["bytes"] == first.bytes_written + r.bytes_written
    assert rec["last_image"] == str(img) and rec["last_result"] == "written"
    assert rec["verify_failures"] == 0


def test_card_too_small_is_refused_before_writing(image, tmp_path):
    img, _, _ = image
    # regular files grow; a block device does not: simulate with the size check
    assert writer.CHUNK % 4096 == 0
    with pytest.raises(ConfigError, match="the target is the image itself"):
        write_image(img, img)


def test_one_writer_per_card_different_cards_in_parallel(image, tmp_path):
    import threading
    import time

    img, _, _ = image
    spans: dict[str, list[float]] = {}

    def job(key: str, target: Path) -> None:
        def progress(phase, done, total):
            spans.setdefault(key, []).append(time.monotonic())

        write_image(img, target, progress=progress)

    same = tmp_path / "same.bin"
    threads = [
        threading.Thread(target=job, args=("a", same)),
        threading.Thread(target=job, args=("b", same)),
        threading.Thread(target=job, args=("c", tmp_path / "other.bin")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(spans) == {"a", "b", "c"}
    a, b = (min(spans["a"]), max(spans["a"])), (min(spans["b"]), max(spans["b"]))
    assert a[1] < b[0] or b[1] < a[0], "two writers on one card overlapped"
    assert _used_ranges_equal(img, same) > 0


def test_reflash_writes_only_what_changed(image, tmp_path):
    """The card already holds the image except one damaged byte: only that chunk (and the
    held-back first chunk) is written, and the card ends up exact."""
    img, _, _ = image
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    full = write_image(img, target)
    assert full.bytes_unchanged == 0
    m = derive_map(img)
    victim = m.extents[-1].end - 100
    with open(target, "r+b") as f:
        f.seek(victim)
        b = f.read(1)
        f.seek(victim)
        f.write(bytes([b[0] ^ 0x5A]))
    again = write_image(img, target)
    assert again.verified
    first_chunk = min(writer.CHUNK, m.extents[0].end)
    assert again.bytes_written <= first_chunk + writer.CHUNK
    assert again.bytes_written + again.bytes_unchanged == m.mapped_bytes
    _used_ranges_equal(img, target)
    forced = write_image(img, target, skip_same=False)
    assert forced.bytes_written == m.mapped_bytes and forced.bytes_unchanged == 0


@pytest.mark.slow
def test_bmap_beside_a_compressed_image_is_streamed(image, tmp_path):
    img, _, _ = image
    if not shutil.which("bmaptool"):
        pytest.skip("bmaptool not installed")
    sparse = tmp_path / "sparse.img"
    subprocess.run(["cp", "--sparse=always", str(img), str(sparse)], check=True)
    subprocess.run(
        ["bmaptool", "create", "-o", str(tmp_path / "z.img.bmap"), str(sparse)], check=True
    )
    xz = tmp_path / "z.img.xz"
    shutil.copy(_pack(img, "xz", tmp_path), xz)
    target = tmp_path / "card.bin"
    fill_random(target, img.stat().st_size)
    r = write_image(xz, target)  # no unpack_dir: streamed, the bmap says what to write
    bm = parse_bmap(tmp_path / "z.img.bmap")
    assert r.origin == "bmap" and r.bytes_written == bm.mapped_bytes and r.verified
    got, want = target.read_bytes(), img.read_bytes()
    for e in bm.extents:
        assert got[e.start : e.end] == want[e.start : e.end]
