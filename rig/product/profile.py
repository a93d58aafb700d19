"""The small interface between the scenario pipeline and a product.

Only a profile knows what OctoPrint (or MainsailOS, Home Assistant...) is: its
vocabulary (channels, checks and what each costs, the matrix keys it adds, the
version a fresh card runs) and its five steps. The matrix loader and the schema
ask the profile for the vocabulary; the pipeline hands it a ScenarioContext of
plain facts and calls the steps. Profiles raise ProductError for a misbehaving
product and InfraError when the device or network failed.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    channel: str  # one of the profile's channels
    target_version: str  # the release under test
    release_channel: str  # the channel the release is published on
    expect: str  # updated | not-offered
    checks: tuple[str, ...]  # the profile's built-in checks to run after the update
    results: Path  # this scenario's results directory
    log: StepLog
    product: str = "octoprint"  # the release's product: the profile's name
    start_version: str | None = None  # None: keep what the image ships
    update_mode: str = ""  # one of the profile's update_modes; "" = its first
    options: dict[str, Any] = field(default_factory=dict)  # the profile's own scenario keys
    release_options: dict[str, Any] = field(default_factory=dict)  # ... and release keys
    user_checks: tuple[Path, ...] = ()  # the user's own pytest files (absolute paths)
    image: Any = None  # the catalogue entry (rig.card.catalog.CatalogImage), None: a candidate
    feed_url: str | None = None  # the rig's release feed, as the device reaches it
    # the rig's package cache (rig.packages.serve.DevicePackages: .url as the device reaches
    # it, .keep_built for the wheels the device built); None: off
    package_index: Any = None
    interactive: bool = False
    model: str = "pi3"  # the device model the scenario runs on (timeouts depend on it)
    admin_user: str = "admin"  # the product's admin account prepare creates
    admin_password: str = "rig-admin-password"  # the runner passes rig.yaml's or a per-run one
    manual_update: bool = False  # the person updated in their browser: update() only waits
    facts: dict[str, Any] = field(default_factory=dict)  # versions read by prepare, etc.
    # the card was written from (or has just been kept as) this starting-state snapshot:
    # what the profile's snapshot_inputs named (e.g. the pinned version) is already on it
    snapshot: str | None = None

    @property
    def image_python(self) -> str | None:
        """The Python the catalogue says the image ships (None for a candidate)."""
        return getattr(self.image, "python", None)


class Profile(Protocol):
    """A product: its vocabulary (read by the matrix loader and the schema) and its steps."""

    name: str  # the registry key, the matrix's release.product
    title: str  # how messages name the product ("OctoPrint")
    channels: tuple[str, ...]  # what a scenario's channel may be; the first is the default
    checks: Mapping[str, float]  # built-in check name -> seconds it takes on a Pi 3
    default_checks: tuple[str, ...]  # a scenario without "checks"
    update_modes: tuple[str, ...]  # how update() may update (e.g. browser, api); first default
    start_key: str | None  # the scenario key that pins a start version, e.g. "octoprint"
    accepts_any_image: bool  # True: any catalogue image, whatever its product
    phase_seconds: Mapping[str, float]  # a Pi 3's prepare, prepare-pinned, update (estimates)

    def scenario_schema(self) -> dict[str, Any]:
        """JSON Schema properties of the profile's own scenario (and defaults) keys."""

    def release_schema(self) -> dict[str, Any]:
        """JSON Schema properties of the profile's own release keys."""

    def matrix_problems(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """(json path, message) for what the schema cannot say, on the raw matrix."""

    def start_version(self, image: Any, virtual: bool) -> str | None:
        """The product version a fresh card of this catalogue image runs."""

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
    # optional: def requirements_for(self, version) -> list[str] -- the pip requirements
    # that pinning start ``version`` installs (what the daemon's warm job fetches ahead)

    # optional, both or neither: starting-state snapshots (rig.card.snapshots)
    # def snapshot_inputs(self, ctx) -> dict | None -- everything of the scenario that shapes
    #     the prepared card and is not re-applied by every prepare (None: keep no snapshot)
    # def before_snapshot(self, ctx) -> None -- leave the device in a state worth keeping
    #     (service stopped, per-run settings and secrets off); the rig then shuts it down

    def release_feed(
        self, version: str, channel: str, options: Mapping[str, Any], *, name: str | None = None
    ) -> Any:
        """An ASGI app that offers the release under test to the devices, or None.

        ``options`` are the matrix's release keys of this profile (release_schema).

        The runner serves it for the length of a run (and passes its URL to the
        steps as ``ctx.feed_url``); the daemon mounts it as a route."""


def ssh_shell(ctx: ScenarioContext) -> Any:
    """A profile's default shell: SSH to the device as the device user, once it answers."""
    from rig.device.ssh import SSHShell

    d = ctx.device
    shell = SSHShell(
        d.host,
        port=d.ssh_port,
        user=d.user,
        password=d.password or None,
        key_filename=d.ssh_key,
        host_keys=d.host_keys,
        name=d.name,
        log=ctx.log,
    )
    shell.wait_reachable(timeout=300)
    return shell
