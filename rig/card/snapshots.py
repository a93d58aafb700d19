"""Starting-state snapshots: a prepared card kept as a sparse image of its used blocks.

After a scenario's prepare, the rig may read the card back through the same
used-block map the writer derives from the file systems (rig.card.usedmap) and
keep it here; a later run with the same inputs writes the snapshot instead of
the pristine image and skips the first boot and the pin. Wrong reuse is worse
than none, so:

- the key is the SHA-256 of a canonical JSON of *every* input that shapes the
  card's state (``SnapshotStore.key``): the pristine image's hash, the product's
  own inputs, what provisioning put in the root file system, the device model
  and the rig's version with a digest of its own source (any code change
  invalidates every snapshot). Secrets enter as keyed hashes (HMAC with the
  store's own random salt), never in clear;
- a snapshot is written to a temporary directory, fsynced and renamed into
  place: a half-captured one is never found; its meta.json must hash to its key;
- the .bmap beside the image carries a SHA-256 per range, which the writer
  checks while it reads and then verifies the card against: a snapshot whose
  content changed on disk is refused (``SnapshotCorrupt``) and removed.

Layout under ``root`` (default: ``snapshots`` beside the image cache)::

    <key>/card.img        sparse: only the mapped ranges hold data
    <key>/card.img.bmap   bmaptool 2.0 map, sha256 per range
    <key>/meta.json       key, inputs (secrets hashed), sizes, content hash, rig version
    .salt                 the HMAC key for secrets (0600)

Least recently used snapshots go first when the store is over its size limit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rig
from rig.card.bmap import BlockMap, Extent, parse_bmap, render_bmap
from rig.card.mbr import SECTOR, parse_mbr
from rig.card.usedmap import derive_map
from rig.errors import ConfigError, InfraError
from rig.events import StepLog
from rig.procs import pid_alive

IMAGE, BMAP, META = "card.img", "card.img.bmap", "meta.json"
CHUNK = 8 << 20
FORMAT = 1  # meta.json's layout; a new one invalidates the old snapshots
EXT_MAGIC_AT, EXT_STATE_AT, EXT_INCOMPAT_AT = 1024 + 0x38, 1024 + 0x3A, 1024 + 0x60
EXT_VALID_FS, EXT_RECOVER = 0x1, 0x4


class SnapshotCorrupt(InfraError):
    """A stored snapshot does not hold what it held when captured (it was removed)."""


class NotCapturable(InfraError):
    """The card is not in a state that may be kept (e.g. a file system not cleanly unmounted)."""


@dataclass(frozen=True)
class Snapshot:
    key: str
    directory: Path
    meta: dict[str, Any]

    @property
    def image(self) -> Path:
        return self.directory / IMAGE

    @property
    def bmap(self) -> Path:
        return self.directory / BMAP


def canonical(inputs: Mapping[str, Any]) -> str:
    """The one JSON text of ``inputs`` the key is the hash of (sorted keys, no spaces)."""
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_of(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


@functools.cache
def rig_fingerprint() -> dict[str, str]:
    """The rig's version and a digest of every file of its package: a changed line of
    the rig (how it prepares, provisions, writes) is a different card."""
    base = Path(rig.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(base.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return {"version": rig.__version__, "source_sha256": digest.hexdigest()}


class SnapshotStore:
    """The directory of snapshots, its salt, its size limit."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit_bytes = limit_bytes

    # --- keys ------------------------------------------------------------------

    def secret(self, value: str) -> str:
        """A secret as it enters a key: HMAC-SHA256 with this store's salt."""
        return "hmac-sha256:" + hmac.new(self._salt(), value.encode(), "sha256").hexdigest()

    def _salt(self) -> bytes:
        path = self.root / ".salt"
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".salt.{os.getpid()}"
        tmp.write_bytes(os.urandom(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # the first writer wins; everyone reads the same salt
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_bytes()

    def image_sha256(self, image: Path) -> str:
        """The pristine image file's SHA-256, remembered by (path, size, mtime)."""
        st = image.stat()
        ident = f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        cache = self.root / "image-hashes.json"
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if ident in known:
            return known[ident]
        digest = hashlib.sha256()
        with open(image, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        known[ident] = digest.hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(cache, json.dumps(known, indent=1).encode())
        return known[ident]

    # --- lookup ----------------------------------------------------------------

    def lookup(self, key: str) -> Snapshot | None:
        """The complete snapshot for ``key``, or None. A directory whose meta.json does not
        hash to its name, or misses a file, is not a snapshot (and is removed)."""
        directory = self.root / key
        try:
            meta = json.loads((directory / META).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.discard(key)
            return None
        whole = (
            meta.get("format") == FORMAT
            and meta.get("key") == key
            and key_of(meta.get("inputs", {})) == key
            and (directory / IMAGE).is_file()
            and (directory / BMAP).is_file()
        )
        if not whole:
            self.discard(key)
            return None
        os.utime(directory / META)  # last use: eviction keeps what is used
        return Snapshot(key, directory, meta)

    def verify(self, snap: Snapshot) -> None:
        """Re-read the stored image against its capture-time hashes; SnapshotCorrupt (and
        the snapshot removed) on any difference. The writer does the same per range."""
        try:
            block_map = parse_bmap(snap.bmap)
            got = _content_sha256(snap.image, block_map)
        except (OSError, ConfigError) as e:
            self.discard(snap.key)
            raise SnapshotCorrupt(f"unreadable: {e}", where=str(snap.directory)) from None
        if got != snap.meta.get("content_sha256"):
            self.discard(snap.key)
            raise SnapshotCorrupt(
                "its content does not match the hash taken when it was captured; removed",
                where=str(snap.directory),
            )

    def discard(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def meta(self, key: str) -> dict[str, Any]:
        """A snapshot's meta.json as stored, without counting as a use ({} if unreadable)."""
        try:
            return json.loads((self.root / key / META).read_text())
        except (OSError, ValueError):
            return {}

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / META).is_file())

    # --- capture ---------------------------------------------------------------

    def capture(
        self, key: str, inputs: Mapping[str, Any], disk: Path, log: StepLog | None = None
    ) -> Snapshot:
        """Read the card's used blocks into a new snapshot for ``key`` (atomically)."""
        log = log or StepLog()
        if key_of(inputs) != key:
            raise ValueError("the key is not the hash of the inputs")
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_incomplete()
        tmp = self.root / f".incomplete-{key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            block_map = card_map(disk)
            for note in block_map.notes:
                log(f"snapshot map: {note}")
            extents, content = _copy(disk, tmp / IMAGE, block_map)
            (tmp / BMAP).write_text(render_bmap(block_map.image_size, extents))
            meta = {
                "format": FORMAT,
                "key": key,
                "inputs": dict(inputs),
                "image_size": block_map.image_size,
                "mapped_bytes": block_map.mapped_bytes,
                "content_sha256": content,
                "created": time.time(),
                "rig": rig_fingerprint(),
            }
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            for name in (IMAGE, BMAP, META):
                _fsync(tmp / name)
            _fsync(tmp)
            try:
                os.rename(tmp, self.root / key)
            except OSError:  # another capture of the same key won: keep that one
                shutil.rmtree(tmp, ignore_errors=True)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        snap = self.lookup(key)
        if snap is None:
            raise InfraError("the snapshot vanished right after it was stored", where=str(tmp))
        self.verify(snap)  # what is stored is what was read
        log(
            f"snapshot {key[:12]} captured: {block_map.mapped_bytes} of "
            f"{block_map.image_size} bytes in {time.monotonic() - started:.1f}s",
            key=key,
            bytes=block_map.mapped_bytes,
        )
        self.evict(keep=key, log=log)
        return snap

    def _clear_incomplete(self) -> None:
        """Captures that died half-way (their process is gone) are removed."""
        for p in self.root.glob(".incomplete-*"):
            pid = p.name.split("-")[2] if p.name.count("-") >= 3 else ""
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    # --- size ------------------------------------------------------------------

    def usage(self) -> list[tuple[float, int, str]]:
        """(last use, bytes on disk, key) per snapshot, least recently used first."""
        out = []
        for key in self.keys():
            d = self.root / key
            size = sum(p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file())
            out.append(((d / META).stat().st_mtime, size, key))
        return sorted(out)

    def evict(self, keep: str = "", log: StepLog | None = None) -> list[str]:
        """Remove least recently used snapshots until the store fits its limit."""
        entries = self.usage()
        total = sum(size for _, size, _ in entries)
        gone = []
        for _, size, key in entries:
            if total <= self.limit_bytes:
                break
            if key == keep:
                continue
            self.discard(key)
            total -= size
            gone.append(key)
            if log is not None:
                log(f"snapshot {key[:12]} evicted (store over {self.limit_bytes} bytes)")
        return gone


class CardSnapshots:
    """One device's and one image's use of the store, as the scenario pipeline sees it.

    ``base`` are the inputs the rig knows (image hash, provisioning, model, rig
    fingerprint); the product adds its own in ``key``. ``write`` writes a snapshot
    through the same writer as an image (``write_card(image, bmap, disk, log)``,
    verified) and then gives the card its own identity (``refresh(disk, log)``)."""

    def __init__(
        self,
        store: SnapshotStore,
        base: Callable[[], Mapping[str, Any]],
        write_card: Any,
        refresh: Any,
    ) -> None:
        self.store = store
        self._base = base  # called once, in the write phase (it hashes the image)
        self._base_inputs: dict[str, Any] | None = None
        self._write_card = write_card
        self._refresh = refresh

    def inputs(self, product: Mapping[str, Any], disk: Path) -> dict[str, Any]:
        """Every input of the key, in clear (secrets already hashed by the store).

        The card's size is one: the first boot grew the root file system to fill the
        card, so the snapshot's partition table and image are as big as that card (a
        smaller card cannot take it; a larger one would boot with space it never had)."""
        if self._base_inputs is None:
            self._base_inputs = dict(self._base())
        return {
            "format": FORMAT,
            **self._base_inputs,
            "card_bytes": card_bytes(disk),
            "product": dict(product),
        }

    def key(self, product: Mapping[str, Any], disk: Path) -> tuple[str, dict[str, Any]]:
        """The key and its inputs for the product's state on the card at ``disk``."""
        inputs = self.inputs(product, disk)
        return key_of(inputs), inputs

    def lookup(self, key: str) -> Snapshot | None:
        return self.store.lookup(key)

    def write(self, snap: Snapshot, disk: Path, log: StepLog) -> dict[str, Any]:
        """Write and verify the snapshot, then refresh the card's identity. A snapshot whose
        content is not what was captured is removed and SnapshotCorrupt raised (the
        caller writes the pristine image instead)."""
        try:
            facts = dict(self._write_card(snap.image, snap.bmap, disk, log))
        except ConfigError as e:
            if not str(e.where or "").startswith(str(snap.directory)):
                raise  # about the card (e.g. too small), not the snapshot: keep it
            # the stored image does not match its bmap's per-range sha256
            self.store.discard(snap.key)
            raise SnapshotCorrupt(
                f"snapshot {snap.key[:12]} refused and removed: {e.message}", where=e.where
            ) from None
        facts["identity"] = self._refresh(disk, log)
        return facts

    def capture(self, key: str, inputs: Mapping[str, Any], disk: Path, log: StepLog) -> Snapshot:
        return self.store.capture(key, inputs, disk, log)


def card_bytes(disk: Path) -> int:
    """The size of the card (block device or image file) at ``disk``."""
    fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def card_map(disk: Path) -> BlockMap:
    """The used blocks of the card up to its last partition's end; NotCapturable when a
    Linux file system was not cleanly unmounted (the device was not shut down)."""
    with open(disk, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        table = parse_mbr(os.pread(f.fileno(), SECTOR, 0), str(disk))
        for p in table.partitions:
            if p.is_linux:
                sb = os.pread(f.fileno(), 2048, p.offset)
                if len(sb) < 2048 or struct.unpack_from("<H", sb, 0x438)[0] != 0xEF53:
                    continue
                state = struct.unpack_from("<H", sb, EXT_STATE_AT)[0]
                incompat = struct.unpack_from("<I", sb, EXT_INCOMPAT_AT)[0]
                if incompat & EXT_RECOVER or not state & EXT_VALID_FS:
                    raise NotCapturable(
                        f"partition {p.index}'s file system was not cleanly unmounted",
                        where=str(disk),
                        hint="the device must shut down before its card is read",
                    )
    end = min(size, max(p.end for p in table.partitions))
    full = derive_map(disk)
    extents = [
        Extent(e.start, min(e.end, end)) for e in full.extents if e.start < end
    ]  # nothing past the last partition belongs to the card's state
    return BlockMap(end, extents, full.origin, notes=full.notes)


def _copy(disk: Path, out: Path, block_map: BlockMap) -> tuple[list[Extent], str]:
    """Mapped ranges of the card into a sparse file; per-range sha256 and a content hash."""
    content = hashlib.sha256()
    extents = []
    src = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
    dst = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(dst, block_map.image_size)
        for e in block_map.extents:
            h = hashlib.sha256()
            os.posix_fadvise(src, e.start, e.size, os.POSIX_FADV_DONTNEED)  # from the card
            for off, n in _pieces(e):
                data = os.pread(src, n, off)
                if len(data) != n:
                    raise InfraError("short read", where=f"card {disk} at byte {off + len(data)}")
                h.update(data)
                content.update(struct.pack("<QQ", off, n) + data)
                os.pwrite(dst, data, off)
            extents.append(Extent(e.start, e.end, h.hexdigest()))
    finally:
        os.close(src)
        os.close(dst)
    return extents, content.hexdigest()


def _content_sha256(image: Path, block_map: BlockMap) -> str:
    content = hashlib.sha256()
    fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != block_map.image_size:
            raise OSError(f"{image} is not {block_map.image_size} bytes")
        for e in block_map.extents:
            for off, n in _pieces(e):
                data = os.pread(fd, n, off)
                content.update(struct.pack("<QQ", off, n) + data)
    finally:
        os.close(fd)
    return content.hexdigest()


def _pieces(e: Extent) -> Iterator[tuple[int, int]]:
    off = e.start
    while off < e.end:
        n = min(CHUNK, e.end - off)
        yield off, n
        off += n


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


DEFAULT_LIMIT_GB = 20.0


def snapshot_settings(config: Any) -> tuple[bool, SnapshotStore]:
    """rig.yaml's run.snapshots (default on), run.snapshot_cache (default: snapshots
    beside the image cache) and run.snapshot_cache_gb (default 20)."""
    run = config.sections.get("run", {}) or {}
    where = f"{config.where}: run"
    enabled = run.get("snapshots", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{enabled!r} is not true or false", where=f"{where}.snapshots")
    limit = run.get("snapshot_cache_gb", DEFAULT_LIMIT_GB)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise ConfigError(
            f"{limit!r} is not a positive number of GB", where=f"{where}.snapshot_cache_gb"
        )
    root = run.get("snapshot_cache")
    if root is not None and not isinstance(root, str):
        raise ConfigError(f"{root!r} is not a directory", where=f"{where}.snapshot_cache")
    base = config.source.parent if config.source else Path.cwd()
    default = config.paths.images.parent / "snapshots"
    directory = (base / Path(root).expanduser()) if root else default
    return enabled, SnapshotStore(directory, int(float(limit) * (1 << 30)))
