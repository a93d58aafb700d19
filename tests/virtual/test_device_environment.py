"""What a real Pi 3's environment does to a scenario, on a virtual Pi running the real OctoPrint:
a slow start interrupted by prepare's stop (safe mode next time), and an under-voltage
that OctoPrint's own Pi support sees and its update plugin refuses on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from twin_support import flash, image, provision, wait_online, wait_phase, write_config

from rig.errors import InfraError
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
DEVICE = "pi3-c"


class Booted:
    def __init__(self, pi: VirtualPi, spec: DeviceSpec, config, feed: FeedServer, tmp: Path):
        self.pi, self.spec, self.config, self.feed, self.tmp = pi, spec, config, feed, tmp

    def ctx(self, **kw) -> ScenarioContext:
        values = {
            "device": DeviceAddress(
                DEVICE,
                self.spec.host,
                ssh_port=self.spec.ssh_port,
                http_port=self.spec.http_port,
                user=self.config.user.name,
                password=self.config.user.password.reveal(),
                host_keys="ignore",
            ),
            "scenario_id": "environment",
            "channel": "stable",
            "target_version": TARGET,
            "release_channel": "stable",
            "expect": "updated",
            "checks": (),
            "update_mode": "api",
            "results": self.tmp / "results",
            "log": StepLog(device=DEVICE, scenario="environment"),
            "feed_url": self.feed.url,
        }
        values.update(kw)
        return ScenarioContext(**values)


@contextlib.contextmanager
def _booted(tmp_path: Path, faults: dict) -> Iterator[Booted]:
    require_sandbox()
    config = write_config(tmp_path, {"faults": {DEVICE: faults}})
    card = tmp_path / "card.img"
    flash(image(IMAGE), card)
    provision(card, config, DEVICE)
    spec = DeviceSpec.from_config(config.devices[DEVICE])
    settings = settings_from_config(config)
    pi = VirtualPi(
        spec,
        card=lambda: card,
        state_dir=config.paths.state / "virtual",
        ap=access_point(config),
        settings=settings,
        faults=settings.faults_for(DEVICE),
    )
    feed = FeedServer(InjectedRelease(TARGET, "stable")).start()
    pi.power_on()
    try:
        wait_phase(pi, ("up", "unreachable", "failed"))
        assert pi.phase == "up", pi.reason
        wait_online(spec.host, spec.http_port)
        yield Booted(pi, spec, config, feed, tmp_path)
    finally:
        pi.power_cut()
        feed.stop()


def test_a_stop_during_a_slow_start_does_not_put_the_next_start_in_safe_mode(
    tmp_path: Path,
) -> None:
    with _booted(tmp_path, {"slow_start": 120}) as dev:
        flag = dev.pi.host_path(dev.pi.basedir) / ".incomplete_startup"
        # the server answers, its start-up plugins still run: the real OctoPrint's flag is there
        assert flag.exists()
        ctx = dev.ctx()
        OctoPrintProfile().prepare(ctx)  # stops OctoPrint inside that window, starts it again
        assert ctx.facts["octoprint_version"]


def _pi_support(dev: Booted, ctx: ScenarioContext) -> dict:
    profile = OctoPrintProfile()
    api = profile.api(ctx)
    try:
        api.login()
        return api.get_json("/api/plugin/pi_support")
    finally:
        api.close()


def test_undervoltage_is_seen_by_pi_support_and_the_refused_update_is_infrastructure(
    tmp_path: Path,
) -> None:
    with _booted(tmp_path, {"undervoltage": True}) as dev:
        ctx = dev.ctx()
        profile = OctoPrintProfile()
        profile.prepare(ctx)
        # the real Pi support plugin loaded (device-tree model) and read the flags (vcgencmd)
        state = _pi_support(dev, ctx)
        assert state["model"] == "Raspberry Pi 3 Model B Rev 1.2"
        assert state["throttle_state"]["current_undervoltage"] is True
        with pytest.raises(InfraError, match="System is currently throttled") as err:
            profile.update(ctx)
        assert "under-voltage" in (err.value.hint or "")
        assert ctx.facts["throttle_before_update"]["current_undervoltage"] is True
        assert ctx.facts["throttle_after_update"]["current_undervoltage"] is True
        profile.collect(ctx)
        facts = (ctx.results / "facts.json").read_text()
        assert "throttle_before_update" in facts
        # a scenario that expects exactly this: not reached because the device is throttled
        throttled = {"because": "throttle"}
        expected = dev.ctx(expect="not-offered", options=throttled, scenario_id="throttled")
        profile.update(expected)
        assert expected.facts["not_offered_because"] == "throttle"
        assert "System is currently throttled" in expected.facts["refused"]


def test_without_the_fault_pi_support_reports_an_unthrottled_pi(tmp_path: Path) -> None:
    with _booted(tmp_path, {}) as dev:
        ctx = dev.ctx()
        OctoPrintProfile().prepare(ctx)
        state = _pi_support(dev, ctx)
        assert state["model"] == "Raspberry Pi 3 Model B Rev 1.2"
        assert state["throttle_state"]["current_issue"] is False
        assert state["throttle_state"]["raw_value"] == 0
        with pytest.raises(InfraError, match="expects a throttled device"):
            OctoPrintProfile().update(
                dev.ctx(expect="not-offered", options={"because": "throttle"})
            )
        OctoPrintProfile().update(ctx)
        assert ctx.facts["throttle_before_update"]["raw_value"] == 0
        assert ctx.facts["throttle_after_update"]["raw_value"] == 0


def test_prepare_waits_out_a_first_boot_that_reboots_after_sshd_is_up(tmp_path: Path) -> None:
    # long enough for the fixture to see OctoPrint answer on the first boot
    with _booted(tmp_path, {"reboot_after_up": 20}) as dev:
        assert dev.pi.boots == 1
        ctx = dev.ctx()
        OctoPrintProfile().prepare(ctx)  # begins on the boot that is about to reboot
        assert dev.pi.boots == 2  # and prepared the boot after it
        assert ctx.facts["system_state"] == "running"
        assert ctx.facts["octoprint_version"]
