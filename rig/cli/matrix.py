"""`rig matrix validate|show FILE`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from rig.card.catalog import load_catalog
from rig.config import load_config
from rig.errors import EXIT_OK
from rig.orchestration.matrix import Matrix, load_matrix, schema_for
from rig.product import DEFAULT_PRODUCT, PROFILES, get_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrix", help="validate or show a test matrix")
    msub = p.add_subparsers(dest="matrix_command", metavar="ACTION", required=True)
    v = msub.add_parser("validate", help="exit 0, or 2 with every error located")
    v.add_argument("file")
    v.set_defaults(func=cmd_validate)
    s = msub.add_parser("show", help="the scenario table and each scenario's command line")
    s.add_argument("file")
    s.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    s.set_defaults(func=cmd_show)
    j = msub.add_parser(
        "schema", help="the JSON Schema of a product's matrices (for editors: matrix/schema.json)"
    )
    j.add_argument("--product", default=DEFAULT_PRODUCT, choices=sorted(PROFILES))
    j.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    json.dump(schema_for(get_profile(args.product)), sys.stdout, indent=2)
    print()
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.file)
    print(f"{args.file}: ok ({len(matrix.scenarios)} scenarios, release {matrix.release.version})")
    return EXIT_OK


def _rows(matrix: Matrix, virtual: bool) -> list[dict[str, str]]:
    catalog = load_catalog()
    rows = []
    for s in matrix.scenarios:
        start = matrix.start_version(s, catalog, virtual)
        rows.append(
            {
                "id": s.id,
                "device": s.device or f"any {s.model}",
                "image": s.image,
                "start": (start or "?") + ("" if s.start else " (image)"),
                "channel": s.channel,
                "update": s.update_mode,
                "checks": ", ".join([*s.checks, *(p.name for p in s.user_checks)]),
                "expect": s.expect,
                "command": matrix.command_line(s),
                "up": matrix.up_command_line(s),
            }
        )
    return rows


HEADERS = ("id", "device", "image", "start", "channel", "update", "checks", "expect")


def cmd_show(args: argparse.Namespace) -> int:
    matrix = load_matrix(args.file)
    config = load_config(args.config)
    rows = _rows(matrix, config.virtual)
    rel = matrix.release
    pip = rel.options.get("pip")
    title = f"release {rel.version} on {rel.channel}" + (f" from {pip}" if pip else "")
    if args.format == "json":
        json.dump({"release": vars(rel), "scenarios": rows}, sys.stdout, indent=2)
        print()
    elif args.format == "markdown":
        print(f"**{matrix.path}**: {title}\n")
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for r in rows:
            print("| " + " | ".join(r[h] for h in HEADERS) + " |")
        print()
        for r in rows:
            print(f"- [ ] `{r['command']}` (by hand: `{r['up']}`)")
    else:
        console = Console() if sys.stdout.isatty() else Console(width=250)
        table = Table(title=f"{matrix.path}: {title}", title_justify="left")
        for h in HEADERS:
            table.add_column(h, overflow="fold")
        for r in rows:
            table.add_row(*(r[h] for h in HEADERS))
        console.print(table)
        console.print(
            "\nRun one scenario alone, or bring a device to its starting state and leave it up:"
        )
        for r in rows:
            console.print(f"  {r['command']}", highlight=False, soft_wrap=True)
            console.print(f"  {r['up']}", highlight=False, soft_wrap=True)
    return EXIT_OK
