"""The `rig` command: one entry point, one module per command group.

Exit codes are decided here and only here, from the error families in
rig.errors: 0 passed, 1 product failure, 2 usage/config/matrix, 3 infrastructure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rig import __version__
from rig.errors import EXIT_INFRA, EXIT_OK, EXIT_USAGE, RigError

# command group -> module in rig.cli that registers it
COMMANDS = {
    "power": "rig.cli.hardware",  # also mux, doctor
    "devices": "rig.cli.devices",
    "flash": "rig.cli.flash",
    "images": "rig.cli.images",
    "snapshots": "rig.cli.snapshots",
    "matrix": "rig.cli.matrix",
    "e2e": "rig.cli.e2e",
    "serve": "rig.cli.serve",
    "run": "rig.cli.run",
    "up": "rig.cli.up",  # also down
    "twin": "rig.cli.twin",
    "provision": "rig.cli.provision",
    "host": "rig.cli.host",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors exit 2, as argparse does, but quieter
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"rig: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rig",
        description="Release-testing rig for Raspberry Pi images.",
    )
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="rig.yaml to use (default: $RIG_CONFIG, ./rig.yaml, ~/.config/rig/rig.yaml, "
        "else the built-in virtual rig)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except RigError as e:
        print(f"rig: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return EXIT_INFRA
    except BrokenPipeError:
        return EXIT_OK
