"""The image cache: content-addressed by SHA-256, bounded, least recently used goes first.

Layout under ``root`` (config.paths.images)::

    sha256/<hex>/<file name>   the download, exactly as published (checked)
    sha256/<hex>/image.img     its unpacked raw image (sparse), made once for the writer
    sha256/<hex>/source.json   where it came from (url, catalogue name)
    sha256/<hex>/.used         touched on every use: its mtime orders eviction
    partial/                   interrupted downloads waiting to be resumed

Sizes count allocated blocks (unpacked images are sparse). Eviction runs after
each addition and never removes the entry just added or used.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    sha256: str
    dir: Path
    file: Path
    url: str | None
    name: str | None
    size: int  # bytes on disk, download plus unpacked image
    last_used: float

    @property
    def unpacked(self) -> Path:
        return self.dir / "image.img"


def safe_name(name: str) -> str:
    """A file name from a URL's last segment, never a path."""
    base = name.rsplit("/", 1)[-1].split("?", 1)[0]
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip(".")
    return base or "image"


def _du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        total += st.st_blocks * 512
    return total


class ImageCache:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit = limit_bytes
        self.blobs = root / "sha256"
        self.partial = root / "partial"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One process changes the cache at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def unpacked_files(self) -> list[Entry]:
        """Local archives unpacked for the writer (unpacked/): evicted with the rest."""
        d = self.root / "unpacked"
        out = []
        if d.is_dir():
            for f in d.iterdir():
                if f.is_file():
                    st = f.stat()
                    out.append(
                        Entry(f"unpacked:{f.name}", f, f, None, None, st.st_blocks * 512,
                              max(st.st_atime, st.st_mtime))
                    )  # fmt: skip
        return out

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        if not self.blobs.is_dir():
            return out
        for d in self.blobs.iterdir():
            meta = d / "source.json"
            if not meta.exists():
                continue
            info = json.loads(meta.read_text())
            file = d / info["file"]
            if not file.exists():
                continue
            used = d / ".used"
            out.append(
                Entry(
                    d.name,
                    d,
                    file,
                    info.get("url"),
                    info.get("name"),
                    _du(d),
                    used.stat().st_mtime if used.exists() else 0.0,
                )
            )
        return sorted(out, key=lambda e: e.last_used, reverse=True)

    def get(self, sha256: str) -> Entry | None:
        for e in self.entries():
            if e.sha256 == sha256:
                return e
        return None

    def find_url(self, url: str) -> Entry | None:
        for e in self.entries():
            if e.url == url:
                return e
        return None

    def touch(self, entry: Entry) -> None:
        (entry.dir / ".used").touch()

    def part_path(self, url: str) -> Path:
        import hashlib

        self.partial.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        return self.partial / f"{key}-{safe_name(url)}.part"

    def add(self, part: Path, sha256: str, url: str | None, name: str | None) -> Entry:
        """Move a checked download into the cache under its hash, then evict."""
        d = self.blobs / sha256
        d.mkdir(parents=True, exist_ok=True)
        file = d / safe_name(url or name or "image")
        os.replace(part, file)
        (d / "source.json").write_text(json.dumps({"file": file.name, "url": url, "name": name}))
        (d / ".used").touch()
        self.evict(keep=sha256)
        entry = self.get(sha256)
        assert entry is not None
        return entry

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the cache fits its limit."""
        entries = sorted(
            self.entries() + self.unpacked_files(), key=lambda e: e.last_used, reverse=True
        )
        total = sum(e.size for e in entries)
        removed = []
        for e in reversed(entries):  # oldest first
            if total <= self.limit:
                break
            if e.sha256 == keep:
                continue
            if e.dir.is_dir():
                shutil.rmtree(e.dir, ignore_errors=True)
            else:
                e.dir.unlink(missing_ok=True)
            total -= e.size
            removed.append(e.sha256)
        return removed


def resolve_image(name_or_path, config, log=None, progress=None):  # type: ignore[no-untyped-def]
    """The image file for a path, catalogue name or URL (see rig.card.images.resolve_image)."""
    from rig.card.images import resolve_image as resolve

    return resolve(name_or_path, config, log, progress)
