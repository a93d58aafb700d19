"""`rig host install`: make this machine a flash host (user, group, udev, sg, unit, config)."""

from __future__ import annotations

import argparse

from rig.errors import EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host", help="install the flash host's user, udev rules, unit and config")
    hs = p.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    inst = hs.add_parser(
        "install",
        help="idempotent; --dry-run prints every change; --root DIR installs into a directory",
        add_help=False,
    )
    inst.add_argument("rest", nargs=argparse.REMAINDER)
    inst.set_defaults(func=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    from rig.host.install import main

    return main(args.rest) or EXIT_OK
