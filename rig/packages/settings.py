"""The package cache's settings from rig.yaml's ``run`` section, checked.

``run.package_index``: ``false`` turns the cache off; a URL or a list of URLs are
the upstream indexes (merged, the first one's file wins a name); unset: the
rig's own ``PIP_INDEX_URL`` (and ``PIP_EXTRA_INDEX_URL``), else PyPI.
``run.package_cache``: its directory (default: ``packages`` beside the image
cache); ``run.package_cache_gb``: its size limit (default 5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.config import RigConfig
from rig.errors import ConfigError


def pip_default_index() -> str:
    """The index pip uses when nothing configures one (asked of pip, not written here)."""
    from pip._internal.models.index import PyPI  # pip has no public API for it

    return PyPI.simple_url.rstrip("/") + "/"


DEFAULT_LIMIT_GB = 5.0


@dataclass(frozen=True)
class PackageSettings:
    upstreams: tuple[str, ...]
    root: Path
    limit_bytes: int
    port: int = 0


def _where(config: RigConfig, key: str) -> str:
    return f"{config.where}: run.{key}"


def package_settings(
    config: RigConfig, environ: dict[str, str] | None = None
) -> PackageSettings | None:
    """The cache's settings, or None when rig.yaml turns it off."""
    run: dict[str, Any] = config.sections.get("run", {}) or {}
    env = os.environ if environ is None else environ
    value = run.get("package_index")
    if value is False:
        return None
    if value is None:
        # the rig's own pip settings; a local (file://) index is not proxied: then no cache
        main = env.get("PIP_INDEX_URL") or pip_default_index()
        if not main.startswith(("http://", "https://")):
            return None
        extras = env.get("PIP_EXTRA_INDEX_URL", "").split()
        value = [main, *(u for u in extras if u.startswith(("http://", "https://")))]
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ConfigError(
            "package_index must be false, a URL or a list of URLs",
            where=_where(config, "package_index"),
        )
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{url!r} is not an http(s) URL of a simple index",
                where=_where(config, "package_index"),
                hint=f"e.g. {pip_default_index()} (file:// indexes are not proxied)",
            )
    root = run.get("package_cache")
    limit = run.get("package_cache_gb", DEFAULT_LIMIT_GB)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise ConfigError(
            f"{limit!r} is not a positive number of GB", where=_where(config, "package_cache_gb")
        )
    port = run.get("package_index_port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ConfigError(f"{port!r} is not a port", where=_where(config, "package_index_port"))
    base = config.source.parent if config.source else Path.cwd()
    return PackageSettings(
        upstreams=tuple(u.rstrip("/") + "/" for u in urls),
        root=(base / Path(root).expanduser()) if root else config.paths.images.parent / "packages",
        limit_bytes=int(float(limit) * (1 << 30)),
        port=port,
    )
