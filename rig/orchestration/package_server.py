"""The package cache served for the length of a run, beside the release feed."""

from __future__ import annotations

from typing import Any

from rig.asgi import BackgroundServer
from rig.config import RigConfig
from rig.orchestration.feed_server import reachable_address
from rig.packages.serve import DevicePackages, index_app
from rig.packages.settings import package_settings


def serve_for_run(config: RigConfig, first_device: str) -> tuple[Any, DevicePackages | None]:
    """The index served for the length of a run, bound and advertised as the release feed
    is (run.feed_bind / run.feed_host; loopback on the virtual rig), on
    run.package_index_port (default: any free port). (None, None) when turned off."""

    settings = package_settings(config)
    if settings is None:
        return None, None
    run = config.sections.get("run", {}) or {}
    if config.virtual:
        bind = advertise = "127.0.0.1"
    else:
        bind = run.get("feed_bind", "0.0.0.0")
        device = config.device(first_device)
        advertise = run.get("feed_host") or reachable_address(device.host or "")
    index = index_app(settings)
    server = BackgroundServer(index, bind, settings.port).start()
    return server, DevicePackages(f"http://{advertise}:{server.port}/simple/", index.store)
