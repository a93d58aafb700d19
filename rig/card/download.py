"""Streaming, resumable downloads with the SHA-256 computed on the way in.

An interrupted download keeps its ``.part`` file (and the validator the server
gave: ETag or Last-Modified); the next attempt asks for the rest with an HTTP
Range request guarded by If-Range, so a file changed on the server starts over
instead of being spliced. The hash covers the whole file whether it arrived in
one piece or several, and is compared with the published checksum; a mismatch
deletes the file and says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rig.errors import InfraError

BLOCK = 1 << 20
Progress = Callable[[str, int, int], None]  # phase "download", done, total (0 unknown)


@dataclass(frozen=True)
class Published:
    """What the publisher says the download must be."""

    sha256: str | None = None
    extract_sha256: str | None = None
    extract_size: int | None = None
    md5: str | None = None  # OctoPi publishes `.md5` files beside its zips


def client() -> httpx.Client:
    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=60.0))


def fetch_text(url: str, http: httpx.Client) -> str:
    try:
        r = http.get(url)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise InfraError(f"cannot fetch: {e}", where=url) from None
    return r.text


def _parse_sum_file(text: str, filename: str, where: str, digits: int, kind: str) -> str:
    """The hash for ``filename`` in a sha256sum/md5sum-style file (or its only hash)."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"\s*([0-9a-fA-F]{{{digits}}})(?:\s+\*?(\S.*))?\s*$", line)
        if m:
            found.append((m.group(1).lower(), (m.group(2) or "").strip()))
    for digest, name in found:
        if name and Path(name).name == filename:
            return digest
    if len(found) == 1:
        return found[0][0]
    raise InfraError(f"no {kind} for {filename} in the checksum file", where=where)


def parse_sha256_file(text: str, filename: str, where: str) -> str:
    """The hash for ``filename`` in a sha256sum-style file (or its only hash)."""
    return _parse_sum_file(text, filename, where, 64, "SHA-256")


def parse_md5_file(text: str, filename: str, where: str) -> str:
    """The hash for ``filename`` in an md5sum-style file (or its only hash)."""
    return _parse_sum_file(text, filename, where, 32, "MD5")


def find_in_imager_json(data: Any, url: str) -> Published | None:
    """The entry whose url is ``url``: searched through an os_list and its subitems, or
    the one object an OctoPi-UpToDate release ships as its ``rpi-imager.json``."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("url") == url:
                size = item.get("extract_size")
                return Published(
                    item.get("image_download_sha256"),
                    item.get("extract_sha256"),
                    int(size) if size else None,
                )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def published_checksums(
    url: str,
    http: httpx.Client,
    *,
    sha256: str | None = None,
    sha256_url: str | None = None,
    rpi_imager_json: str | None = None,
    md5_url: str | None = None,
) -> Published:
    """What the publisher says: Imager JSON, a given hash, a checksum file, else a guess."""
    if rpi_imager_json:
        try:
            data = json.loads(fetch_text(rpi_imager_json, http))
        except json.JSONDecodeError as e:
            raise InfraError(f"not JSON: {e}", where=rpi_imager_json) from None
        entry = find_in_imager_json(data, url)
        if entry is None:
            raise InfraError(f"no entry for {url}", where=rpi_imager_json)
        return Published(sha256 or entry.sha256, entry.extract_sha256, entry.extract_size)
    if sha256:
        return Published(sha256)
    name = url.rsplit("/", 1)[-1]
    if sha256_url:
        return Published(parse_sha256_file(fetch_text(sha256_url, http), name, sha256_url))
    if md5_url:
        return Published(md5=parse_md5_file(fetch_text(md5_url, http), name, md5_url))
    # nothing named: the files publishers put beside a download, SHA-256 first
    try:
        return Published(parse_sha256_file(fetch_text(url + ".sha256", http), name, url))
    except InfraError:
        pass
    try:
        return Published(md5=parse_md5_file(fetch_text(url + ".md5", http), name, url))
    except InfraError as e:
        e.hint = (
            "no published checksum found (no .sha256 or .md5 beside it); give the "
            "expected one with --sha256 HEX"
        )
        raise


def _validator(r: httpx.Response) -> str | None:
    etag = r.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return r.headers.get("last-modified")


def download(
    url: str,
    part: Path,
    *,
    expected_sha256: str | None,
    expected_md5: str | None = None,
    http: httpx.Client | None = None,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> str:
    """Download ``url`` into ``part`` (resuming what is there); return its SHA-256.

    The caller renames ``part`` once this returns. InfraError on network
    trouble (the partial file is kept for the next attempt) and on a checksum
    mismatch (the file is deleted).
    """
    own = http is None
    http = http or client()
    meta = part.with_name(part.name + ".json")
    digest = _Digests()
    have = 0
    headers: dict[str, str] = {}
    if part.exists() and meta.exists():
        with open(part, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
                have += len(block)
        saved = json.loads(meta.read_text())
        if have and saved.get("url") == url and saved.get("validator"):
            headers = {"Range": f"bytes={have}-", "If-Range": saved["validator"]}
    try:
        with http.stream("GET", url, headers=headers) as r:
            if r.status_code == 416 and have:  # nothing left to send: we have it all
                pass
            elif r.status_code == 206 and headers:
                if not r.headers.get("content-range", "").startswith(f"bytes {have}-"):
                    raise InfraError("server answered the wrong range", where=url)
                _receive(r, part, "ab", digest, have, url, progress, max_bytes)
            elif r.status_code == 200:
                digest, have = _Digests(), 0
                meta.write_text(json.dumps({"url": url, "validator": _validator(r)}))
                _receive(r, part, "wb", digest, 0, url, progress, max_bytes)
            else:
                raise InfraError(f"HTTP {r.status_code}", where=url)
    except httpx.HTTPError as e:
        raise InfraError(
            f"download interrupted: {e}",
            where=url,
            hint="run the same command again: it resumes where it stopped",
        ) from None
    finally:
        if own:
            http.close()
    result = digest.sha256.hexdigest()
    md5 = digest.md5.hexdigest()
    if expected_md5 and md5 != expected_md5.lower():
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise InfraError(
            f"checksum mismatch: downloaded file has MD5 {md5}, the publisher says "
            f"{expected_md5}; the download was deleted",
            where=url,
            hint="try again; if it persists the mirror or the catalogue entry is wrong",
        )
    if expected_sha256 and result != expected_sha256.lower():
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise InfraError(
            f"checksum mismatch: downloaded file has SHA-256 {result}, the publisher says "
            f"{expected_sha256}; the download was deleted",
            where=url,
            hint="try again; if it persists the mirror or the catalogue entry is wrong",
        )
    meta.unlink(missing_ok=True)
    return result


class _Digests:
    """SHA-256 (the cache's key) and MD5 (what OctoPi publishes) in one pass."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, block: bytes) -> None:
        self.sha256.update(block)
        self.md5.update(block)


def _receive(
    r: httpx.Response,
    part: Path,
    mode: str,
    digest: Any,
    have: int,
    url: str,
    progress: Progress | None,
    max_bytes: int | None,
) -> None:
    length = r.headers.get("content-length")
    total = have + int(length) if length and length.isdigit() else 0
    done = have
    last = 0.0
    with open(part, mode) as out:
        for block in r.iter_bytes(BLOCK):
            out.write(block)
            digest.update(block)
            done += len(block)
            if max_bytes is not None and done > max_bytes:
                raise InfraError(f"download larger than {max_bytes} bytes; stopped", where=url)
            now = time.monotonic()
            if progress is not None and (now - last > 0.1 or done == total):
                progress("download", done, total)
                last = now
    if total and done != total:
        raise InfraError(
            f"download ended at {done} of {total} bytes",
            where=url,
            hint="run the same command again: it resumes where it stopped",
        )
