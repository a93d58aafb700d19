"""`rig provision DEVICE` and `rig provision --image FILE`.

DEVICE: the card of a configured device, which must already be switched to
the host (`rig mux DEVICE host`); its mux names the block device, nothing else
is written. --image: an image file, for people preparing cards by hand.
Options override rig.yaml; --dry-run shows every file that would be written,
with secrets masked, and touches nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from rig.card.provision import SCHEMES
from rig.config import RigConfig, load_config
from rig.errors import EXIT_OK, ConfigError
from rig.root import Rig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provision",
        help="write Wi-Fi, user, SSH and hostname onto a card's boot partition",
        description="Edit the FAT boot partition in place (no mounting) so the device "
        "joins Wi-Fi, creates the user, enables SSH and sets its hostname on first boot. "
        "The scheme is detected from the card unless given.",
    )
    p.add_argument("device", nargs="?", metavar="DEVICE", help="a device of rig.yaml")
    p.add_argument(
        "--image",
        metavar="FILE",
        help="provision this image file (or a card reader's whole-disk device) instead",
    )
    p.add_argument("--force", action="store_true", help="provision DEVICE even if a run leases it")
    p.add_argument(
        "--allow-fixed",
        action="store_true",
        help="with --image DEVICE: accept a disk that does not report removable media",
    )
    p.add_argument("--scheme", choices=sorted(SCHEMES), help="override the detected scheme")
    p.add_argument("--hostname", help="default: provision.hostname, else the device name")
    p.add_argument("--ssid", help="Wi-Fi network (default: wifi.ssid)")
    p.add_argument("--country", help="two-letter Wi-Fi country (default: wifi.country)")
    p.add_argument("--user", help="first user's name (default: user.name)")
    p.add_argument("--dry-run", action="store_true", help="show what would be written")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the card")
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    if bool(args.device) == bool(args.image):
        raise ConfigError("give DEVICE or --image FILE (one of them)", where="rig provision")
    config = load_config(args.config)
    with contextlib.ExitStack() as stack:
        if args.image:
            # a block device gets the writer's checks on the opened descriptor (never the
            # flash host's own disk, a partition, a mounted or held disk); then only that
            # inode is provisioned, through /proc/self/fd, whatever the path points to later
            from rig.card.target import open_checked

            opened = open_checked(Path(args.image), allow_fixed=args.allow_fixed)
            stack.callback(opened.close)
            target = opened.via if opened.is_block else Path(args.image)
            device = None
        else:
            from rig.orchestration.leases import manual_lease

            device = args.device
            config.device(device)  # ConfigError for an unknown device, before its lease
            stack.enter_context(
                manual_lease(config.paths.state, device, "rig provision", force=args.force)
            )
            target = card_of(config, device, args.timeout)
        # the same provisioning every run does (rig.root.Rig.provision_card)
        result = Rig.from_config(config).provision_card(
            device,
            target,
            _stderr,
            hostname=args.hostname,
            ssid=args.ssid,
            country=args.country,
            user=args.user,
            scheme=args.scheme,
            dry_run=args.dry_run,
        )
    if args.image:  # name the card as the person did, not by its descriptor
        result = dataclasses.replace(result, target=Path(args.image))
    print(result.describe(contents=args.dry_run))
    return EXIT_OK


def _stderr(message: str) -> None:
    if message.startswith("warning:"):
        print(f"rig: {message}", file=sys.stderr)


def card_of(config: RigConfig, device: str, timeout: float) -> Path:
    """The block device of `device`'s card, which must be switched to the host."""
    config.device(device)  # ConfigError for an unknown device, before touching hardware
    mux = Rig.from_config(config).mux(device)
    state = mux.state()
    if state != "host":
        raise ConfigError(
            f"the card of {device} is switched to {state!r}, not to the host",
            where=f"device {device}",
            hint=f"power the device off and run: rig mux {device} host",
        )
    return Path(mux.disk(timeout))
