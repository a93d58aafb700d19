"""`rig twin up|down|status`: the virtual rig's supervisor (three virtual Pi 3s)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from rig.config import RigConfig, load_config
from rig.errors import EXIT_OK, ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("twin", help="start, stop or show the virtual rig (virtual Pis)")
    tsub = p.add_subparsers(dest="twin_command", metavar="ACTION")
    tsub.required = True
    tsub.add_parser("up", help="start the virtual rig in the background (idempotent)").set_defaults(
        func=cmd_up
    )
    tsub.add_parser(
        "down", help="power off every virtual Pi, stop the supervisor, detach loop devices"
    ).set_defaults(func=cmd_down)
    tsub.add_parser("status", help="table of the virtual Pis").set_defaults(func=cmd_status)


def _virtual_config(args: argparse.Namespace) -> RigConfig:
    config = load_config(args.config)
    if not config.virtual:
        raise ConfigError(
            "this config describes real hardware; the virtual rig runs only for a virtual config",
            where=config.where,
            hint="add a `virtual:` section, or run without a config",
        )
    return config


def cmd_up(args: argparse.Namespace) -> int:
    from rig.virtual.twin import ensure_twin, running_pid, twin_dir

    config = _virtual_config(args)
    ensure_twin(config)
    print(f"virtual rig running (pid {running_pid(config)}), log: {twin_dir(config) / 'twin.log'}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from rig.virtual.twin import stop_twin

    removed = stop_twin(_virtual_config(args))
    print("virtual rig stopped" + (f"; detached {', '.join(removed)}" if removed else ""))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from rig.virtual.twin import read_status, running_pid

    config = _virtual_config(args)
    pid = running_pid(config)
    status = read_status(config) if pid else None
    console = Console()
    if not status:
        console.print("virtual rig: not running (`rig twin up` starts it)")
        return EXIT_OK
    table = Table(title=f"virtual rig (supervisor pid {pid})")
    cols = ("device", "powered", "side", "state", "address", "OS", "Python", "OctoPrint", "pid")
    for col in cols:
        table.add_column(col)
    for d in status["devices"]:
        state = d["phase"] + (f" ({d['reason']})" if d.get("reason") else "")
        system, python = _read_over_ssh(config, d) if d.get("ssh") else ("-", "-")
        table.add_row(
            d["device"],
            "on" if d["powered"] else "off",
            d["side"],
            state,
            d["address"],
            system,
            python,
            d.get("octoprint_version") or "-",
            str(d.get("pid") or "-"),
        )
    console.print(table)
    return EXIT_OK


# what the device itself says it runs (the card may say anything)
_SYSTEM = (
    '. /etc/os-release && echo "$ID $VERSION_ID"; '
    "/usr/bin/python3 -c 'import platform; print(platform.python_version())'"
)


def _read_over_ssh(config: RigConfig, d: dict) -> tuple[str, str]:
    """(OS, Python) as the device answers over SSH as the configured user; "?" if it cannot."""
    from rig.device.ssh import SSHShell
    from rig.errors import RigError

    host, _, port = str(d["ssh"]).rpartition(":")
    password = config.user.password.reveal() if config.user.password else None
    shell = SSHShell(
        host,
        port=int(port),
        user=config.user.name,
        password=password,
        host_keys="ignore",  # a status look at a virtual device: no known_hosts entry
        name=d["device"],
    )
    try:
        shell.connect(timeout=5)
        out = shell.run(_SYSTEM, timeout=20, check=False, quiet=True).stdout.split("\n")
    except RigError:
        return "?", "?"
    finally:
        shell.close()
    return (out[0].strip() or "?"), (out[1].strip() if len(out) > 1 and out[1] else "?")
