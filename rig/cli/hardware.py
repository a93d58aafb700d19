"""`rig power`, `rig mux`, `rig doctor`: the hardware by hand (`rig devices`: devices.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from rig.config import RigConfig, load_config
from rig.errors import EXIT_INFRA, EXIT_OK, ConfigError, RigError
from rig.root import Rig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("power", help="switch or show a device's power")
    p.add_argument("device")
    p.add_argument("action", choices=("on", "off", "cycle", "status"))
    p.add_argument("--force", action="store_true", help="act even if a run leases the device")
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
    m.add_argument("--force", action="store_true", help="act even if a run leases the device")
    m.set_defaults(func=cmd_mux)

    doc = sub.add_parser(
        "doctor", help="check hardware, permissions and udev rules; say how to fix"
    )
    doc.add_argument(
        "--host",
        action="store_true",
        help="also check the flash-host install (automatic once it is installed)",
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
    doc.add_argument(
        "--root",
        metavar="DIR",
        help="check the flash-host install below DIR (a throwaway root) instead of /",
    )
    doc.set_defaults(func=cmd_doctor)


def _shown(state: bool | None) -> str:
    return {True: "on", False: "off", None: "unknown"}[state]


def _leased(config: RigConfig, args: argparse.Namespace, what: str):  # type: ignore[no-untyped-def]
    """Hold the device's lease while a manual command changes it (a run never shares it)."""
    from rig.orchestration.leases import manual_lease

    config.device(args.device)  # ConfigError for an unknown name first
    return manual_lease(config.paths.state, args.device, what, force=args.force)


def cmd_power(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action == "status":
        return _power(config, args)
    with _leased(config, args, f"rig power {args.action}"):
        return _power(config, args)


def _power(config: RigConfig, args: argparse.Namespace) -> int:
    power = Rig.from_config(config).power(args.device)
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
    if args.action == "status":
        return _mux(config, args)
    with _leased(config, args, f"rig mux {args.action}"):
        return _mux(config, args)


def _mux(config: RigConfig, args: argparse.Namespace) -> int:
    mux = Rig.from_config(config).mux(args.device)
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
        powered = Rig.from_config(config).power(device).state()
    except RigError:
        return
    if powered:
        print(
            f"rig: warning: {device} is powered; its card changes side under a running system "
            f"(`rig power {device} off` first)",
            file=sys.stderr,
        )


def _power_test(config: RigConfig, name: str, timeout: float) -> Any:
    from rig.hardware import inventory
    from rig.hardware.powertest import power_test, tcp_probe

    dev = config.device(name)
    if not dev.host:
        raise ConfigError(
            f"device {name} has no host: the power test watches it stop answering there",
            where=f"{config.where}: devices.{name}.host",
        )
    power = Rig.from_config(config).power(name)
    switch = f"{dev.power.driver} {dev.power.unit or ''}".strip()
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
    from rig.host import checks as host_checks

    console = Console(highlight=False, soft_wrap=True)
    findings: list[inventory.Finding] = software_findings()
    if args.root:
        # a throwaway root: only what the installer put there
        return _report(console, findings + host_checks.check_host(Path(args.root).resolve()))
    config = load_config(args.config)
    if args.host or not config.virtual or host_checks.installed():
        findings += host_checks.check_host()
    rig = Rig.from_config(config)
    if rig.virtual:
        console.print(f"virtual rig ({config.where}); state in {config.paths.state / 'virtual'}")
    findings += rig.system_checks()
    findings += inventory.scan_usb(rig.usb())
    if not rig.virtual:
        findings += inventory.scan_sdmuxes()
    findings += inventory.check_devices(config.devices, rig.power, rig.mux)
    if getattr(args, "power_test", None):
        findings.append(_power_test(config, args.power_test, args.power_test_timeout))
    return _report(console, findings)


def software_findings() -> list[Any]:
    """What the rig itself needs at run time, installed from a wheel or a checkout."""
    import importlib.util

    from rig.card.catalog import load_catalog
    from rig.hardware.inventory import Finding

    out = []
    try:
        catalog = load_catalog()
        out.append(Finding("system", "catalogue", f"{len(catalog.images)} images", True))
    except RigError as e:
        out.append(Finding("system", "catalogue", e.message, False, "reinstall the rig"))
    for module, why in (("pytest", "browser checks"), ("playwright", "browser")):
        found = importlib.util.find_spec(module) is not None
        out.append(
            Finding(
                "system",
                module,
                f"installed ({why})" if found else f"missing: the {why} cannot run",
                found,
                "" if found else "reinstall the rig: it is a runtime dependency",
            )
        )
    return out


def _report(console: Console, findings: list[Any]) -> int:
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
        if not f.ok and f.kind in ("device", "system", "usb-sd-mux", "usb", "host"):
            required_failed = True
    if required_failed:
        console.print("[red]the configured rig is not usable yet[/red]")
        return EXIT_INFRA
    console.print("[green]the configured rig is usable[/green]")
    return EXIT_OK
