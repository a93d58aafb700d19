"""Archives refused clearly: zip slip, bombs, two members, unknown formats, wrong hashes."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import zipfile

import pytest

from rig.card import archive
from rig.card.archive import ImageStream, detect, unpack
from rig.errors import ConfigError

MBR = bytes(510) + b"\x55\xaa"


def _read_all(s: ImageStream) -> bytes:
    out = []
    while chunk := s.read(1 << 16):
        out.append(chunk)
    return b"".join(out)


def test_zip_slip_is_refused(tmp_path):
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("../../etc/evil.img", MBR)
    with pytest.raises(ConfigError, match="zip slip"):
        ImageStream(p)
    assert not (tmp_path.parent.parent / "etc" / "evil.img").exists()


def test_absolute_member_is_refused(tmp_path):
    p = tmp_path / "abs.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("/tmp/x.img", MBR)
    with pytest.raises(ConfigError, match="unsafe path"):
        ImageStream(p)


def test_two_members_are_refused(tmp_path):
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.img", MBR)
        z.writestr("b.img", MBR)
    with pytest.raises(ConfigError, match="exactly one image, this one holds 2 files"):
        ImageStream(p)


def test_unknown_format_is_refused(tmp_path):
    p = tmp_path / "image.img.bz2"
    p.write_bytes(bz2.compress(MBR * 10))
    with pytest.raises(ConfigError, match="bzip2"):
        detect(p)
    q = tmp_path / "notes.txt"
    q.write_text("hello")
    with pytest.raises(ConfigError, match="unknown image format"):
        detect(q)


def test_bomb_stops_at_the_cap(tmp_path):
    p = tmp_path / "bomb.img.xz"
    p.write_bytes(lzma.compress(bytes(64 << 20), preset=0))  # 64 MiB of zeros, ~10 kB packed
    assert p.stat().st_size < 100_000
    s = ImageStream(p, extract_size=1 << 20)
    with pytest.raises(ConfigError, match="archive bomb"):
        _read_all(s)
    assert s._done <= (1 << 20) + (1 << 16)  # stopped at the cap, not after 64 MiB
    s.close()


def test_zip_bomb_declared_size_refused_before_reading(tmp_path):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.img", bytes(8 << 20))
    with pytest.raises(ConfigError, match="archive bomb"):
        ImageStream(p, limit=1 << 20)


def test_extract_sha256_checked_while_streaming(tmp_path):
    data = MBR + b"payload" * 1000
    p = tmp_path / "x.img.xz"
    p.write_bytes(lzma.compress(data))
    good = hashlib.sha256(data).hexdigest()
    with ImageStream(p, extract_sha256=good, extract_size=len(data)) as s:
        assert _read_all(s) == data
    with pytest.raises(ConfigError, match="does not match extract_sha256"):
        unpack(p, tmp_path / "x.img", extract_sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.img.xz"]  # nothing left behind
    with pytest.raises(ConfigError, match="catalogue says"):
        unpack(p, tmp_path / "y.img", extract_size=len(data) - 1 + 2)


def test_unpack_is_sparse_and_exact(tmp_path):
    data = MBR + bytes(16 << 20) + b"tail"
    p = tmp_path / "s.img.xz"
    p.write_bytes(lzma.compress(data))
    out = unpack(p, tmp_path / "s.img")
    assert out.read_bytes() == data
    assert out.stat().st_blocks * 512 < 3 << 20  # 16 MiB of zeros stayed holes


def test_raw_detection(tmp_path):
    p = tmp_path / "disk.raw"
    p.write_bytes(MBR)
    assert detect(p) == "raw"
    assert archive.DEFAULT_LIMIT > 1 << 30
