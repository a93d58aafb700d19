"""`rig up` / `rig down DEVICE`: one device in a chosen starting state, left up for a person.

`rig up` runs a scenario's phases up to its starting state (write, provision,
boot, prepare: image, OctoPrint version, channel, the release offered by the
rig's feed), prints how to reach the device and holds its lease, the feed and
the device until `rig down DEVICE` (or Ctrl-C). Releasing restores the card's
user settings and powers the device off, like the end of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from rig.config import load_config
from rig.errors import EXIT_OK, ConfigError, InfraError, ValidationErrors
from rig.events import EventBus
from rig.orchestration.leases import Leases
from rig.orchestration.matrix import load_matrix
from rig.product import DEFAULT_PRODUCT, PROFILES, get_profile
from rig.product.profile import ScenarioContext

UP_PURPOSE = "rig up"
# where a problem of the one-scenario matrix made from the command line came from
FLAGS = {
    "scenarios[0].image": "--image",
    "scenarios[0].octoprint": "--octoprint",
    "scenarios[0].start": "--start",
    "release.product": "--product",
    "scenarios[0].channel": "--channel",
    "release.version": "--release",
    "release.channel": "--release-channel",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up",
        help="bring one device to a starting state and leave it up (until `rig down`)",
        description="Either a matrix scenario (FILE --scenario ID) or a state given here "
        "(--image, --start, --channel, --release).",
    )
    p.add_argument("file", nargs="?", help="a matrix (JSON); with --scenario")
    p.add_argument("--scenario", metavar="ID", help="the scenario whose starting state to reach")
    p.add_argument("--device", metavar="NAME", help="this device (default: any free one)")
    p.add_argument("--image", help="without a matrix: the image (a catalogue name)")
    p.add_argument(
        "--start",
        "--octoprint",
        dest="start",
        metavar="VERSION",
        help="without a matrix: the product version to pin (OctoPrint: --octoprint)",
    )
    p.add_argument(
        "--product", default=DEFAULT_PRODUCT, help="without a matrix: the release's product"
    )
    p.add_argument("--channel", default="stable", help="without a matrix: the device's channel")
    p.add_argument("--release", metavar="VERSION", help="without a matrix: the release offered")
    p.add_argument(
        "--release-channel",
        metavar="CHANNEL",
        help="where the release is published (default: --channel)",
    )
    p.add_argument(
        "--hours", type=float, default=8.0, help="release it by itself after this long (default 8)"
    )
    p.add_argument("--report-dir", type=Path, metavar="DIR", help="where to write the report")
    p.add_argument(
        "--no-snapshots",
        dest="snapshots",
        action="store_false",
        help="start from the pristine image: neither use nor keep starting-state snapshots",
    )
    p.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a busy device"
    )
    p.set_defaults(func=cmd_up)
    d = sub.add_parser("down", help="release a device `rig up` holds: restore its card, power off")
    d.add_argument("device")
    d.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
    d.set_defaults(func=cmd_down)


def _adhoc_matrix(args: argparse.Namespace, state: Path) -> Path:
    """The command line's starting state as a one-scenario matrix (validated like any other)."""
    missing = [
        flag for flag, value in (("--image", args.image), ("--release", args.release)) if not value
    ]
    if missing:
        raise ConfigError(
            f"without a matrix, rig up needs {' and '.join(missing)}",
            where="rig up",
            hint="rig up MATRIX --scenario ID, or rig up --image NAME --release VERSION "
            "[--start VERSION] [--channel CHANNEL]",
        )
    scenario = {"id": "up", "image": args.image, "channel": args.channel}
    if args.start:
        # the profile's own key for the start version (OctoPrint: "octoprint")
        key = getattr(PROFILES.get(args.product) and get_profile(args.product), "start_key", None)
        scenario[key or "start"] = args.start
    data = {
        "release": {
            "product": args.product,
            "version": args.release,
            "channel": args.release_channel or args.channel,
        },
        "scenarios": [scenario],
    }
    path = state / "up" / f"{args.device or 'any'}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def cmd_up(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rig.orchestration.interactive import DeviceAccess, describe
    from rig.orchestration.runner import Runner, RunOptions
    from rig.root import Rig

    if not args.hours > 0:
        raise ConfigError(f"--hours must be more than 0, not {args.hours:g}", where="rig up")
    config = load_config(args.config)
    if args.file:
        if not args.scenario:
            raise ConfigError("a matrix needs --scenario ID", where="rig up")
        matrix_path = Path(args.file)
        scenario = args.scenario
    else:
        if args.scenario:
            raise ConfigError("--scenario needs the matrix FILE", where="rig up")
        matrix_path = _adhoc_matrix(args, config.paths.state)
        scenario = "up"
    try:
        matrix = load_matrix(matrix_path)
    except ValidationErrors as e:
        if args.file:
            raise
        # the state came from the command line: name its flags, not the generated file
        raise ValidationErrors(
            "rig up", [(FLAGS.get(path, path), what) for path, what in e.problems]
        ) from None
    matrix.scenario(scenario)  # ConfigError naming the known ids
    options = RunOptions(
        scenario_ids=(scenario,),
        devices=(args.device,) if args.device else (),
        report_dir=args.report_dir,
        wait=args.wait,
        hold=True,
        snapshots=args.snapshots,
        hold_seconds=args.hours * 3600,
        command=shlex.join(["rig", *sys.argv[1:]]),
    )
    cancel = threading.Event()
    bus = EventBus()
    runner = Runner(config, matrix, options, rig=Rig.from_config(config), bus=bus, cancel=cancel)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    accesses: list[DeviceAccess] = []

    def held(ctx: ScenarioContext) -> None:
        access = DeviceAccess(ctx, runner.handover_bind())
        accesses.append(access)
        print(
            "\n"
            + describe(ctx, runner.credentials, access.url, show_secrets=sys.stdout.isatty())
            + f"\n  release    `rig down {ctx.device.name}` (or Ctrl-C here): the card's user "
            "settings are restored and the device is powered off\n",
            flush=True,
        )

    runner.on_held = held
    bus.subscribe(
        lambda ev: (
            ev.kind in ("phase-end", "result")
            and print(f"{time.strftime('%H:%M:%S')} {ev.device or '-'}: {ev.message}", flush=True)
        )
    )

    def stop(signum: int, frame: object) -> None:
        if runner.released.is_set() or not accesses:
            cancel.set()  # before the device is up, or a second signal: stop at once
        runner.released.set()

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        outcome = runner.run()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        for access in accesses:
            access.close()
    for s in outcome.report.scenarios:
        if s.outcome != "passed":
            console.print(f"{s.id}: {s.outcome}: {s.message}", highlight=False)
    console.print(f"report: {outcome.directory / 'report.html'}", highlight=False, soft_wrap=True)
    return outcome.exit_code


def cmd_down(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    config.device(args.device)  # ConfigError for an unknown name
    leases = Leases(config.paths.state)
    try:
        lease = leases.holder_of(args.device)
        if lease is None or not lease.purpose.startswith(UP_PURPOSE):
            held = f"held by {lease.purpose} (pid {lease.pid})" if lease else "free"
            raise ConfigError(
                f"{args.device} is not up: it is {held}",
                where="rig down",
                hint="rig down releases what `rig up` holds; stop a `rig run` with Ctrl-C",
            )
        if lease.host != socket.gethostname():
            raise ConfigError(
                f"{args.device} is held by rig up on {lease.host}",
                where="rig down",
                hint=f"run rig down on {lease.host}",
            )
        os.kill(lease.pid, signal.SIGTERM)
        print(f"{args.device}: restoring the card and powering off ...", flush=True)
        deadline = time.monotonic() + args.timeout
        while leases.holder_of(args.device) is not None:
            if time.monotonic() > deadline:
                raise InfraError(
                    f"rig up (pid {lease.pid}) still holds {args.device} after {args.timeout:.0f}s",
                    where="rig down",
                    hint=f"kill {lease.pid} to stop it at once",
                )
            time.sleep(0.5)
    finally:
        leases.close()
    print(f"{args.device} is down and free")
    return EXIT_OK
