"""What a user's check knows about the device under test, and how it gets there.

Inside `rig run` the scenario's context is handed to the pytest subprocess in a
JSON file readable by its owner only (it holds the device user's and the product
admin's passwords), named by ``$RIG_CHECK_CONTEXT``. Standalone
(``pytest --rig-device pi3-a``) the same context is built from rig.yaml, as
`rig run` would build it for that device.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rig.device.browser import display_available
from rig.errors import ConfigError
from rig.product.profile import ScenarioContext

CONTEXT_ENV = "RIG_CHECK_CONTEXT"
FORMAT = 1


@dataclass(frozen=True)
class RigDevice:
    """Where the device under test is: the `rig_device` fixture."""

    name: str
    host: str
    ssh_port: int = 22
    http_port: int = 80

    @property
    def base_url(self) -> str:
        port = "" if self.http_port == 80 else f":{self.http_port}"
        return f"http://{self.host}{port}"


@dataclass(frozen=True)
class Credentials:
    """The device user (SSH) and the product's admin: the `credentials` fixture.

    ``admin_password`` is None standalone when rig.yaml sets none (each run then
    generates its own, and only that run's hand-over shows it)."""

    user: str
    password: str | None = None
    ssh_key: str | None = None
    host_keys: str = "accept-new"
    admin_user: str = "admin"
    admin_password: str | None = None

    def __repr__(self) -> str:  # never in a traceback or pytest's assertion output
        return f"Credentials(user={self.user!r}, admin_user={self.admin_user!r}, ...)"


@dataclass(frozen=True)
class ScenarioInfo:
    """The scenario a check runs in: the `scenario` fixture (standalone: no scenario, so
    ``id`` and the versions are None)."""

    id: str | None = None
    product: str | None = None
    channel: str | None = None
    target_version: str | None = None
    release_channel: str | None = None
    start_version: str | None = None
    expect: str | None = None
    update_mode: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    release_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckContext:
    device: RigDevice
    credentials: Credentials
    scenario: ScenarioInfo
    facts: dict[str, Any]
    results: Path  # where screenshots and traces of failed checks go
    headed: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["results"] = str(self.results)
        data["format"] = FORMAT
        return json.dumps(data, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str, where: str) -> CheckContext:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this rig reads {FORMAT}")
            return cls(
                device=RigDevice(**data["device"]),
                credentials=Credentials(**data["credentials"]),
                scenario=ScenarioInfo(**data["scenario"]),
                facts=dict(data["facts"]),
                results=Path(data["results"]),
                headed=bool(data.get("headed", False)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"not a check context: {e}", where=where) from None


def from_scenario(ctx: ScenarioContext, results: Path) -> CheckContext:
    """The context of a running scenario."""
    d = ctx.device
    return CheckContext(
        device=RigDevice(d.name, d.host, d.ssh_port, d.http_port),
        credentials=Credentials(
            user=d.user,
            password=d.password or None,
            ssh_key=d.ssh_key,
            host_keys=d.host_keys,
            admin_user=ctx.admin_user,
            admin_password=ctx.admin_password,
        ),
        scenario=ScenarioInfo(
            id=ctx.scenario_id,
            product=ctx.product,
            channel=ctx.channel,
            target_version=ctx.target_version,
            release_channel=ctx.release_channel,
            start_version=ctx.start_version,
            expect=ctx.expect,
            update_mode=ctx.update_mode or None,
            options=dict(ctx.options),
            release_options=dict(ctx.release_options),
        ),
        facts=json.loads(json.dumps(ctx.facts, default=str)),
        results=results,
        headed=ctx.interactive and display_available(),  # as the built-in browser checks
    )


def from_config(config: Any, device: str, results: Path) -> CheckContext:
    """A device of rig.yaml (a rig.config.RigConfig) as `rig run` would address it."""
    dev = config.device(device)
    admin = config.admin
    return CheckContext(
        device=RigDevice(dev.name, dev.host or f"{dev.name}.local", dev.ssh_port, dev.http_port),
        credentials=Credentials(
            user=config.user.name,
            password=config.user.password.reveal() or None,
            host_keys=config.ssh.get("host_keys", "accept-new"),
            admin_user=admin.name,
            admin_password=admin.password.reveal() if admin.password else None,
        ),
        scenario=ScenarioInfo(),
        facts={},
        results=results,
    )


@contextmanager
def handed_over(context: CheckContext) -> Iterator[Path]:
    """The context in a file only this user can read, for as long as the suite runs.

    It lives in a private temporary directory, never in the report directory (whose
    files the report lists and links), and is removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="rig-check-"))  # mode 0700
    path = directory / "context.json"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(context.to_json())
        yield path
    finally:
        path.unlink(missing_ok=True)
        directory.rmdir()


def read_handed_over(path: Path) -> CheckContext:
    """The context file named by $RIG_CHECK_CONTEXT; refused when others may read it."""
    where = f"${CONTEXT_ENV}={path}"
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the check context: {e.strerror or e}", where=where) from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the check context is readable by others (mode {stat.S_IMODE(mode):o}): "
            "it holds passwords",
            where=where,
            hint=f"chmod 600 {path}",
        )
    return CheckContext.from_json(text, where)
