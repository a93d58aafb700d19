"""Open an image as a stream of its raw bytes, whatever it is packed in.

Raw ``.img``, ``.zip``, ``.xz``, ``.gz`` and ``.zst`` are recognised by their
first bytes (never by name alone). Nothing is extracted to a path taken from an
archive: a zip must hold exactly one file and its name is only checked and shown.
The decompressed size is capped (``extract_size`` when the catalogue knows it,
else the caller's limit, e.g. the card's size) so an archive bomb stops at the
cap, and ``extract_sha256`` is checked as the stream ends.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rig.errors import ConfigError

MAGIC = {
    b"PK\x03\x04": "zip",
    b"\xfd7zXZ\x00": "xz",
    b"\x1f\x8b": "gz",
    b"\x28\xb5\x2f\xfd": "zst",
}
NOT_SUPPORTED = {b"BZh": "bzip2", b"7z\xbc\xaf\x27\x1c": "7z", b"\x04\x22\x4d\x18": "lz4"}
DEFAULT_LIMIT = 256 << 30  # nothing we write is larger than this


def detect(path: Path) -> str:
    """raw | zip | xz | gz | zst, or ConfigError naming what it is not."""
    with open(path, "rb") as f:
        head = f.read(512)
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    for magic, kind in NOT_SUPPORTED.items():
        if head.startswith(magic):
            raise ConfigError(
                f"{kind} archives are not supported",
                where=str(path),
                hint="use .img, .zip, .xz, .gz or .zst",
            )
    if path.suffix.lower() in (".img", ".raw", ".bin") or head[510:512] == b"\x55\xaa":
        return "raw"
    raise ConfigError(
        "unknown image format (not a raw image with an MBR, nor .zip/.xz/.gz/.zst)",
        where=str(path),
        hint="use .img, .zip, .xz, .gz or .zst",
    )


def _zip_member(zf: zipfile.ZipFile, where: str) -> zipfile.ZipInfo:
    files = [i for i in zf.infolist() if not i.is_dir()]
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise ConfigError(
                f"zip member {info.filename!r} has an unsafe path (zip slip); refusing the archive",
                where=where,
            )
    if len(files) != 1:
        names = ", ".join(i.filename for i in files[:5]) or "none"
        raise ConfigError(
            f"a zip must hold exactly one image, this one holds {len(files)} files ({names})",
            where=where,
        )
    return files[0]


class ImageStream:
    """Decompressed image bytes, read sequentially; enforces the size cap and extract_sha256."""

    def __init__(
        self,
        path: Path,
        *,
        extract_size: int | None = None,
        extract_sha256: str | None = None,
        limit: int | None = None,
    ) -> None:
        self.path = path
        self.where = str(path)
        self.kind = detect(path)
        self.expected_size = extract_size
        self.expected_sha256 = extract_sha256.lower() if extract_sha256 else None
        self.limit = extract_size if extract_size is not None else (limit or DEFAULT_LIMIT)
        self.member: str | None = None
        self.size: int | None = extract_size
        self._hash = hashlib.sha256() if self.expected_sha256 else None
        self._done = 0
        self._closers: list = []
        self._raw: BinaryIO = self._open()

    def _open(self) -> BinaryIO:
        if self.kind == "raw":
            f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            self.size = os.fstat(f.fileno()).st_size
            self._closers.append(f)
            return f
        if self.kind == "zip":
            try:
                zf = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as e:
                raise ConfigError(f"not a valid zip: {e}", where=self.where) from None
            self._closers.append(zf)
            info = _zip_member(zf, self.where)
            self.member = info.filename
            if info.file_size > self.limit:
                raise ConfigError(
                    f"zip member {info.filename!r} says it unpacks to {info.file_size} bytes, "
                    f"more than the {self.limit} allowed (archive bomb?)",
                    where=self.where,
                )
            if self.size is None:
                self.size = info.file_size
            s = zf.open(info)
            self._closers.append(s)
            return s
        f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._closers.append(f)
        if self.kind == "xz":
            return lzma.open(f)  # type: ignore[return-value]
        if self.kind == "gz":
            return gzip.open(f)  # type: ignore[return-value]
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)  # type: ignore[return-value]

    def read(self, n: int) -> bytes:
        """Up to n bytes; fewer only at the end of the image."""
        parts = []
        want = n
        while want > 0:
            try:
                b = self._raw.read(want)
            except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as e:
                raise ConfigError(
                    f"corrupt archive after {self._done} bytes: {e}", where=self.where
                ) from None
            except Exception as e:  # zstandard.ZstdError and friends
                raise ConfigError(
                    f"corrupt archive after {self._done} bytes: {e}", where=self.where
                ) from None
            if not b:
                break
            parts.append(b)
            want -= len(b)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self._done += len(data)
        if self._done > self.limit:
            raise ConfigError(
                f"image unpacks to more than {self.limit} bytes (archive bomb or wrong "
                "extract_size); stopped",
                where=self.where,
            )
        if self._hash is not None:
            self._hash.update(data)
        if len(data) < n:
            self._at_end()
        return data

    def _at_end(self) -> None:
        if self.expected_size is not None and self._done != self.expected_size:
            raise ConfigError(
                f"image unpacked to {self._done} bytes, the catalogue says {self.expected_size}",
                where=self.where,
            )
        if self._hash is not None and self._hash.hexdigest() != self.expected_sha256:
            raise ConfigError(
                f"unpacked image SHA-256 {self._hash.hexdigest()} does not match "
                f"extract_sha256 {self.expected_sha256}",
                where=self.where,
            )
        self._hash = None

    def close(self) -> None:
        for c in reversed(self._closers):
            c.close()

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unpack(
    path: Path,
    dest: Path,
    *,
    extract_size: int | None = None,
    extract_sha256: str | None = None,
    limit: int | None = None,
) -> Path:
    """Decompress ``path`` to ``dest`` (sparse: all-zero MiBs become holes), atomically."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        _unpack_to(path, tmp, extract_size, extract_sha256, limit)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a refused image leaves nothing behind
        raise
    os.replace(tmp, dest)
    return dest


def _unpack_to(
    path: Path, tmp: Path, extract_size: int | None, extract_sha256: str | None, limit: int | None
) -> None:
    block = 1 << 20
    zero = bytes(block)
    with (
        ImageStream(
            path, extract_size=extract_size, extract_sha256=extract_sha256, limit=limit
        ) as s,
        open(tmp, "wb") as out,
    ):
        total = 0
        while True:
            data = s.read(block)
            if not data:
                break
            if data == zero[: len(data)]:
                out.seek(len(data), os.SEEK_CUR)
            else:
                out.write(data)
            total += len(data)
            if len(data) < block:
                break
        out.truncate(total)
