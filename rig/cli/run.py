"""`rig run FILE [--scenario ID]... [--device NAME]... [--interactive]`."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rig.config import load_config
from rig.events import EventBus
from rig.orchestration.live import LiveView
from rig.orchestration.matrix import load_matrix
from rig.orchestration.runner import Credentials, Runner, RunOptions
from rig.root import Rig

COLOURS = {"passed": "green", "failed": "red", "error": "yellow", "interrupted": "magenta"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a test matrix (all scenarios, in parallel)")
    p.add_argument("file", help="the matrix (JSON)")
    p.add_argument("--scenario", action="append", default=[], metavar="ID", help="only these")
    p.add_argument("--device", action="append", default=[], metavar="NAME", help="only these")
    p.add_argument(
        "--interactive",
        action="store_true",
        help="stop before the update and hand each device to you (URL, logins; a visible "
        "browser where there is a display)",
    )
    p.add_argument(
        "--candidate", type=Path, metavar="IMAGE", help="the image for @candidate scenarios"
    )
    p.add_argument("--report-dir", type=Path, metavar="DIR", help="where to write the report")
    p.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="start from the pristine image: neither use nor keep starting-state snapshots",
    )
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for busy devices"
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="bring each scenario's device to its starting state (write, boot, prepare), "
        "then power it off: no update (the daemon's warm-up)",
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    matrix = load_matrix(args.file)
    options = RunOptions(
        scenario_ids=tuple(args.scenario),
        devices=tuple(args.device),
        candidate=args.candidate,
        report_dir=args.report_dir,
        interactive=args.interactive,
        snapshots=args.snapshots,
        wait=args.wait,
        prepare_only=args.prepare_only,
        command=shlex.join(["rig", *sys.argv[1:]]),
        # set by GitHub Actions for each step: the run's summary shows on the job's page
        step_summary=Path(os.environ["GITHUB_STEP_SUMMARY"])
        if os.environ.get("GITHUB_STEP_SUMMARY")
        else None,
    )
    cancel = threading.Event()
    bus = EventBus()
    runner = Runner(config, matrix, options, rig=Rig.from_config(config), bus=bus, cancel=cancel)
    console = Console() if sys.stdout.isatty() else Console(width=200)

    def stop(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        console.print(
            "[bold]stopping: powering devices off, writing a partial report[/] (again to force)"
        )
        cancel.set()

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        devices = list(options.devices) or list(config.devices)
        with LiveView(devices, console) as view:
            bus.subscribe(view.on_event)
            outcome = runner.run()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if runner.summary_error:
            print(f"rig: warning: {runner.summary_error}", file=sys.stderr)
    report = outcome.report
    table = Table(title=f"release {matrix.release.version}: {report.outcome}", title_justify="left")
    for col in ("scenario", "outcome", "device", "time", "message"):
        table.add_column(col, overflow="fold")
    for s in report.scenarios:
        colour = COLOURS.get(s.outcome, "white")
        mark = " [yellow]NOT REPRESENTATIVE[/]" if s.representative else ""
        message = (f"{s.representative}; " if s.representative else "") + s.message[:160]
        table.add_row(
            s.id, f"[{colour}]{s.outcome}[/]{mark}", s.device, f"{s.duration:.0f}s", message
        )
    console.print(table)
    console.print(f"report: {outcome.directory / 'report.html'}", highlight=False, soft_wrap=True)
    used = sorted({s.device for s in report.scenarios if s.device not in ("", "-")})
    product = getattr(matrix.profile, "title", matrix.release.product)
    show_credentials(console, runner.credentials, used, product)
    return outcome.exit_code


def show_credentials(
    console: Console, creds: Credentials, devices: list[str], product: str = "OctoPrint"
) -> None:
    """The cards' admin password, for the person who ran it: on their terminal only.

    Never in the report, the logs or the daemon's captured output (not a terminal)."""
    if not devices or not creds.admin_generated:
        return
    if not sys.stdout.isatty():
        console.print(
            f"the cards' {product} admin {creds.admin_user!r} has a password generated for this "
            "run, shown only on a terminal; set admin.password in rig.yaml to choose one",
            highlight=False,
        )
        return
    console.print(
        ("the card of " if len(devices) == 1 else "the cards of ")
        + " and ".join(devices)
        + (" keeps" if len(devices) == 1 else " keep")
        + f" {product} admin [bold]{creds.admin_user}[/] "
        f"with this run's password [bold]{creds.admin_password}[/] (shown only here)",
        highlight=False,
    )
