"""The generic profile: any software on a Pi whose state, update and version are commands.

The matrix's release says how, as shell command lines run over SSH as the device user:

- ``version_command`` prints the installed version (the last line of its output);
- ``update_command`` updates to ``{target_version}``;
- ``start_command`` (needed by scenarios with ``start``) brings a fresh card to
  ``{start_version}`` before the update.

The placeholders are replaced by the shell-quoted versions; nothing else in a command
is touched (``${HOME}``, ``{a,b}`` stay the shell's). There is one channel
(``default``), no release feed and no built-in checks: a scenario's checks are the
user's own pytest files (rig.checks.plugin).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from rig.device.shell import CommandResult, DeviceShell, quote
from rig.device.ssh import SSHShell
from rig.errors import ConfigError, InfraError, ProductError
from rig.product.profile import ScenarioContext

COMMANDS = ("version_command", "update_command", "start_command")
REQUIRED = ("version_command", "update_command")
# the placeholders each command may use
PLACEHOLDERS = {
    "version_command": ("target_version",),
    "update_command": ("target_version",),
    "start_command": ("start_version", "target_version"),
}
# `{name}` not preceded by `$` (shell's ${HOME}); brace expansion {a,b} has no match
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
COMMAND_TIMEOUT = 3600  # the pipeline's phase limit ends a command sooner

ShellFactory = Callable[[ScenarioContext], DeviceShell]


def ssh_shell(ctx: ScenarioContext) -> DeviceShell:
    """SSH to the device as the device user, waiting until it answers."""
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


def fill(command: str, **values: str | None) -> str:
    """The command with its placeholders replaced by the shell-quoted values."""
    for name, value in values.items():
        if value is not None:
            command = command.replace("{" + name + "}", quote(value))
    return command


def reported_version(result: CommandResult) -> str:
    """What a version command printed: its last non-empty line, stripped."""
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class GenericProfile:
    name = "generic"
    title = "the application"  # how messages name the product
    channels: tuple[str, ...] = ("default",)
    checks: Mapping[str, float] = MappingProxyType({})  # none: the user's pytest files are
    default_checks: tuple[str, ...] = ()
    update_modes: tuple[str, ...] = ("command",)  # release.update_command, over SSH
    start_key: str | None = "start"
    accepts_any_image = True  # whatever the image was made for, commands reach it
    # a Pi 3's seconds for the estimate: unknown commands, so the rig's usual magnitudes
    phase_seconds: Mapping[str, float] = MappingProxyType(
        {"prepare": 30, "prepare-pinned": 120, "update": 120}
    )

    def __init__(self, shell_factory: ShellFactory = ssh_shell) -> None:
        self._shell_factory = shell_factory
        self._shells: dict[str, DeviceShell] = {}

    # -- the matrix vocabulary ------------------------------------------------------

    def scenario_schema(self) -> dict[str, Any]:
        return {
            "start": {
                "type": "string",
                "minLength": 1,
                "description": "the version release.start_command brings a fresh card to "
                "before the update (default: what the image has)",
            }
        }

    def release_schema(self) -> dict[str, Any]:
        described = {
            "version_command": "prints the installed version (its last line), run over SSH",
            "update_command": "updates the device to {target_version}, run over SSH",
            "start_command": "brings a fresh card to a scenario's {start_version}, over SSH",
        }
        return {
            key: {"type": "string", "minLength": 1, "description": text}
            for key, text in described.items()
        }

    def matrix_problems(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """What the schema cannot say: the commands it needs, their placeholders, a start
        only with a start command, and no `not-offered` (a command cannot tell whether an
        update is offered). That a start is a version older than the release, the matrix
        loader checks for every profile."""
        problems: list[tuple[str, str]] = []
        rel = data.get("release") if isinstance(data.get("release"), dict) else {}
        for key in REQUIRED:
            if not isinstance(rel.get(key), str) or not rel[key].strip():
                problems.append(
                    (f"release.{key}", f"is required by the generic profile ({_EXAMPLES[key]})")
                )
        for key in COMMANDS:
            command = rel.get(key)
            if not isinstance(command, str):
                continue
            for name in _PLACEHOLDER.findall(command):
                if name not in PLACEHOLDERS[key]:
                    allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS[key])
                    problems.append(
                        (f"release.{key}", f"unknown placeholder {{{name}}} (it may use {allowed})")
                    )
        defaults = data.get("defaults") if isinstance(data.get("defaults"), dict) else {}
        scenarios = data.get("scenarios") if isinstance(data.get("scenarios"), list) else []
        for i, raw in enumerate(scenarios):
            if not isinstance(raw, dict):
                continue
            merged = {**defaults, **raw}
            where = f"scenarios[{i}]"
            if isinstance(merged.get("start"), str) and not isinstance(
                rel.get("start_command"), str
            ):
                problems.append(
                    (
                        f"{where}.start" if "start" in raw else "defaults.start",
                        "needs release.start_command to bring the device to it, "
                        f"{_EXAMPLES['start_command']}",
                    )
                )
            if merged.get("expect", "updated") != "updated":
                problems.append(
                    (
                        f"{where}.expect",
                        "the generic profile updates by command and cannot tell whether an "
                        "update is offered: only expect updated",
                    )
                )
        return list(dict.fromkeys(problems))  # a problem of defaults is said once

    def start_version(self, image: Any, virtual: bool) -> str | None:
        """Unknown until prepare asks the device (version_command)."""
        return None

    def release_feed(
        self, version: str, channel: str, options: Mapping[str, Any], *, name: str | None = None
    ) -> None:
        """No feed: the update command says where the release comes from."""
        return None

    # -- plumbing -------------------------------------------------------------------

    def shell(self, ctx: ScenarioContext) -> DeviceShell:
        if ctx.scenario_id not in self._shells:
            self._shells[ctx.scenario_id] = self._shell_factory(ctx)
        return self._shells[ctx.scenario_id]

    def close(self, ctx: ScenarioContext) -> None:
        shell = self._shells.pop(ctx.scenario_id, None)
        if shell is not None:
            with contextlib.suppress(Exception):
                shell.close()

    def _command(self, ctx: ScenarioContext, key: str) -> str:
        command = ctx.release_options.get(key)
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(
                "is required by the generic profile", where=f"release.{key}", hint=_EXAMPLES[key]
            )
        return fill(command, target_version=ctx.target_version, start_version=ctx.start_version)

    def installed_version(self, ctx: ScenarioContext) -> str:
        """What version_command prints now; a failing command is the device's problem."""
        result = self.shell(ctx).run(self._command(ctx, "version_command"), timeout=120)
        version = reported_version(result)
        if not version:
            raise InfraError(
                "release.version_command printed nothing",
                where=f"{ctx.device.name} {ctx.log.phase or 'version'}",
                hint="it must print the installed version, e.g. `cat /opt/myapp/VERSION`",
            )
        return version

    # -- the steps ------------------------------------------------------------------

    def prepare(self, ctx: ScenarioContext) -> None:
        """Bring the card to the scenario's start (start_command), then read the version."""
        sh = self.shell(ctx)
        if ctx.start_version:
            with ctx.log.step(f"start state {ctx.start_version}"):
                sh.run(self._command(ctx, "start_command"), timeout=COMMAND_TIMEOUT)
        version = self.installed_version(ctx)
        ctx.facts["start_version"] = version
        if ctx.start_version and version != ctx.start_version:
            raise InfraError(
                f"release.start_command ran, but the device reports {version!r}, "
                f"not the scenario's start {ctx.start_version!r}",
                where=f"{ctx.device.name} prepare",
                hint="check start_command and version_command in the matrix's release",
            )
        if version == ctx.target_version:
            raise ConfigError(
                f"the device already runs the release under test ({version}): nothing to update",
                where=f"scenario {ctx.scenario_id}",
                hint="pin an older start with `start`, or use an image with an older version",
            )
        ctx.log(f"device runs {version}; release under test {ctx.target_version}")

    def update(self, ctx: ScenarioContext) -> None:
        """The update command; a non-zero exit is the release's failure."""
        if ctx.manual_update:
            ctx.log("updated by hand: the rig only verifies")
            return
        start = time.monotonic()
        result = self.shell(ctx).run(
            self._command(ctx, "update_command"), timeout=COMMAND_TIMEOUT, check=False
        )
        ctx.facts["update_seconds"] = round(time.monotonic() - start, 1)
        ctx.facts["update_exit"] = result.exit_status
        if not result.ok:
            raise ProductError(
                f"the update command failed with exit {result.exit_status}:\n{result.tail()}",
                where=f"{ctx.device.name} update",
            )

    def verify(self, ctx: ScenarioContext) -> None:
        """The device reports the release under test."""
        version = self.installed_version(ctx)
        ctx.facts["final_version"] = version
        if version != ctx.target_version:
            raise ProductError(
                f"the device reports {version!r} after the update, not the release under "
                f"test {ctx.target_version!r}",
                where=f"{ctx.device.name} verify",
            )

    def check(self, ctx: ScenarioContext, name: str) -> None:
        raise ConfigError(
            f"the generic profile has no built-in check {name!r}",
            where=f"scenario {ctx.scenario_id}",
            hint="list your own pytest files in checks (e.g. checks/test_app.py)",
        )

    def collect(self, ctx: ScenarioContext) -> None:
        """The facts into the results (the commands' output is in scenario.log)."""
        out = ctx.results
        out.mkdir(parents=True, exist_ok=True)
        (out / "facts.json").write_text(json.dumps(ctx.facts, indent=2, default=str))
        self.close(ctx)


_EXAMPLES = {
    "version_command": 'e.g. "cat /opt/myapp/VERSION"',
    "update_command": 'e.g. "sudo apt-get install -y myapp={target_version}"',
    "start_command": 'e.g. "sudo apt-get install -y --allow-downgrades myapp={start_version}"',
}
