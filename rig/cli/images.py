"""`rig images list` and `rig images fetch NAME|URL`."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from rig.card.catalog import load_catalog
from rig.card.images import cache_for, fetch, unpacked
from rig.cli.flash import _log, progress_view
from rig.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="the image catalogue and the download cache")
    isub = p.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    ls = isub.add_parser("list", help="catalogue entries, what is cached and its size")
    ls.set_defaults(func=cmd_list)
    f = isub.add_parser("fetch", help="download (resuming) and check an image into the cache")
    f.add_argument("image", metavar="NAME|URL")
    f.add_argument("--unpack", action="store_true", help="also unpack it for the writer now")
    f.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of a URL (else URL.sha256)")
    f.set_defaults(func=cmd_fetch)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    catalog = load_catalog()
    cache = cache_for(config)
    entries = cache.entries()
    by_name = {e.name: e for e in entries if e.name}
    by_url = {e.url: e for e in entries if e.url}
    table = Table(title=f"images (cache {cache.root}, limit {config.paths.cache_limit_gb:g} GB)")
    for col in ("name", "description", "cached", "size", "virtual recipe"):
        table.add_column(col)
    shown = set()
    for name, item in sorted(catalog.images.items()):
        e = by_name.get(name) or (by_url.get(item.url) if item.url else None)
        if e:
            shown.add(e.sha256)
        table.add_row(
            name,
            item.description,
            e.sha256[:12] if e else "-",
            _mb(e.size) if e else "",
            item.virtual.recipe if item.virtual else "",
        )
    for e in entries:
        if e.sha256 not in shown:
            table.add_row(e.file.name, e.url or "", e.sha256[:12], _mb(e.size), "")
    total = sum(e.size for e in entries)
    console = Console()
    console.print(table)
    print(f"cached: {len(entries)} image(s), {_mb(total)}")
    from rig.card.writer import card_records

    cards = card_records(config.paths.state)
    if cards:
        t = Table(title="cards written (state store)")
        for col in ("card", "writes", "written", "verify failures", "I/O errors", "last image"):
            t.add_column(col)
        for c in cards:
            t.add_row(
                c["card"],
                str(c["writes"]),
                _mb(c["bytes"]),
                str(c["verify_failures"]),
                str(c["io_errors"]),
                f"{c['last_image']} ({c['last_result']})",
            )
        console.print(t)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    log = _log()
    with progress_view(sys.stderr.isatty()) as progress:
        got = fetch(args.image, config, log, progress, sha256=args.sha256)
    path = unpacked(got, log) if args.unpack else got.entry.file
    print(f"{path} sha256={got.entry.sha256}")
    return 0
