"""`rig e2e URL`: the OctoPrint smoke suite against any OctoPrint, no rig needed."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from rig.errors import EXIT_OK, ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "e2e",
        help="run the browser smoke checks against an OctoPrint URL",
        description="Log in, check the version, print on the virtual printer, open "
        "settings; a screenshot and a Playwright trace per check in --results.",
    )
    p.add_argument("url", help="OctoPrint's base URL, e.g. http://octopi.local")
    p.add_argument("--user", default="admin", help="an admin user (default: admin)")
    p.add_argument(
        "--password",
        help="its password (default: $RIG_OCTOPRINT_PASSWORD, else asked for)",
    )
    p.add_argument("--expect-version", help="the OctoPrint version the UI must show")
    p.add_argument("--results", default="e2e-results", help="directory for evidence")
    p.add_argument("-k", dest="keyword", help="only checks matching this pytest expression")
    p.add_argument("--headed", action="store_true", help="show the browser")
    p.set_defaults(func=cmd_e2e)


def cmd_e2e(args: argparse.Namespace) -> int:
    from rig.product.octoprint.e2e import run_smoke

    if not args.url.startswith(("http://", "https://")):
        raise ConfigError(f"not an http(s) URL: {args.url}", where="URL")
    password = args.password or os.environ.get("RIG_OCTOPRINT_PASSWORD")
    if password is None:
        password = getpass.getpass(f"password for {args.user}: ")
    results = Path(args.results)
    run_smoke(
        args.url,
        user=args.user,
        password=password,
        results=results,
        expect_version=args.expect_version,
        log=print,
        headed=args.headed,
        keyword=args.keyword,
    )
    print(f"all smoke checks passed; evidence in {results}/")
    return EXIT_OK
