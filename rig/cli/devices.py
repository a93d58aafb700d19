"""`rig devices [--json]` and `rig devices release NAME`: every device's state at a glance.

:func:`rig.orchestration.devices.devices_view` gathers each device's facts as
data (hardware: power, mux side, card, disk; state store: health, lease, last
result); the table and `--json` are two views of it, so a script reads exactly
what a person sees, and the daemon's dashboard shows the same data.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.config import load_config
from rig.errors import EXIT_OK, ConfigError
from rig.orchestration.devices import devices_view
from rig.root import Rig

JSON_VERSION = 1  # bumped only when a documented key changes meaning or goes away


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "devices",
        help="table of devices: power, mux side, card, disk, health, lease, last result",
    )
    d.add_argument(
        "action", nargs="?", choices=("release",), help="release: take a device out of quarantine"
    )
    d.add_argument("name", nargs="?", help="the device to release")
    d.add_argument(
        "--json", action="store_true", help="print the devices as JSON (keys: see the README)"
    )
    d.set_defaults(func=cmd_devices)


def _cells(s: dict[str, Any]) -> list[str]:
    def hw(key: str) -> str:
        if key in s["errors"]:
            return f"[red]error: {escape(s['errors'][key])}[/red]"
        return "-" if s[key] is None else escape(str(s[key]))

    power = hw("power") if s["power"] is not None or "power" in s["errors"] else "unknown"
    if s["health"] == "quarantined":
        health = f"[red]quarantined[/red]: {escape(s['quarantine_reason'])}"
    else:
        failures = s["infra_failures"]
        health = f"ok ({failures} recent error)" if failures else "ok"
    lease = s["lease"]
    last = s["last_result"]
    return [
        s["name"],
        power,
        hw("mux"),
        hw("card"),
        hw("disk"),
        health,
        f"{escape(lease['purpose'])} (pid {lease['pid']})" if lease else "free",
        f"{last['outcome']} {escape(last['scenario'])}" if last else "-",
    ]


def cmd_devices(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action == "release":
        from rig.orchestration.leases import Leases

        if not args.name:
            raise ConfigError("which device? `rig devices release NAME`", where="rig devices")
        config.device(args.name)
        leases = Leases(config.paths.state)
        try:
            leases.unquarantine(args.name)
        finally:
            leases.close()
        print(f"{args.name}: released from quarantine")
        return EXIT_OK
    statuses = devices_view(config, Rig.from_config(config))
    if args.json:
        data = {
            "version": JSON_VERSION,
            "config": config.where,
            "virtual": config.virtual,
            "devices": statuses,
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    table = Table(title=f"devices ({config.where})")
    for h in ("device", "power", "mux", "card", "disk", "health", "lease", "last result"):
        table.add_column(h)
    for s in statuses:
        table.add_row(*_cells(s))
    Console().print(table)
    return EXIT_OK
