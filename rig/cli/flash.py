"""`rig flash DEVICE IMAGE` and `rig flash --target PATH IMAGE`.

DEVICE is a device of rig.yaml: its mux switches the card to the host and hands
back the validated block device; nothing else is ever written. --target names a
file or block device outside the rig; mounted disks and the disk of the running
system are refused.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rig.card.writer import WriteResult, write_image
from rig.config import load_config
from rig.errors import EXIT_OK, ConfigError
from rig.events import Event, EventBus, StepLog
from rig.root import Rig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flash",
        help="write an image to a device's card (or --target PATH) and verify it",
        description="Write only the used blocks of IMAGE, partition table last, then read "
        "everything written back and compare. IMAGE is a path (.img/.zip/.xz/.gz/.zst) "
        "or a catalogue name.",
    )
    p.add_argument("args", nargs="+", metavar="[DEVICE] IMAGE")
    p.add_argument(
        "--target",
        metavar="PATH",
        help="write this existing file or whole-disk block device instead (never a partition)",
    )
    p.add_argument("--force", action="store_true", help="flash DEVICE even if a run leases it")
    p.add_argument(
        "--allow-fixed",
        action="store_true",
        help="with --target: accept a disk that does not report removable media",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the read-back verification")
    p.add_argument(
        "--rewrite-all",
        action="store_true",
        help="write every mapped chunk even where the card already holds it",
    )
    p.add_argument("--bmap", metavar="FILE", help="block map to use (default: IMAGE.bmap if any)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the card")
    p.set_defaults(func=cmd_flash)


@contextmanager
def progress_view(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar (rate, ETA) on a terminal, None (log lines) otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description:>7}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        tasks: dict[str, int] = {}
        global _print_above
        _print_above = bar.console.print  # log lines go above the bar, not through it

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        try:
            yield update
        finally:
            _print_above = None


_print_above: Callable[..., None] | None = None


def _log() -> StepLog:
    bus = EventBus()

    def show(e: Event) -> None:
        if e.kind == "log":
            if _print_above is not None:
                _print_above(f"rig: {e.message}", markup=False, highlight=False)
            else:
                print(f"rig: {e.message}", file=sys.stderr)

    bus.subscribe(show)
    return StepLog(bus)


def cmd_flash(args: argparse.Namespace) -> int:
    if args.target:
        if len(args.args) != 1:
            raise ConfigError("with --target, give only IMAGE", where="rig flash")
        device, image_arg = None, args.args[0]
    else:
        if len(args.args) != 2:
            raise ConfigError("give DEVICE IMAGE (or --target PATH IMAGE)", where="rig flash")
        device, image_arg = args.args
    config = load_config(args.config)
    log = _log()
    rig = Rig.from_config(config)
    with progress_view(sys.stderr.isatty()) as progress:
        image = rig.image(image_arg, log, progress)
        if device is None:
            result = write_image(
                image,
                Path(args.target),
                verify=not args.no_verify,
                log=log,
                progress=progress,
                state_dir=config.paths.state,
                bmap=Path(args.bmap) if args.bmap else None,
                unpack_dir=config.paths.images / "unpacked",
                skip_same=not args.rewrite_all,
                allow_fixed=args.allow_fixed,
                create=False,
            )
        else:
            from rig.orchestration.leases import manual_lease

            config.device(device)  # ConfigError for an unknown device, before its lease
            with manual_lease(config.paths.state, device, "rig flash", force=args.force):
                result = _flash_device(rig, device, image, args, log, progress)
    print(_summary(result))
    from rig.card.images import cache_for

    with cache_for(config).locked():  # unpacked copies count against the cache limit
        cache_for(config).evict()
    return EXIT_OK


def _flash_device(rig: Rig, device: str, image: Path, args, log: StepLog, progress) -> WriteResult:
    """Switch the device's card to the host via its mux, write exactly that disk, the way
    every run writes it (rig.root.Rig.write_card)."""
    from rig.hardware import sequences

    power, mux = rig.power(device), rig.mux(device)
    disk = sequences.to_host(power, mux, log)
    return rig.write_card(
        device,
        image,
        Path(disk),
        log,
        mux=mux,
        verify=not args.no_verify,
        progress=progress,
        bmap=Path(args.bmap) if args.bmap else None,
        skip_same=not args.rewrite_all,
    )


def _summary(r: WriteResult) -> str:
    mb = r.bytes_written / 1e6
    rate = mb / r.write_seconds if r.write_seconds else 0.0
    line = (
        f"{r.target}: wrote {mb:.1f} MB of {r.image_size / 1e6:.1f} MB "
        f"({r.origin} map, {r.ranges} ranges) in {r.write_seconds:.1f}s ({rate:.1f} MB/s)"
    )
    if r.bytes_unchanged:
        line += f", {r.bytes_unchanged / 1e6:.1f} MB already on the card"
    if r.verified:
        line += f", verified ({r.verify_seconds:.1f}s after the last write)"
    else:
        line += ", NOT verified"
    return line
