"""Get the candidate image a job names onto the flash host, and prove it is the one announced.

Three sources: a workflow run's artifact (a zip GitHub wraps around the image),
a release asset (checksums from the ``.sha256`` and ``rpi-imager.json`` assets
beside it), or a URL with its SHA-256 (repository_dispatch / direct
notification). Nothing is tested that was not verified: a release or URL
without a checksum is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from rig.daemon.egress import host_allowed, host_port
from rig.daemon.github import GitHub
from rig.daemon.settings import DEFAULT_MAX_IMAGE
from rig.daemon.webhooks import is_image_asset
from rig.errors import ConfigError, InfraError

HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")
MAX_IMAGE = DEFAULT_MAX_IMAGE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(name: str, source: str, expected: str, actual: str) -> InfraError:
    return InfraError(
        f"{name}: SHA-256 {actual} does not match {source} ({expected})",
        where=name,
        hint="the download was corrupted or the asset was replaced; it will be fetched again",
    )


def checksum_from_sha256_file(text: str, image_name: str) -> str | None:
    """``<hex>  <name>`` lines (sha256sum format); a lone hash counts for the image."""
    lines = [ln for ln in text.splitlines() if HEX64.search(ln)]
    for ln in lines:
        if ln.strip().endswith(image_name):
            return HEX64.search(ln).group(0).lower()  # type: ignore[union-attr]
    if len(lines) == 1:
        return HEX64.search(lines[0]).group(0).lower()  # type: ignore[union-attr]
    return None


def checksum_from_imager_json(text: str) -> str | None:
    """``image_download_sha256`` anywhere in an rpi-imager.json (flat or in os_list)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            value = item.get("image_download_sha256")
            if isinstance(value, str) and HEX64.fullmatch(value):
                return value.lower()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _safe_name(name: str, fallback: str = "image") -> str:
    """A file name from a URL, an asset or a zip member: never a path, never hidden."""
    name = PurePosixPath(name.replace("\\", "/")).name.lstrip(".")
    return name[:200] or fallback


def fetch(
    image: dict[str, Any],
    gh: GitHub,
    dest_dir: Path,
    *,
    max_bytes: int = MAX_IMAGE,
    image_hosts: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Download and verify; returns {path, sha256, verified: [what was checked]}.

    Nothing larger than ``max_bytes`` (or the size GitHub states for the asset or
    artifact) is downloaded; a URL must still name one of ``image_hosts``.
    """
    kind = image.get("kind")
    if kind == "artifact":
        return _artifact(image, gh, dest_dir, max_bytes)
    if kind == "release":
        return _release(image, gh, dest_dir, max_bytes)
    if kind == "url":
        url = str(image["url"])
        if image_hosts is not None and not host_allowed(url, image_hosts):
            raise ConfigError(
                f"image host {host_port(url)} is not in the repository's image_hosts",
                where="rig.yaml: github.repositories[].image_hosts",
            )
        path = dest_dir / _safe_name(url.split("?", 1)[0])
        actual = gh.download(url, path, sha256=image["sha256"], max_bytes=max_bytes)
        return {"path": str(path), "sha256": actual, "verified": ["announced sha256"]}
    raise ConfigError(f"unknown image source {kind!r}", where="job image")


def _cap(stated: Any, max_bytes: int) -> int:
    """The size GitHub states for a download (when it does), never above ``max_bytes``."""
    if isinstance(stated, int) and not isinstance(stated, bool) and 0 <= stated <= max_bytes:
        return stated
    if isinstance(stated, int) and stated > max_bytes:
        raise InfraError(
            f"the image is {stated} bytes, more than daemon.max_image_bytes ({max_bytes})",
            where="download",
            hint="raise daemon.max_image_bytes if the image really is that large",
        )
    return max_bytes


def _release(image: dict[str, Any], gh: GitHub, dest_dir: Path, max_bytes: int) -> dict[str, Any]:
    repo = image["repo"]
    release = gh.release(repo, image["release_id"])  # fresh: assets may have been added
    assets = [
        a
        for a in release.get("assets") or []
        if isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("id"), int)
    ]
    images = [a for a in assets if is_image_asset(a["name"], image["pattern"])]
    if not images:
        raise InfraError(
            f"release {release.get('tag_name')}: no asset matches {image['pattern']!r}",
            where=f"{repo} release {image['release_id']}",
        )
    asset = images[0]
    name = asset["name"]
    expected: list[tuple[str, str]] = []
    for other in assets:
        if other["name"] in (name + ".sha256", PurePosixPath(name).stem + ".sha256"):
            found = checksum_from_sha256_file(gh.asset_text(repo, other["id"]), name)
            if found:
                expected.append((other["name"], found))
        elif other["name"] == "rpi-imager.json" or fnmatch(other["name"], "*rpi-imager*.json"):
            found = checksum_from_imager_json(gh.asset_text(repo, other["id"]))
            if found:
                expected.append((other["name"], found))
    if not expected:
        raise InfraError(
            f"release {release.get('tag_name')}: no checksum for {name}",
            where=f"{repo} release {image['release_id']}",
            hint=f"publish {name}.sha256 or rpi-imager.json beside the image",
        )
    if len({value for _, value in expected}) > 1:
        raise InfraError(
            f"{name}: the published checksums disagree: {expected}",
            where=f"{repo} release {image['release_id']}",
        )
    path = dest_dir / _safe_name(name)
    actual = gh.download_asset(
        repo, asset["id"], path, sha256=expected[0][1], max_bytes=_cap(asset.get("size"), max_bytes)
    )
    return {
        "path": str(path),
        "sha256": actual,
        "verified": [s for s, _ in expected],
        "asset": {"id": asset["id"], "name": name, "updated_at": asset.get("updated_at")},
        "release": {"id": release.get("id"), "tag": release.get("tag_name")},
    }


def _artifact(image: dict[str, Any], gh: GitHub, dest_dir: Path, max_bytes: int) -> dict[str, Any]:
    repo, run_id = image["repo"], image["run_id"]
    artifacts = [
        a
        for a in gh.run_artifacts(repo, run_id)
        if fnmatch(a.get("name", ""), image["pattern"]) and not a.get("expired")
    ]
    if not artifacts:
        raise InfraError(
            f"run {run_id} has no artifact matching {image['pattern']!r}",
            where=f"{repo} run {run_id}",
            hint="check github.repositories[].artifact against the workflow's upload step",
        )
    art = artifacts[0]
    zpath = dest_dir / f"artifact-{art['id']}.zip"
    digest = str(art.get("digest") or "")
    expected = digest[7:] if digest.startswith("sha256:") else None
    gh.download_artifact(
        repo, art["id"], zpath, sha256=expected, max_bytes=_cap(art.get("size_in_bytes"), max_bytes)
    )
    verified = ["artifact digest"] if expected else []
    path, sha, more = _unwrap(zpath, dest_dir, max_bytes)
    zpath.unlink(missing_ok=True)
    return {"path": str(path), "sha256": sha, "verified": verified + more + ["zip CRC"]}


def _unwrap(zpath: Path, dest_dir: Path, max_bytes: int) -> tuple[Path, str, list[str]]:
    """The image inside an artifact zip (the largest non-checksum member), checked."""
    try:
        zf = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile as e:
        raise InfraError(f"{zpath.name}: not a zip: {e}", where=str(zpath)) from e
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        images = [m for m in members if is_image_asset(PurePosixPath(m.filename).name, "*")]
        if not images:
            raise InfraError(f"{zpath.name}: holds no image", where=str(zpath))
        member = max(images, key=lambda m: m.file_size)
        if member.file_size > max_bytes:
            raise InfraError(
                f"{member.filename}: {member.file_size} bytes is more than {max_bytes}",
                where=str(zpath),
            )
        name = _safe_name(member.filename)  # never a path from the archive
        out = dest_dir / name
        tmp = out.with_name(name + ".part")
        digest = hashlib.sha256()
        try:
            with zf.open(member) as src, open(tmp, "wb") as dst:  # CRC checked at EOF
                written = 0
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:  # the declared size lied
                        raise OSError(f"unpacks to more than {max_bytes} bytes")
                    dst.write(chunk)
                    digest.update(chunk)
        except (zipfile.BadZipFile, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise InfraError(f"{zpath.name}: {member.filename}: {e}", where=str(zpath)) from e
        os.replace(tmp, out)
        actual = digest.hexdigest()
        verified = []
        for m in members:
            if PurePosixPath(m.filename).name == name + ".sha256":
                text = zf.read(m).decode("utf-8", "replace")
                value = checksum_from_sha256_file(text, name)
                if value and value != actual:
                    out.unlink(missing_ok=True)
                    raise _mismatch(name, m.filename, value, actual)
                if value:
                    verified.append(m.filename)
    return out, actual, verified
