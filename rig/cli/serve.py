"""`rig serve`: run the flash-host daemon (webhooks, queue, approvals, dashboard)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal

from rig.config import load_config
from rig.errors import EXIT_OK, InfraError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the flash-host daemon: webhooks in, tested images out")
    p.add_argument("--bind", help="address to listen on (default: daemon.bind or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: daemon.port or 8470)")
    p.add_argument(
        "--retry-delay",
        type=float,
        default=60.0,
        help="seconds before an infrastructure failure is retried (times the attempt)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rig.daemon.app import Daemon, create_app
    from rig.daemon.settings import load_settings

    config = load_config(args.config)
    settings = load_settings(config)
    bind = args.bind or settings.bind
    port = args.port if args.port is not None else settings.port
    public_url = (config.sections.get("daemon") or {}).get("public_url")
    settings = dataclasses.replace(
        settings,
        bind=bind,
        port=port,
        public_url=settings.public_url if public_url else f"http://{bind}:{port}",
    )
    if not args.verbose:  # a daemon says what it does; -v/-vv still go further
        logging.getLogger("rig").setLevel(logging.INFO)
    daemon = Daemon(settings, retry_delay=args.retry_delay)
    daemon.lock.acquire()  # fail now, with a clear message, if another daemon runs here
    daemon.lock.release()
    app = create_app(daemon)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=bind,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler that was there before: make that one a no-op so a clean stop exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    print(
        f"rig serve: listening on http://{bind}:{port} (public URL {settings.public_url})",
        flush=True,
    )
    server.run()
    if not server.started:
        raise InfraError(f"could not listen on {bind}:{port}", where="daemon.bind/port")
    logging.getLogger("rig.daemon").info("rig serve stopped")
    return EXIT_OK
