"""`rig devices [--json]` and `rig devices release NAME`: every device's state at a glance.

One function gathers each device's facts as data (hardware: power, mux side,
card, disk; state store: health, lease, last result); the table and `--json`
are two views of it, so a script reads exactly what a person sees.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.config import RigConfig, load_config
from rig.errors import EXIT_OK, ConfigError, RigError
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


def _try(errors: dict[str, str], key: str, fn: Callable[[], Any]) -> Any:
    """A failing read becomes errors[key], never the end of the listing."""
    try:
        return fn()
    except RigError as e:
        errors[key] = e.message.strip()
        return None


def device_status(config: RigConfig, name: str) -> dict[str, Any]:
    """One device as data; a value that could not be read is null, `errors` says why."""
    dev = config.device(name)
    errors: dict[str, str] = {}
    status: dict[str, Any] = {"name": name, "model": dev.model, "power": None, "mux": None}
    power = _try(errors, "power", lambda: Rig.from_config(config).power(name))
    if power is not None:
        on = _try(errors, "power", power.state)
        status["power"] = None if on is None else "on" if on else "off"
    mux = _try(errors, "mux", lambda: Rig.from_config(config).mux(name))
    status["card"] = status["disk"] = None
    if mux is not None:
        status["mux"] = _try(errors, "mux", mux.state)
        if status["mux"] == "host":
            status["card"] = _try(errors, "card", mux.card_identity)
            finder = getattr(mux, "disks", None)
            disk = _try(errors, "disk", finder.find) if finder else None
            status["disk"] = str(disk) if disk else None
    status.update(_state_store(config, name))
    status["errors"] = errors
    return status


def _state_store(config: RigConfig, name: str) -> dict[str, Any]:
    """Health, lease and last result from the state store shared with `rig run`."""
    from rig.orchestration.leases import Leases

    leases = Leases(config.paths.state)
    try:
        row = leases.health(name)
        why = leases.quarantined(name)
        held = leases.holder_of(name)
    finally:
        leases.close()
    return {
        "health": "quarantined" if why else "ok",
        "quarantine_reason": why,
        "infra_failures": row["infra_failures"] if row else 0,
        "lease": {"purpose": held.purpose, "pid": held.pid, "host": held.host} if held else None,
        "last_result": (
            {"outcome": row["last_result"], "scenario": row["last_scenario"]}
            if row and row["last_result"]
            else None
        ),
    }


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
    statuses = [device_status(config, name) for name in config.devices]
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
