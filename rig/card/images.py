"""From what a user or a matrix names (a path, a catalogue name, a URL) to an image file.

``resolve_image`` is what the scenario runner and `rig flash` call (through
rig.root.Rig.image): a local path is used as it is; a catalogue name is built by
the backend's image builder when it has one for the entry (the virtual rig
builds from the entry's ``virtual:`` recipe), and otherwise downloaded (checked
against the published SHA-256) into the cache and unpacked there once, so the
writer can read its file systems for the map.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rig.card import archive
from rig.card.cache import Entry, ImageCache
from rig.card.catalog import Catalog, CatalogImage, load_catalog
from rig.card.download import Progress, client, download, published_checksums
from rig.config import RigConfig
from rig.errors import ConfigError
from rig.events import StepLog

URL = re.compile(r"^https?://")


def cache_for(config: RigConfig) -> ImageCache:
    return ImageCache(config.paths.images, int(config.paths.cache_limit_gb * (1 << 30)))


@dataclass(frozen=True)
class Fetched:
    entry: Entry
    extract_size: int | None
    extract_sha256: str | None


def fetch(
    name_or_url: str,
    config: RigConfig,
    log: StepLog | None = None,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    sha256: str | None = None,
) -> Fetched:
    """Download a catalogue image or URL into the cache (or find it there).

    A URL's checksum is ``sha256`` when given, else the ``<url>.sha256`` file.
    """
    log = log or StepLog()
    cache = cache_for(config)
    item: CatalogImage | None = None
    if URL.match(name_or_url):
        url = name_or_url
    else:
        item = (catalog or load_catalog()).get(name_or_url)
        if not item.url:
            raise ConfigError(
                f"catalogue image {item.name!r} has no url to download", where=item.name
            )
        url = item.url
    extract_size = item.extract_size if item else None
    extract_sha256 = item.extract_sha256 if item else None
    known = item.sha256 if item else sha256
    if known:  # known hash: the cache answers without the network
        hit = cache.get(known.lower())
        if hit:
            cache.touch(hit)
            log(f"{name_or_url}: cached ({hit.file.name})", sha256=hit.sha256)
            return Fetched(hit, extract_size, extract_sha256)
    with client() as http:
        pub = published_checksums(
            url,
            http,
            sha256=item.sha256 if item else sha256,
            sha256_url=item.sha256_url if item else None,
            rpi_imager_json=item.rpi_imager_json if item else None,
            md5_url=item.md5_url if item else None,
        )
        if pub.sha256:
            hit = cache.get(pub.sha256)
            if hit:
                cache.touch(hit)
                log(f"{name_or_url}: cached ({hit.file.name})", sha256=hit.sha256)
                return Fetched(
                    hit, extract_size or pub.extract_size, extract_sha256 or pub.extract_sha256
                )
        part = cache.part_path(url)
        log(f"downloading {url}", url=url)
        digest = download(
            url,
            part,
            expected_sha256=pub.sha256,
            expected_md5=pub.md5,
            http=http,
            progress=progress,
        )
    with cache.locked():
        entry = cache.add(part, digest, url, item.name if item else None)
    checked = "SHA-256" if pub.sha256 else "MD5" if pub.md5 else "no checksum"
    log(f"{name_or_url}: downloaded (SHA-256 {digest}; {checked} checked)", sha256=digest)
    return Fetched(entry, extract_size or pub.extract_size, extract_sha256 or pub.extract_sha256)


def cache_limit(config: RigConfig) -> int:
    """The image cache's size limit in bytes (paths.cache_limit_gb)."""
    return int(config.paths.cache_limit_gb * (1 << 30))


def unpacked(fetched: Fetched, log: StepLog, limit: int | None = None) -> Path:
    """The raw image of a cached download, unpacked beside it once (size and hash checked).

    Without a published ``extract_size`` the unpacked copy may not outgrow ``limit`` (the
    cache's own limit, where the caller knows it): an archive bomb stops there."""
    entry = fetched.entry
    if archive.detect(entry.file) == "raw":
        return entry.file
    if not entry.unpacked.exists():
        log(f"unpacking {entry.file.name} into the cache")
        archive.unpack(
            entry.file,
            entry.unpacked,
            extract_size=fetched.extract_size,
            extract_sha256=fetched.extract_sha256,
            limit=limit,
        )
    return entry.unpacked


def resolve_image(
    name_or_path: str | Path,
    config: RigConfig,
    log: StepLog | None = None,
    progress: Progress | None = None,
    build: Callable[[CatalogImage, StepLog], Path | None] | None = None,
) -> Path:
    """The image file to write for a path, a catalogue name or a URL."""
    log = log or StepLog()
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_file():
            raise ConfigError("not an image file", where=text)
        return path
    if URL.match(text):
        return unpacked(fetch(text, config, log, progress), log, cache_limit(config))
    catalog = load_catalog()
    if text not in catalog.images:
        if "/" in text or text.endswith((".img", ".zip", ".xz", ".gz", ".zst")):
            raise ConfigError("no such image file", where=text)
        catalog.get(text)  # raises with the known names
    item = catalog.images[text]
    built = build(item, log) if build is not None else None
    if built is not None:
        return built
    return unpacked(fetch(text, config, log, progress, catalog), log, cache_limit(config))
