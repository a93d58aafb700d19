"""`rig snapshots list` and `rig snapshots remove KEY...|--all`: the starting-state store.

A store of prepared cards grows to `run.snapshot_cache_gb` and is otherwise only
trimmed by use; a person needs to see what is in it and to drop a snapshot they
no longer trust (or all of them) without knowing its layout.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from rig.card.snapshots import SnapshotStore, snapshot_settings
from rig.config import load_config
from rig.errors import EXIT_OK, ConfigError

JSON_VERSION = 1  # bumped only when a documented key changes meaning or goes away


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshots", help="the starting-state snapshots: list or remove them")
    ssub = p.add_subparsers(dest="snapshots_command", metavar="ACTION", required=True)
    ls = ssub.add_parser("list", help="every snapshot: what it starts from, its size, last use")
    ls.add_argument("--json", action="store_true", help="print the listing as JSON")
    ls.set_defaults(func=cmd_list)
    rm = ssub.add_parser("remove", help="remove snapshots by key (a unique prefix will do)")
    rm.add_argument("keys", nargs="*", metavar="KEY")
    rm.add_argument("--all", action="store_true", help="remove every snapshot")
    rm.set_defaults(func=cmd_remove)


def listing(store: SnapshotStore) -> dict[str, Any]:
    """The store as data, most recently used first (what `--json` prints)."""
    entries = []
    for used, size, key in reversed(store.usage()):
        meta = store.meta(key)
        inputs = meta.get("inputs", {})
        entries.append(
            {
                "key": key,
                "image": (inputs.get("image") or {}).get("name"),
                "model": inputs.get("model"),
                "card_bytes": inputs.get("card_bytes"),
                "product": inputs.get("product", {}),
                "mapped_bytes": meta.get("mapped_bytes"),
                "bytes_on_disk": size,
                "created": meta.get("created"),
                "last_used": used,
                "rig_version": (meta.get("rig") or {}).get("version"),
            }
        )
    return {
        "version": JSON_VERSION,
        "root": str(store.root),
        "limit_bytes": store.limit_bytes,
        "bytes": sum(e["bytes_on_disk"] for e in entries),
        "snapshots": entries,
    }


def _starts_from(e: dict[str, Any]) -> str:
    """The image and the product's own scalar inputs (its lists are in --json)."""
    scalars = [
        f"{k}={v}" for k, v in sorted(e["product"].items()) if not isinstance(v, list | dict)
    ]
    return " ".join([e["image"] or "?", *scalars])


def _when(ts: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _gb(n: int | None) -> str:
    return f"{n / 1e9:.2f} GB" if n else "-"


def cmd_list(args: argparse.Namespace) -> int:
    _, store = snapshot_settings(load_config(args.config))
    data = listing(store)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    table = Table(title=f"snapshots ({data['root']}, limit {_gb(data['limit_bytes'])})")
    for col in ("key", "starts from", "model", "card", "last used", "on disk"):
        table.add_column(col, no_wrap=col != "starts from")
    for e in data["snapshots"]:
        table.add_row(
            e["key"][:12],
            _starts_from(e),
            e["model"] or "-",
            _gb(e["card_bytes"]),
            _when(e["last_used"]),
            _gb(e["bytes_on_disk"]),
        )
    Console().print(table)
    print(f"{len(data['snapshots'])} snapshot(s), {_gb(data['bytes'])} on disk")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    _, store = snapshot_settings(load_config(args.config))
    if args.all == bool(args.keys):
        raise ConfigError(
            "name the snapshots to remove, or --all (not both)",
            where="rig snapshots remove",
            hint="rig snapshots list shows the keys",
        )
    known = store.keys()
    chosen = list(known) if args.all else []
    for prefix in args.keys:
        hits = [k for k in known if k.startswith(prefix.lower())]
        if len(hits) != 1:
            raise ConfigError(
                f"{prefix!r} matches {'no' if not hits else len(hits)} snapshots"
                + ("" if not hits else ": give more of the key"),
                where="rig snapshots remove",
                hint="rig snapshots list shows the keys",
            )
        chosen.append(hits[0])
    for key in chosen:  # all names checked first: a bad one removes nothing
        store.discard(key)
        print(f"removed {key[:12]}")
    print(f"{len(chosen)} snapshot(s) removed from {store.root}")
    return EXIT_OK
