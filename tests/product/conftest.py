"""Fixtures for the OctoPrint profile tests: real OctoPrint devices and the release feed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from localoctopi import LocalOctoPi

from rig.events import EventBus, StepLog
from rig.product.octoprint.feed import FeedServer, InjectedRelease
from rig.product.octoprint.overlay import check_overlay
from rig.product.octoprint.profile import OctoPrintProfile
from rig.product.profile import DeviceAddress, ScenarioContext

TARGET = "1.11.8"  # the current release: what the old versions update to
OLD = "1.10.3"  # one from the 1.9/1.10 line
# the shape of plugins.octoprint.org's update_check_overlay.json (the tests are offline)
OVERLAY = Path(__file__).parent / "fixtures" / "update_check_overlay.json"


class Rig:
    """A device, the feed, the profile and a scenario context factory, as the runner has."""

    def __init__(self, device: LocalOctoPi, feed: FeedServer, results: Path) -> None:
        self.device = device
        self.feed = feed
        self.results = results
        self.lines: list[str] = []
        bus = EventBus()
        bus.subscribe(lambda e: self.lines.append(e.message))
        self.log = StepLog(bus, device="local", scenario="test")
        self.profile = OctoPrintProfile(shell_factory=lambda ctx: device.shell(self.log))

    def inject(self, version: str, channel: str) -> None:
        self.feed.app.state.release = InjectedRelease(version, channel)

    def ctx(self, **kw) -> ScenarioContext:
        values = {
            "device": DeviceAddress("local", "127.0.0.1", http_port=self.device.port),
            "scenario_id": kw.pop("scenario_id", "s1"),
            "channel": "stable",
            "target_version": TARGET,
            "release_channel": "stable",
            "expect": "updated",
            "checks": (),
            "update_mode": "api",
            "results": self.results,
            "log": self.log,
            "start_version": self.device.version,
            "feed_url": self.feed.url,
        }
        values.update(kw)
        return ScenarioContext(**values)


def _rig(tmp_path_factory: pytest.TempPathFactory, version: str, name: str) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp(name)
    device = LocalOctoPi(root, version)
    overlay = check_overlay(f"file://{OVERLAY}", cache=root / "overlay-cache.json")
    feed = FeedServer(InjectedRelease(TARGET, "stable"), overlay=overlay).start()
    device.boot()
    try:
        yield Rig(device, feed, root / "results")
    finally:
        device.shutdown()
        feed.stop()


@pytest.fixture(scope="module")
def old_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from _rig(tmp_path_factory, OLD, "old")


@pytest.fixture(scope="module")
def current_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from _rig(tmp_path_factory, TARGET, "current")


@pytest.fixture(scope="module")
def browser_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from _rig(tmp_path_factory, OLD, "browser")


@pytest.fixture(scope="module")
def v2_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from _rig(tmp_path_factory, "2.0.0rc3", "v2")


@pytest.fixture(scope="module")
def plugin_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The current release, for updates of its bundled plugins."""
    yield from _rig(tmp_path_factory, TARGET, "plugins")
