"""The small interface between the scenario pipeline and a product.

Only a profile knows what OctoPrint (or MainsailOS, Home Assistant...) is; the
pipeline hands it a ScenarioContext of plain facts and calls the five steps.
Profiles raise ProductError for a misbehaving product and InfraError when the
device or network failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rig.events import StepLog


@dataclass
class DeviceAddress:
    name: str
    host: str
    ssh_port: int = 22
    http_port: int = 80
    user: str = "pi"
    password: str = ""
    host_keys: str = "accept-new"  # accept-new | strict | ignore
    ssh_key: str | None = None  # private key file; else the password

    @property
    def base_url(self) -> str:
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{self.host}{port}"


@dataclass
class ScenarioContext:
    device: DeviceAddress
    scenario_id: str
    channel: str  # stable | maintenance | devel | next
    target_version: str  # the release under test
    release_channel: str  # the channel the release is published on
    expect: str  # updated | not-offered
    checks: tuple[str, ...]
    results: Path  # this scenario's results directory
    log: StepLog
    start_version: str | None = None  # None: keep what the image ships
    pip: str | None = None  # where the release installs from ({target_version})
    feed_url: str | None = None  # the rig's release feed, as the device reaches it
    interactive: bool = False
    model: str = "pi3"  # the device model the scenario runs on (timeouts depend on it)
    plugins: dict[str, str] = field(default_factory=dict)  # bundled plugin key -> release
    image_python: str | None = None  # the image's Python, where the catalogue says
    because: str | None = None  # why not offered, when the scenario says: channel|python|throttle
    admin_user: str = "admin"  # the product's admin account prepare creates
    admin_password: str = "rig-admin-password"  # the runner passes rig.yaml's or a per-run one
    manual_update: bool = False  # the person updated in their browser: update() only waits
    facts: dict[str, Any] = field(default_factory=dict)  # versions read by prepare, etc.


class Profile(Protocol):
    name: str

    def prepare(self, ctx: ScenarioContext) -> None:
        """Bring the freshly booted device to the scenario's starting state."""

    def update(self, ctx: ScenarioContext) -> None:
        """Update through the product's regular mechanism (or check it is not offered)."""

    def verify(self, ctx: ScenarioContext) -> None:
        """The device runs the target version, healthy."""

    def check(self, ctx: ScenarioContext, name: str) -> None:
        """One of the scenario's checks (e.g. smoke)."""

    def collect(self, ctx: ScenarioContext) -> None:
        """Logs and facts into ctx.results; must not raise for a missing file."""

    # optional: def leave(self, ctx) -> None -- undo the rig's test settings before power-off,
    # so a card powered on again after its run is in a state a user could have

    def release_feed(self, version: str, channel: str) -> Any:
        """An ASGI app that offers the release under test to the devices, or None.

        The runner serves it for the length of a run (and passes its URL to the
        steps as ``ctx.feed_url``); the daemon mounts it as a route."""
