"""`rig power`, `rig mux`, `rig devices`, `rig doctor`: the hardware by hand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.config import RigConfig, load_config
from rig.errors import EXIT_INFRA, EXIT_OK, ConfigError, RigError
from rig.hardware.build import mux_for, power_for, usb_backend

# More columns for `rig devices` (health, last result, ...): (header, fn(config, name) -> text).
# Other layers append here; the hardware layer only knows power, mux, card and disk.
DEVICE_COLUMNS: list[tuple[str, Callable[[RigConfig, str], str]]] = []


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("power", help="switch or show a device's power")
    p.add_argument("device")
    p.add_argument("action", choices=("on", "off", "cycle", "status"))
    p.set_defaults(func=cmd_power)

    m = sub.add_parser("mux", help="move a device's card to the host or the DUT, or show where")
    m.add_argument("device")
    m.add_argument("action", choices=("host", "dut", "off", "status"))
    m.add_argument(
        "--disk-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the card's disk after `host` (default 30)",
    )
    m.set_defaults(func=cmd_mux)

    d = sub.add_parser(
        "devices",
        help="table of devices: power, mux side, card, disk, health, lease, last result",
    )
    d.add_argument(
        "action", nargs="?", choices=("release",), help="release: take a device out of quarantine"
    )
    d.add_argument("name", nargs="?", help="the device to release")
    d.set_defaults(func=cmd_devices)

    doc = sub.add_parser(
        "doctor", help="check hardware, permissions and udev rules; say how to fix"
    )
    doc.add_argument(
        "--power-test",
        metavar="DEVICE",
        help="switch DEVICE's power off and check that it really stops answering "
        "(the hub's status bit is no proof); it is switched on again afterwards",
    )
    doc.add_argument(
        "--power-test-timeout",
        type=float,
        default=30.0,
        help="seconds the DUT may take to stop answering (default 30)",
    )
    doc.set_defaults(func=cmd_doctor)


def _health_columns() -> None:
    """Health, lease and last result from the state store shared with `rig run`."""
    if any(h == "health" for h, _ in DEVICE_COLUMNS):
        return
    from rig.orchestration.leases import Leases

    def from_leases(read: Callable[[Leases, str], str]) -> Callable[[RigConfig, str], str]:
        def column(config: RigConfig, name: str) -> str:
            leases = Leases(config.paths.state)
            try:
                return read(leases, name)
            finally:
                leases.close()

        return column

    def health(leases: Leases, name: str) -> str:
        why = leases.quarantined(name)
        if why:
            return f"[red]quarantined[/red]: {escape(why)}"
        row = leases.health(name)
        failures = row["infra_failures"] if row else 0
        return f"ok ({failures} recent error)" if failures else "ok"

    def lease(leases: Leases, name: str) -> str:
        held = leases.holder_of(name)
        return f"{escape(held.purpose)} (pid {held.pid})" if held else "free"

    def last(leases: Leases, name: str) -> str:
        row = leases.health(name)
        return f"{row['last_result']} {row['last_scenario']}" if row else "-"

    DEVICE_COLUMNS.extend(
        [
            ("health", from_leases(health)),
            ("lease", from_leases(lease)),
            ("last result", from_leases(last)),
        ]
    )


def _shown(state: bool | None) -> str:
    return {True: "on", False: "off", None: "unknown"}[state]


def cmd_power(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    power = power_for(config, args.device)
    if args.action == "on":
        power.on()
    elif args.action == "off":
        power.off()
    elif args.action == "cycle":
        power.cycle()
    print(f"{args.device}: power {_shown(power.state())}")
    return EXIT_OK


def cmd_mux(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    mux = mux_for(config, args.device)
    if args.action in ("host", "dut", "off"):
        _warn_if_powered(config, args.device)
    if args.action == "host":
        mux.host()
        disk = mux.disk(args.disk_timeout)
        ident = mux.card_identity()
        print(f"{args.device}: card on host at {disk}" + (f" ({ident})" if ident else ""))
        return EXIT_OK
    if args.action == "dut":
        mux.dut()
    elif args.action == "off":
        mux.off()
    print(f"{args.device}: card on {mux.state()}")
    return EXIT_OK


def _warn_if_powered(config: RigConfig, device: str) -> None:
    """Moving the card of a running DUT is a power cut for its file system: say so."""
    try:
        powered = power_for(config, device).state()
    except RigError:
        return
    if powered:
        print(
            f"rig: warning: {device} is powered; its card changes side under a running system "
            f"(`rig power {device} off` first)",
            file=sys.stderr,
        )


def _cell(fn: Callable[[], Any]) -> str:
    try:
        value = fn()
    except RigError as e:
        return f"[red]error: {escape(e.message)}[/red]"
    return "-" if value is None else str(value)


def device_row(config: RigConfig, name: str) -> dict[str, str]:
    """One device's hardware facts; errors become the cell's text, never abort the table."""
    row = {"device": name}
    try:
        power = power_for(config, name)
        row["power"] = _cell(lambda: _shown(power.state()))
    except RigError as e:
        row["power"] = f"[red]error: {escape(e.message)}[/red]"
    try:
        mux = mux_for(config, name)
        side = _cell(mux.state)
        row["mux"] = side
        row["card"] = _cell(mux.card_identity) if side == "host" else "-"
        finder = getattr(mux, "disks", None)
        row["disk"] = _cell(finder.find) if side == "host" and finder else "-"
    except RigError as e:
        row["mux"] = f"[red]error: {escape(e.message)}[/red]"
        row["card"] = row["disk"] = "-"
    for header, fn in DEVICE_COLUMNS:
        row[header] = _cell(lambda fn=fn: fn(config, name))
    return row


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
    _health_columns()
    headers = ["device", "power", "mux", "card", "disk", *(h for h, _ in DEVICE_COLUMNS)]
    table = Table(title=f"devices ({config.where})")
    for h in headers:
        table.add_column(h)
    for name in config.devices:
        row = device_row(config, name)
        table.add_row(*(row.get(h, "") for h in headers))
    Console().print(table)
    return EXIT_OK


def _power_test(config: RigConfig, name: str, timeout: float) -> Any:
    from rig.hardware import inventory
    from rig.hardware.powertest import power_test, tcp_probe

    dev = config.device(name)
    if not dev.host:
        raise ConfigError(
            f"device {name} has no host: the power test watches it stop answering there",
            where=f"{config.where}: devices.{name}.host",
        )
    power = power_for(config, name)
    switch = f"{dev.power.driver} {dev.power.location or dev.power.serial or ''}".strip()
    if dev.power.port is not None:
        switch += f" port {dev.power.port}"
    paired = getattr(power, "paired", "")
    result = power_test(
        power,
        tcp_probe(dev.host, dev.ssh_port),
        what=f"{name} ({dev.host}:{dev.ssh_port})",
        switch=switch,
        timeout=timeout,
    )
    paired = getattr(power, "paired", "") or paired
    detail = result.detail + (f"; switched with {paired}" if paired else "")
    return inventory.Finding("device", f"{name} power", detail, result.ok, result.fix)


def cmd_doctor(args: argparse.Namespace) -> int:
    from rig.hardware import inventory

    config = load_config(args.config)
    console = Console(highlight=False, soft_wrap=True)
    findings: list[inventory.Finding] = []
    if config.virtual:
        console.print(f"virtual rig ({config.where}); state in {config.paths.state / 'virtual'}")
        findings += inventory.check_virtual_system()
    findings += inventory.scan_usb(usb_backend(config))
    if not config.virtual:
        findings += inventory.scan_sdmuxes()
    findings += inventory.check_devices(config)
    if getattr(args, "power_test", None):
        findings.append(_power_test(config, args.power_test, args.power_test_timeout))

    required_failed = False
    for f in findings:
        # an unusable hub nobody configured is information, not a failure
        # (a missing module matters through the devices that need it, listed below)
        informational = not f.ok and f.kind in ("hub", "module")
        mark = (
            "[green]ok[/green]  "
            if f.ok
            else "[yellow]no[/yellow]  "
            if informational
            else "[red]FAIL[/red]"
        )
        console.print(f"{mark} {f.kind:<10} {escape(f.name):<14} {escape(f.detail)}")
        if f.fix:
            console.print(f"       fix: {f.fix}", markup=False)
        if not f.ok and f.kind in ("device", "system", "usb-sd-mux", "usb"):
            required_failed = True
    if required_failed:
        console.print("[red]the configured rig is not usable yet[/red]")
        return EXIT_INFRA
    console.print("[green]the configured rig is usable[/green]")
    return EXIT_OK
