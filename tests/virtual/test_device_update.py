"""The OctoPrint profile, unchanged, updates a virtual Pi through OctoPrint's own mechanism:
prepare over SSH, the software update plugin runs pip in the device's venv and restarts
OctoPrint through `sudo service octoprint restart` (the device's shim), verify."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from twin_support import (
    flash,
    image,
    image_octoprint,
    provision,
    wait_online,
    wait_phase,
    write_config,
)

from rig.events import StepLog
from rig.product.octoprint.feed import FeedServer, InjectedRelease
from rig.product.octoprint.profile import OctoPrintProfile
from rig.product.profile import DeviceAddress, ScenarioContext
from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import access_point

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "octopi-1.0.0"
TARGET = "1.11.8"


def test_profile_updates_the_virtual_pi_through_octoprint(tmp_path: Path) -> None:
    require_sandbox()
    config = write_config(tmp_path)
    card = tmp_path / "card.img"
    flash(image(IMAGE), card)
    provision(card, config, "pi3-b")
    spec = DeviceSpec.from_config(config.devices["pi3-b"])
    pi = VirtualPi(
        spec,
        card=lambda: card,
        state_dir=config.paths.state / "virtual",
        ap=access_point(config),
        settings=settings_from_config(config),
    )
    feed = FeedServer(InjectedRelease(TARGET, "stable")).start()
    pi.power_on()
    try:
        wait_phase(pi, ("up", "unreachable", "failed"))
        assert pi.phase == "up", pi.reason
        wait_online(spec.host, spec.http_port)
        ctx = ScenarioContext(
            device=DeviceAddress(
                "pi3-b",
                spec.host,
                ssh_port=spec.ssh_port,
                http_port=spec.http_port,
                user=config.user.name,
                password=config.user.password.reveal(),
                host_keys="ignore",
            ),
            scenario_id="virtual-update",
            channel="stable",
            target_version=TARGET,
            release_channel="stable",
            expect="updated",
            checks=(),
            update_mode="api",
            results=tmp_path / "results",
            log=StepLog(device="pi3-b", scenario="virtual-update"),
            start_version=image_octoprint(IMAGE),
            feed_url=feed.url,
        )
        profile = OctoPrintProfile()
        old_pid = None
        profile.prepare(ctx)
        assert ctx.facts["octoprint_version"] == image_octoprint(IMAGE)
        assert ctx.facts["octopi_version"] == "1.0.0"
        old_pid = pi.octoprint_pid()
        t0 = time.monotonic()
        profile.update(ctx)
        profile.verify(ctx)
        print(f"update through OctoPrint took {time.monotonic() - t0:.1f} s")
        assert ctx.facts["final_version"] == TARGET
        assert pi.installed_octoprint() == TARGET  # pip really changed the device's venv
        assert pi.octoprint_pid() not in (None, old_pid)  # and OctoPrint really restarted
    finally:
        pi.power_cut()
        feed.stop()
