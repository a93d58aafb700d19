"""Write an image to a card: only the blocks that matter, partition table last, read back.

The shape is bmaptool's: a reader thread runs ahead of the writer through a
bounded queue, so the card is kept busy while the source is read (and
decompressed) and hashed. What is written comes from a block map (rig.card.bmap:
a ``.bmap`` beside the image, or one derived from the image's file systems by
rig.card.usedmap). Unlike bmaptool, every written range is read back from the
card after it was synced and its pages dropped from the page cache, while the
writer goes on with the next window. A raw source is compared byte for byte
with the image file (read again, usually from the page cache: no hashing on
either side); a decompressing stream cannot be read again, so each chunk's
SHA-256 is kept and compared. A mismatch or an I/O error names the byte offset.

Chunks the card already holds are compared, not rewritten (``skip_same``, see
``_write``): re-flashing the same image, as the rig does before each scenario,
costs one read pass and no flash wear.

Order of writes: the first sector of the card is zeroed (and synced) first, the
chunk holding the MBR is held back and written last, so a card whose write was
interrupted never has a partition table pointing at half-written partitions.

Syncing, chosen by measurement (2.4 GB image, 1.05 GB mapped, loop device on a
virtio disk, page cache dropped, scripts/bench-flash and single runs): buffered
8 MiB writes with an ``fdatasync`` every SYNC_EVERY bytes. One sync at the end
took 4.5 s against 2.1-2.4 s with 6-32 MiB windows: the kernel queues gigabytes
of dirty pages, the final sync does all the work at once, progress lies and, on
a slow USB reader, other devices' writeback stalls behind it. Small windows also
bound how much a failed write can hide and feed the read-back a steady stream.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.card import archive
from rig.card.bmap import BlockMap, Extent, find_bmap, parse_bmap
from rig.card.usedmap import derive_map
from rig.errors import ConfigError, InfraError
from rig.events import StepLog

CHUNK = 8 << 20
SYNC_EVERY = 32 << 20
QUEUE_DEPTH = 8  # chunks the reader may run ahead: 64 MiB of memory at most
SKIP_GIVE_UP = 8  # differing chunks in a row after which the card is assumed to differ
BLKFLSBUF = 0x1261
BLKGETSIZE64 = 0x80081272

Progress = Callable[[str, int, int], None]  # phase ("write"|"verify"), done bytes, total bytes


@dataclass
class WriteResult:
    image: str
    target: str
    card: str
    origin: str  # bmap | derived | full
    image_size: int
    bytes_written: int
    ranges: int
    write_seconds: float
    verify_seconds: float | None
    verified: bool
    notes: list[str] = field(default_factory=list)
    bytes_unchanged: int = 0  # mapped bytes the card already held (read, compared, not written)

    @property
    def seconds(self) -> float:
        return self.write_seconds + (self.verify_seconds or 0.0)


class _Source:
    """Random reads from a raw file, or forward-only reads from a decompressing stream."""

    def __init__(self, path: Path, stream: archive.ImageStream | None) -> None:
        self.path = path
        self.stream = stream
        self.fd = os.open(path, os.O_RDONLY) if stream is None else -1
        self.pos = 0

    @property
    def seekable(self) -> bool:
        return self.stream is None

    def read_at(self, offset: int, n: int) -> bytes:
        if self.stream is None:
            return os.pread(self.fd, n, offset)
        if offset < self.pos:
            raise RuntimeError("stream source read backwards")
        while self.pos < offset:  # skip what the map leaves out (still decompressed)
            skipped = self.stream.read(min(CHUNK, offset - self.pos))
            if not skipped:
                return b""
            self.pos += len(skipped)
        data = self.stream.read(n)
        self.pos += len(data)
        return data

    def drain(self) -> None:
        """Read a stream to its end so the size cap and extract_sha256 are checked."""
        if self.stream is not None:
            while self.stream.read(CHUNK):
                pass

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        else:
            os.close(self.fd)


def _chunks(block_map: BlockMap, size: int = CHUNK) -> Iterator[tuple[int, int, int]]:
    """(offset, length, extent index), split at multiples of ``size``."""
    for i, e in enumerate(block_map.extents):
        off = e.start
        while off < e.end:
            end = min(e.end, (off // size + 1) * size)
            yield off, end - off, i
            off = end


def _ahead(produce: Callable[[Callable[[Any], None]], None], depth: int) -> Iterator[Any]:
    """Run ``produce(put)`` in a thread; yield what it puts; re-raise what it raises."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def run() -> None:
        try:
            produce(put)
            put(end)
        except _Stopped:
            pass
        except BaseException as e:
            try:
                put(_Failure(e))
            except _Stopped:
                pass

    t = threading.Thread(target=run, name="rig-card-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        t.join(timeout=10)


class _Stopped(Exception):
    pass


@dataclass
class _Failure:
    error: BaseException


# --- the target ---------------------------------------------------------------------


def _lock_card(opened: Any) -> int:
    """Wait for our turn on this card: an exclusive flock on the target itself.

    Taken on a plain read-only descriptor of the checked inode before the O_EXCL
    open, so a second rig writer queues here instead of failing with EBUSY;
    writers of different cards never wait for each other.
    """
    target = opened.path
    try:
        fd = opened.reopen(os.O_RDONLY)
    except OSError as e:
        raise InfraError(f"cannot open: {e.strerror}", where=f"card {target}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer on this card: wait our turn
    return fd


def _open_target(opened: Any, image_size: int) -> tuple[int, bool]:
    """Open for writing: O_EXCL on block devices (fails if mounted or opened exclusively)."""
    target, is_block = opened.path, opened.is_block
    flags = os.O_WRONLY | (os.O_EXCL if is_block else 0)
    try:
        fd = opened.reopen(flags)
    except OSError as e:
        hint = "unmount it / close programs using it" if e.errno == errno.EBUSY else ""
        raise InfraError(
            f"cannot open for writing: {e.strerror}", where=f"card {target}", hint=hint
        ) from None
    if is_block:
        size = device_size(fd)
        if size < image_size:
            os.close(fd)
            raise ConfigError(
                f"the image ({image_size} bytes) is larger than the card ({size} bytes)",
                where=f"card {target}",
            )
    elif os.fstat(fd).st_size < image_size:
        os.ftruncate(fd, image_size)
    return fd, is_block


def _card_size(opened: Any) -> int | None:
    """A block device's size (a regular file target has none: the archive's own cap)."""
    if not opened.is_block:
        return None
    fd = opened.reopen(os.O_RDONLY)
    try:
        return device_size(fd)
    finally:
        os.close(fd)


def device_size(fd: int) -> int:
    buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    return int.from_bytes(buf, "little")


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, target: Path) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            n = os.pwrite(fd, view[done:], offset + done)
        except OSError as e:
            raise InfraError(
                f"write failed: {e.strerror}", where=f"card {target} at byte {offset + done}"
            ) from None
        if n == 0:
            raise InfraError("write made no progress", where=f"card {target} at byte {offset}")
        done += n


def _probe_write_error(via: Path, window: list[tuple[int, bytes]]) -> int | None:
    """After a failed sync, rewrite the window with O_DIRECT sector by sector to find the
    first byte the card refuses (the kernel does not say which page failed)."""
    try:
        fd = os.open(via, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None
    piece = 64 << 10
    buf = mmap.mmap(-1, piece)
    try:
        for off, data in window:
            for p in range(0, len(data), piece):
                n = min(piece, len(data) - p)
                if (off + p) % 512 or n % 512:
                    continue
                buf[:n] = data[p : p + n]
                try:
                    os.pwritev(fd, [memoryview(buf)[:n]], off + p)
                    continue
                except OSError:
                    pass
                for s in range(0, n, 512):  # narrow to the sector
                    try:
                        os.pwritev(fd, [memoryview(buf)[s : s + 512]], off + p + s)
                    except OSError:
                        return off + p + s
                return off + p
        return None
    finally:
        buf.close()
        os.close(fd)


# --- the map ---------------------------------------------------------------------------


def plan(
    image: Path,
    *,
    bmap: Path | None = None,
    unpack_dir: Path | None = None,
    extract_size: int | None = None,
    extract_sha256: str | None = None,
    limit: int | None = None,
) -> tuple[Path, BlockMap, bool]:
    """(path to read, block map, is-compressed) for ``image``.

    A compressed image with a .bmap is streamed; without one it is unpacked once
    into ``unpack_dir`` (the cache) so its file systems can be read for the map,
    or, with no ``unpack_dir``, streamed and written in full.
    """
    kind = archive.detect(image)
    bmap = bmap or find_bmap(image)
    if bmap is not None:
        return image, parse_bmap(bmap), kind != "raw"
    if kind == "raw":
        return image, derive_map(image), False
    if unpack_dir is not None:
        unpack_dir.mkdir(parents=True, exist_ok=True)
        st = image.stat()
        raw = unpack_dir / f"{image.name}.{st.st_size}-{int(st.st_mtime)}.img"
        if not raw.exists():
            archive.unpack(
                image, raw, extract_size=extract_size, extract_sha256=extract_sha256, limit=limit
            )
        os.utime(raw)  # last use: the cache evicts least recently used first
        return raw, derive_map(raw), False
    with archive.ImageStream(image, extract_size=extract_size, limit=limit) as s:
        size = s.size
    note = "compressed, no .bmap: written in full"
    if size is None:  # xz/gz/zst do not say: write until the stream ends (at most the cap)
        cap = s.limit
        return image, BlockMap(cap, [Extent(0, cap)], "full", notes=[note], until_eof=True), True
    return image, BlockMap.full(size, note), True


# --- the write -------------------------------------------------------------------------


def write_image(
    image: Path,
    target: Path,
    *,
    verify: bool = True,
    log: StepLog | None = None,
    progress: Progress | None = None,
    card_identity: str | None = None,
    state_dir: Path | None = None,
    bmap: Path | None = None,
    unpack_dir: Path | None = None,
    extract_size: int | None = None,
    extract_sha256: str | None = None,
    skip_same: bool = True,
    allow_fixed: bool = True,
    create: bool = True,
) -> WriteResult:
    """Write ``image`` to ``target`` (block device or regular file) and read it back.

    ``skip_same``: compare each chunk with what the card holds first and write only
    those that differ (see ``_write``); off, every mapped chunk is written.
    ``allow_fixed``: False refuses a disk that does not report removable media (a
    path a person typed); a configured mux's card is checked by its driver.
    ``create``: a missing regular file target is created (never under /dev).

    Raises InfraError (where="card <target> at byte N") on an I/O error or a
    verification mismatch, ConfigError for a bad image or a card too small.
    """
    image, target = Path(image), Path(target)
    log = log or StepLog()
    card = card_identity or str(target.resolve())
    if target.exists() and image.exists() and os.path.samefile(image, target):
        raise ConfigError("the target is the image itself", where=str(target))
    from rig.card import target as target_checks

    # resolved once, opened once, checked on the descriptor: every later open is of that inode
    opened = target_checks.open_checked(target, allow_fixed=allow_fixed, create=create)
    try:
        return _write_image(
            image, target, opened, verify, log, progress, state_dir, card, bmap, unpack_dir,
            extract_size, extract_sha256, skip_same,
        )  # fmt: skip
    finally:
        opened.close()


def _write_image(
    image: Path,
    target: Path,
    opened: Any,
    verify: bool,
    log: StepLog,
    progress: Progress | None,
    state_dir: Path | None,
    card: str,
    bmap: Path | None,
    unpack_dir: Path | None,
    extract_size: int | None,
    extract_sha256: str | None,
    skip_same: bool,
) -> WriteResult:
    via = opened.via
    # an archive never unpacks to more than the card holds (a bomb stops at the card's size)
    card_size = _card_size(opened)
    source_path, block_map, compressed = plan(
        image,
        bmap=bmap,
        unpack_dir=unpack_dir,
        extract_size=extract_size,
        extract_sha256=extract_sha256,
        limit=card_size,
    )
    for note in block_map.notes:
        log(f"map: {note}")
    total = 0 if block_map.until_eof else block_map.mapped_bytes
    log(
        f"writing {total} of {block_map.image_size} bytes ({block_map.origin} map, "
        f"{len(block_map.extents)} ranges) to {target}",
        image=str(image),
        target=str(target),
        bytes=total,
    )
    stream = (
        archive.ImageStream(
            source_path, extract_size=extract_size, extract_sha256=extract_sha256, limit=card_size
        )
        if compressed
        else None
    )
    source = _Source(source_path, stream)
    chunks = _chunks(block_map)
    digests: dict[int, bytes | None] = {}
    result = WriteResult(
        str(image), str(target), card, block_map.origin, block_map.image_size, 0,
        len(block_map.extents), 0.0, None, False, list(block_map.notes),
    )  # fmt: skip
    try:
        lock_fd = _lock_card(opened)
        fd = -1
        verifier = None
        try:
            fd, _is_block = _open_target(opened, 0 if block_map.until_eof else block_map.image_size)
            t0 = time.monotonic()
            if verify:
                verifier = _Verifier(source, target, digests, log, progress, total, via)
            written, same = _write(
                source, target, fd, block_map, chunks, digests, log, progress, verifier,
                skip_same, via,
            )  # fmt: skip
            result.write_seconds = time.monotonic() - t0
            result.bytes_written = written
            result.bytes_unchanged = same
            if block_map.until_eof:
                result.image_size = written + same
            if verifier is not None:
                t1 = time.monotonic()
                v, verifier = verifier, None
                v.finish()
                result.verify_seconds = time.monotonic() - t1
                result.verified = True
        finally:
            if verifier is not None:
                verifier.abort()
            if fd >= 0:
                os.close(fd)
            os.close(lock_fd)
    except InfraError as e:
        _record(state_dir, card, result, failed="verify" if "verif" in e.message else "io")
        raise
    finally:
        source.close()
    log(
        f"wrote {result.bytes_written} bytes in {result.write_seconds:.1f}s"
        + (
            f" ({result.bytes_unchanged} bytes were already on the card)"
            if result.bytes_unchanged
            else ""
        )
        + (
            f", read back and verified ({result.verify_seconds:.1f}s after the last write)"
            if result.verified
            else ", not verified"
        ),
        bytes=result.bytes_written,
        unchanged=result.bytes_unchanged,
        write_s=round(result.write_seconds, 3),
        verify_s=round(result.verify_seconds or 0, 3),
    )
    _record(state_dir, card, result)
    return result


class _Meter:
    """Progress to a callback, or a structured log line every 10 % when there is none."""

    def __init__(self, phase: str, total: int, log: StepLog, progress: Progress | None) -> None:
        self.phase, self.total, self.log, self.progress = phase, total, log, progress
        self.done = 0
        self.start = time.monotonic()
        self.next_log = total / 10
        self.last_log = self.start
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self._add(n)

    def _add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.phase, self.done, self.total)
        elif self.done >= self.next_log and (self.done < self.total or not self.total):
            self.next_log = self.done + self.total / 10
            now = time.monotonic()
            if now - self.last_log < 3:
                return
            self.last_log = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed else 0.0
            eta = (self.total - self.done) / rate if rate else 0.0
            self.log(
                f"{self.phase} {100 * self.done // self.total}% "
                f"{rate / 1e6:.1f} MB/s ETA {eta:.0f}s"
                if self.total
                else f"{self.phase} {self.done / 1e6:.0f} MB {rate / 1e6:.1f} MB/s",
                phase=self.phase,
                done=self.done,
                total=self.total,
                rate=round(rate),
            )


def _write(
    source: _Source,
    target: Path,
    fd: int,
    block_map: BlockMap,
    chunks: Iterable[tuple[int, int, int]],
    digests: dict[int, bytes | None],
    log: StepLog,
    progress: Progress | None,
    verifier: _Verifier | None = None,
    skip_same: bool = False,
    via: Path | None = None,
) -> tuple[int, int]:
    """Write every chunk, the first one last; returns (bytes written, bytes already there).

    With ``skip_same`` the reader also reads the card's current content of each
    chunk (page cache dropped first, so it comes from the card) and a chunk the
    card already holds is not written: re-flashing the image a card already has
    (the rig does it before every scenario) costs one read instead of a write and
    a read-back, and spares the card's flash. That read is the chunk's
    verification. After SKIP_GIVE_UP differing chunks in a row (another image on
    the card) the reader stops comparing and every further chunk is written.
    """
    ctype = block_map.checksum_type

    def produce(put: Callable[[Any], None]) -> None:
        cmp_fd = os.open(via or target, os.O_RDONLY | os.O_CLOEXEC) if skip_same else -1
        try:
            for item in read_chunks(cmp_fd):
                put(item)
        finally:
            if cmp_fd >= 0:
                os.close(cmp_fd)

    def read_chunks(cmp_fd: int) -> Iterator[tuple[int, bytes, bytes | None, bool]]:
        ext_hash = None
        misses = 0
        for off, n, ei in chunks:
            data = source.read_at(off, n)
            if len(data) != n and block_map.until_eof:
                if data:
                    yield off, data, hashlib.sha256(data).digest(), False
                break
            if len(data) != n:
                raise ConfigError(
                    "image is shorter than its block map", where=f"{source.path} at byte {off}"
                )
            extent = block_map.extents[ei]
            if extent.digest and ctype:
                if off == extent.start:
                    ext_hash = hashlib.new(ctype)
                assert ext_hash is not None
                ext_hash.update(data)
                if off + n == extent.end and ext_hash.hexdigest() != extent.digest:
                    raise ConfigError(
                        f"image does not match its bmap: bytes {extent.start}..{extent.end} "
                        f"have {ctype} {ext_hash.hexdigest()}, the bmap says {extent.digest}",
                        where=str(source.path),
                    )
            # a raw file can be read again for the comparison; a stream cannot: keep a hash
            digest = None if source.seekable else hashlib.sha256(data).digest()
            same = False
            if cmp_fd >= 0 and off != 0 and misses < SKIP_GIVE_UP:
                os.posix_fadvise(cmp_fd, off, n, os.POSIX_FADV_DONTNEED)
                try:
                    same = os.pread(cmp_fd, n, off) == data
                except OSError:
                    same = False
                misses = 0 if same else misses + 1
            yield off, data, digest, same
        source.drain()

    meter = _Meter("write", 0 if block_map.until_eof else block_map.mapped_bytes, log, progress)
    # nothing that looks like a partition table until the end
    _pwrite_all(fd, bytes(4096 if block_map.image_size >= 4096 else 512), 0, target)
    os.fdatasync(fd)
    held: tuple[int, bytes] | None = None
    window: list[tuple[int, bytes]] = []
    unsynced = 0

    def sync() -> None:
        nonlocal unsynced
        try:
            os.fdatasync(fd)
        except OSError as e:
            at = _probe_write_error(via or target, window)
            first = window[0][0] if window else 0
            raise InfraError(
                f"write failed: {e.strerror}"
                + ("" if at is not None else f" somewhere in bytes {first}..{window[-1][0]}"),
                where=f"card {target} at byte {at if at is not None else first}",
            ) from None
        if verifier is not None:
            verifier.submit([(off, len(data)) for off, data in window])
        window.clear()
        unsynced = 0

    skipped = 0
    for off, data, digest, same in _ahead(produce, QUEUE_DEPTH):
        digests[off] = digest
        if off == 0:
            held = (off, data)
            continue
        if same:  # compared with the card just now: that was its verification
            skipped += len(data)
            meter.add(len(data))
            if verifier is not None:
                verifier.meter.add(len(data))
            continue
        _pwrite_all(fd, data, off, target)
        window.append((off, data))
        unsynced += len(data)
        meter.add(len(data))
        if unsynced >= SYNC_EVERY:
            sync()
    sync()
    if held is not None:
        window.append(held)
        _pwrite_all(fd, held[1], 0, target)
        meter.add(len(held[1]))
        sync()
    return meter.done - skipped, skipped


class _Verifier:
    """Reads back each synced window in a thread while the writer goes on with the next.

    A window is read only after its fdatasync returned, and its pages are dropped
    from the page cache first (posix_fadvise DONTNEED on the range), so what is
    read comes from the card. On a USB reader the reads and writes share the bus,
    so this saves little there; it saves the second pass over the image's
    metadata and keeps the verification's tail short.
    """

    def __init__(
        self,
        source: _Source,
        target: Path,
        digests: dict[int, bytes | None],
        log: StepLog,
        progress: Progress | None,
        total: int,
        via: Path | None = None,
    ) -> None:
        self.source, self.target, self.digests = source, target, digests
        self.rfd = os.open(via or target, os.O_RDONLY | os.O_CLOEXEC)
        self.q: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.meter = _Meter("verify", total, log, progress)
        self.thread = threading.Thread(target=self._run, name="rig-card-verify", daemon=True)
        self.thread.start()

    def submit(self, window: list[tuple[int, int]]) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(window)

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()
        os.close(self.rfd)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.error = self.error or _Stopped()
        self.q.put(None)
        self.thread.join(timeout=30)
        os.close(self.rfd)

    def _run(self) -> None:
        while (window := self.q.get()) is not None:
            if self.error is not None:
                continue
            try:
                self._check(window)
            except BaseException as e:
                self.error = e

    def _check(self, window: list[tuple[int, int]]) -> None:
        for off, n in window:
            os.posix_fadvise(self.rfd, off, n, os.POSIX_FADV_DONTNEED)
        for off, n in window:
            try:
                data = os.pread(self.rfd, n, off)
            except OSError:
                bad = _first_bad_read(self.rfd, off, n)
                raise InfraError(
                    f"read-back failed: {os.strerror(bad.errno)}",
                    where=f"card {self.target} at byte {bad.offset}",
                ) from None
            want = self.digests[off]
            if want is None:
                same = len(data) == n and data == os.pread(self.source.fd, n, off)
            else:
                same = len(data) == n and hashlib.sha256(data).digest() == want
            if not same:
                at = _first_difference(self.source, off, data)
                raise InfraError(
                    "verification failed: the card does not hold what was written",
                    where=f"card {self.target} at byte {at}",
                    hint="the card may be worn out or counterfeit; replace it",
                )
            self.meter.add(n)


@dataclass
class _ReadError:
    offset: int
    errno: int


def _first_bad_read(fd: int, off: int, n: int) -> _ReadError:
    code = errno.EIO
    for s in range(off, off + n, 512):
        try:
            os.pread(fd, 512, s)
        except OSError as e:
            return _ReadError(s, e.errno or code)
    return _ReadError(off, code)


def _first_difference(source: _Source, off: int, data: bytes) -> int:
    """Exact byte of a mismatch when the source can be re-read, else the chunk's start."""
    if not source.seekable:
        return off
    want = os.pread(source.fd, len(data) or CHUNK, off)
    for i, (a, b) in enumerate(zip(want, data, strict=False)):
        if a != b:
            return off + i
    return off + min(len(want), len(data))


# --- per-card records ------------------------------------------------------------------

_DDL = """
CREATE TABLE IF NOT EXISTS card_writes (
    card TEXT PRIMARY KEY,
    writes INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    verify_failures INTEGER NOT NULL DEFAULT 0,
    io_errors INTEGER NOT NULL DEFAULT 0,
    last_image TEXT,
    last_result TEXT,
    last_at REAL
);
"""


def _record(state_dir: Path | None, card: str, r: WriteResult, failed: str | None = None) -> None:
    if state_dir is None:
        return
    from rig import state

    conn = state.connect(state_dir)
    try:
        state.ensure_schema(conn, "card_writes", _DDL)
        with state.transaction(conn):
            conn.execute("INSERT OR IGNORE INTO card_writes (card) VALUES (?)", (card,))
            conn.execute(
                "UPDATE card_writes SET writes = writes + 1, bytes = bytes + ?,"
                " verify_failures = verify_failures + ?, io_errors = io_errors + ?,"
                " last_image = ?, last_result = ?, last_at = ? WHERE card = ?",
                (
                    r.bytes_written,
                    int(failed == "verify"),
                    int(failed == "io"),
                    r.image,
                    failed or ("verified" if r.verified else "written"),
                    time.time(),
                    card,
                ),
            )
    finally:
        conn.close()


def card_records(state_dir: Path) -> list[dict[str, Any]]:
    """What the state store knows about each card (for `rig images list` / dashboards)."""
    from rig import state

    conn = state.connect(state_dir)
    try:
        state.ensure_schema(conn, "card_writes", _DDL)
        return [dict(r) for r in conn.execute("SELECT * FROM card_writes ORDER BY card")]
    finally:
        conn.close()


def iter_extents(block_map: BlockMap) -> Iterable[tuple[int, int]]:
    return ((e.start, e.end) for e in block_map.extents)
