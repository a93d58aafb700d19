"""`rig images list` and `rig images fetch NAME|URL`."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rig.card.catalog import load_catalog
from rig.card.images import cache_for, cache_limit, fetch, unpacked
from rig.cli.flash import _log, progress_view
from rig.config import RigConfig, load_config
from rig.errors import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="the image catalogue and the download cache")
    isub = p.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    ls = isub.add_parser("list", help="catalogue entries, what is cached and its size")
    ls.add_argument(
        "--json", action="store_true", help="print the listing as JSON (keys: see the README)"
    )
    ls.set_defaults(func=cmd_list)
    f = isub.add_parser("fetch", help="download (resuming) and check an image into the cache")
    f.add_argument("image", metavar="NAME|URL")
    f.add_argument("--unpack", action="store_true", help="also unpack it for the writer now")
    f.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of a URL (else URL.sha256)")
    f.set_defaults(func=cmd_fetch)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


JSON_VERSION = 1  # bumped only when a documented key changes meaning or goes away


def image_listing(config: RigConfig) -> dict[str, Any]:
    """The catalogue, the cache and the cards as data: `--json` prints it, the table shows it."""
    from rig.card.writer import card_records

    catalog = load_catalog()
    cache = cache_for(config)
    entries = cache.entries()
    by_name = {e.name: e for e in entries if e.name}
    by_url = {e.url: e for e in entries if e.url}
    images, shown = [], set()
    for name, item in sorted(catalog.images.items()):
        e = by_name.get(name) or (by_url.get(item.url) if item.url else None)
        if e:
            shown.add(e.sha256)
        images.append(
            {
                "name": name,
                "description": item.description,
                "base": item.base,
                "product": item.product,
                "octopi": item.octopi,
                "version": item.version,
                "url": item.url,
                "sha256": item.sha256,
                "virtual_recipe": item.virtual.recipe if item.virtual else None,
                "cached": {"sha256": e.sha256, "size": e.size, "file": str(e.file)} if e else None,
            }
        )
    uncatalogued = [
        {"file": str(e.file), "url": e.url, "sha256": e.sha256, "size": e.size}
        for e in entries
        if e.sha256 not in shown
    ]
    card_keys = ("card", "writes", "bytes", "verify_failures", "io_errors")
    cards = [
        {
            **{k: c[k] for k in card_keys},
            "last_image": c["last_image"],
            "last_result": c["last_result"],
            "last_at": c["last_at"],
        }
        for c in card_records(config.paths.state)
    ]
    return {
        "version": JSON_VERSION,
        "catalog": str(catalog.path),
        "cache": {
            "root": str(cache.root),
            "limit_gb": config.paths.cache_limit_gb,
            "images": len(entries),
            "bytes": sum(e.size for e in entries),
        },
        "images": images,
        "uncatalogued": uncatalogued,
        "cards": cards,
    }


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = image_listing(config)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    cache = data["cache"]
    table = Table(title=f"images (cache {cache['root']}, limit {cache['limit_gb']:g} GB)")
    for col in ("name", "description", "cached", "size", "virtual recipe"):
        table.add_column(col)
    for item in data["images"]:
        e = item["cached"]
        table.add_row(
            item["name"],
            item["description"],
            e["sha256"][:12] if e else "-",
            _mb(e["size"]) if e else "",
            item["virtual_recipe"] or "",
        )
    for e in data["uncatalogued"]:
        table.add_row(Path(e["file"]).name, e["url"] or "", e["sha256"][:12], _mb(e["size"]), "")
    console = Console()
    console.print(table)
    print(f"cached: {cache['images']} image(s), {_mb(cache['bytes'])}")
    if data["cards"]:
        t = Table(title="cards written (state store)")
        for col in ("card", "writes", "written", "verify failures", "I/O errors", "last image"):
            t.add_column(col)
        for c in data["cards"]:
            t.add_row(
                c["card"],
                str(c["writes"]),
                _mb(c["bytes"]),
                str(c["verify_failures"]),
                str(c["io_errors"]),
                f"{c['last_image']} ({c['last_result']})",
            )
        console.print(t)
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    log = _log()
    if config.virtual and not args.sha256 and args.image in load_catalog().images:
        # the virtual rig writes the image its recipe builds, never the download
        from rig.root import Rig

        path = Rig.from_config(config).image(args.image, log)
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        print(f"{path} sha256={digest}")
        return EXIT_OK
    with progress_view(sys.stderr.isatty()) as progress:
        got = fetch(args.image, config, log, progress, sha256=args.sha256)
    path = unpacked(got, log, cache_limit(config)) if args.unpack else got.entry.file
    print(f"{path} sha256={got.entry.sha256}")
    return EXIT_OK
