"""The package cache on disk: upstream pages and files, and the wheels devices built.

Layout under ``root`` (run.package_cache, default beside the image cache)::

    pages/<project>.json          the upstream's files of a project, when it was asked
    files/<project>/<file name>   a distribution fetched upstream, checked against its hashes
    built/<environment>/<wheel>   a wheel a device built, with environment.json beside it
    tmp/                          downloads under way

A file's mtime is its last use. Over the limit, the least recently used files
go first, upstream files before the wheels devices built (those cost minutes of
a Pi 3 to make again); the file just added or served is never evicted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

from rig.packages.environment import Environment
from rig.packages.upstream import File

CHUNK = 1 << 20


def hash_problem(path: Path, hashes: dict[str, str]) -> str | None:
    """Why the file does not match the upstream's hashes, or None when every known one does."""
    known = {name: value for name, value in hashes.items() if name in hashlib.algorithms_available}
    if not known:
        return "the upstream gives no hash the rig can check"
    digests = {name: hashlib.new(name) for name in known}
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for d in digests.values():
                d.update(chunk)
    for name, value in known.items():
        got = digests[name].hexdigest()
        if got != value.lower():
            return f"{name} is {got}, the upstream says {value}"
    return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


class PackageStore:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit = limit_bytes
        for d in ("pages", "files", "built", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One process changes the cache at a time (a run and the daemon share it)."""
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # --- upstream pages -----------------------------------------------------------

    def _page_path(self, project: str) -> Path:
        return self.root / "pages" / f"{canonicalize_name(project)}.json"

    def page(self, project: str) -> tuple[float, list[File]] | None:
        """The project's files as last fetched upstream, and when; None if never."""
        try:
            data = json.loads(self._page_path(project).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return float(data["fetched"]), [File.from_json(f) for f in data["files"]]

    def save_page(self, project: str, files: list[File]) -> None:
        data = {"fetched": time.time(), "files": [f.to_json() for f in files]}
        self._atomic_write(self._page_path(project), json.dumps(data).encode())

    def projects(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "pages").glob("*.json"))

    # --- upstream files -------------------------------------------------------------

    def file_path(self, project: str, filename: str) -> Path | None:
        if not _safe(filename):
            return None
        return self.root / "files" / canonicalize_name(project) / filename

    def cached(self, project: str, filename: str) -> Path | None:
        """The file if it is here (and now counts as used)."""
        path = self.file_path(project, filename)
        if path is None or not path.is_file():
            return None
        _touch(path)
        return path

    def temp_file(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        os.close(fd)
        return Path(name)

    def add(self, project: str, filename: str, downloaded: Path) -> Path:
        """A checked download into the cache (atomic), then the limit is enforced."""
        target = self.file_path(project, filename)
        if target is None:
            raise ValueError(f"not a file name: {filename!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(downloaded, target)
        _touch(target)
        self.evict(keep=target)
        return target

    # --- wheels the devices built -----------------------------------------------------

    def keep_built(self, env: Environment, filename: str, data: bytes) -> bool:
        """A wheel a device in ``env`` built; False when it is not a wheel or already kept."""
        try:
            parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return False
        if not _safe(filename) or not data.startswith(b"PK"):
            return False
        d = self.root / "built" / env.key
        target = d / filename
        if target.is_file():
            return False
        d.mkdir(parents=True, exist_ok=True)
        self._atomic_write(d / "environment.json", json.dumps(asdict(env), indent=2).encode())
        self._atomic_write(Path(f"{target}.sha256"), hashlib.sha256(data).hexdigest().encode())
        self._atomic_write(target, data)
        self.evict(keep=target)
        return True

    @staticmethod
    def built_sha256(path: Path) -> str:
        try:
            return Path(f"{path}.sha256").read_text().strip()
        except FileNotFoundError:
            return sha256_of(path)

    def built(self, env: Environment | None, project: str) -> list[Path]:
        """The wheels of ``project`` built in exactly this environment (none for None)."""
        if env is None:
            return []
        d = self.root / "built" / env.key
        want = canonicalize_name(project)
        out = []
        for p in sorted(d.glob("*.whl")) if d.is_dir() else []:
            try:
                name = parse_wheel_filename(p.name)[0]
            except InvalidWheelFilename:
                continue
            if name == want:
                out.append(p)
        return out

    def built_file(self, env_key: str, filename: str) -> Path | None:
        if not (_safe(env_key) and _safe(filename)):
            return None
        path = self.root / "built" / env_key / filename
        if not path.is_file():
            return None
        _touch(path)
        return path

    # --- size -----------------------------------------------------------------------

    def entries(self) -> list[tuple[bool, float, int, Path]]:
        """(built by a device, last used, bytes, path) of every kept distribution."""
        out = []
        for kind, pattern in (("files", "*/*"), ("built", "*/*.whl")):
            for p in (self.root / kind).glob(pattern):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                out.append((kind == "built", st.st_mtime, st.st_size, p))
        return out

    def size(self) -> int:
        return sum(e[2] for e in self.entries())

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used distributions until the cache fits its limit."""
        removed: list[Path] = []
        with self.locked():
            entries = sorted(self.entries())
            total = sum(e[2] for e in entries)
            for _, _, size, path in entries:
                if total <= self.limit:
                    break
                if keep is not None and path == keep:
                    continue
                path.unlink(missing_ok=True)
                Path(f"{path}.sha256").unlink(missing_ok=True)
                removed.append(path)
                total -= size
        return removed

    def _atomic_write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.temp_file()
        tmp.write_bytes(data)
        os.replace(tmp, target)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
