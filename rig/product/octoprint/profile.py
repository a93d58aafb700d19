"""The OctoPrint profile: starting state, injected release, update, verification, checks.

Device layout as on OctoPi: OctoPrint's venv at ``~/oprint``, its basedir at
``~/.octoprint``, the service restarted with ``sudo service octoprint restart``.
Every device command goes through a `DeviceShell` (SSH by default); the tests
hand in a local shell running the same command lines.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from rig.device.browser import display_available
from rig.device.clock import check_clock
from rig.device.shell import DeviceShell, quote
from rig.errors import ConfigError, InfraError, ProductError
from rig.packages.environment import USER_AGENT_SCRIPT
from rig.packages.pipconf import is_ours, pip_conf
from rig.product.octoprint.api import OctoPrintAPI
from rig.product.octoprint.constraints import requirements_for
from rig.product.octoprint.feed import BUNDLED_PLUGINS
from rig.product.octoprint.injection import PLUGIN_NAME, plugin_source
from rig.product.octoprint.settings import MERGE_SCRIPT, config_overlay, leave_overlay
from rig.product.octoprint.vocabulary import OctoPrintVocabulary
from rig.product.profile import ScenarioContext, ssh_shell

VENV = "~/oprint"
PYTHON = f"{VENV}/bin/python"
BASEDIR = "~/.octoprint"
LOG = f"{BASEDIR}/logs/octoprint.log"
INCOMPLETE_STARTUP = f"{BASEDIR}/.incomplete_startup"
SERVICE = "sudo service octoprint"
# the venv's own pip.conf (pip's "site" file, read by every pip of ~/oprint, the
# softwareupdate plugin's included: it runs sys.executable -m pip)
PIP_CONF = f"{VENV}/pip.conf"
PIP_CONF_SAVED = f"{VENV}/pip.conf.rig-saved"
PIP_WHEELS = "~/.cache/pip/wheels"  # where pip keeps the wheels it built from sdists

# one per start of the server, in every version we support
START_LINE = re.compile(r" - octoprint\.startup - INFO - .*Starting OctoPrint|Starting OctoPrint ")
ERROR_LINE = re.compile(r"^\S+ \S+ - \S+ - (ERROR|CRITICAL) - ")
# Without a release feed the device has nothing to ask for the check overlay, the
# plugin repository and notices or the Python EOL table; offline, those fetches log
# ERRORs that say nothing about the release. Ignored only when there is no feed.
OFFLINE_NOISE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Could not fetch check overlay"), "softwareupdate overlay, offline"),
    (re.compile(r"Could not fetch (plugins|notices) from"), "plugin repository, offline"),
    (re.compile(r"Could not fetch Python EOL data"), "health check, offline"),
)


# Run with the device's Python: fetch a snapshot URL, print status, type, size and the
# JPEG markers (FFD8 ... FFD9). An HTTP error exits non-zero with its message.
SNAPSHOT_SCRIPT = (
    "import sys, urllib.request as u; r = u.urlopen(sys.argv[1], timeout=15); d = r.read(); "
    "print(r.status, (r.headers.get('Content-Type') or '-').split(';')[0], len(d), "
    "d[:2].hex(), d[-2:].hex())"
)


def throttle_flags(value: int) -> dict[str, Any]:
    """``vcgencmd get_throttled``'s bits, named as Pi support's ThrottleState.as_dict names them."""
    return {
        "raw_value": value,
        "current_undervoltage": bool(value & 0x1),
        "past_undervoltage": bool(value & 0x10000),
        "current_overheat": bool(value & 0x2),
        "past_overheat": bool(value & 0x20000),
        "current_issue": bool(value & 0x7),
        "past_issue": bool(value & 0x70000),
    }


# Seconds an update through pip may take, by model: what the device needs to unpack
# and, where no wheel fits its Python, build the dependencies. A Pi 3 on OctoPi 0.18.0
# (Python 3.7) builds wheels for most of them (OctoPrint issue 4938: "stuck" far past
# 900 s). Estimates to fail within, not targets: a failed pip run fails at once anyway.
UPDATE_SECONDS = {"pi5": 600, "pi4": 900, "pi3": 1200, "pizero2": 1800}
OLD_PYTHON_FACTOR = 2.5  # Python < 3.9: few wheels on piwheels/PyPI for current pins


def update_timeout(model: str, python_version: str | None) -> float:
    """How long to wait for an update from this starting state before calling it hung."""
    base = UPDATE_SECONDS.get(model, UPDATE_SECONDS["pi3"])
    try:
        major, minor = (int(x) for x in (python_version or "").split(".")[:2])
    except ValueError:
        return float(base)
    return base * (OLD_PYTHON_FACTOR if (major, minor) < (3, 9) else 1.0)


# Seconds a freshly written card takes to answer SSH on its first boot, by model: the
# root partition is resized, OctoPi/firstrun.sh reboot at least once, host keys are
# generated. Estimates (the virtual rig's pi3 timing profile: 3-5 min on a Pi 3), not
# measured here; the pipeline waits this long before it power cycles a silent device.
FIRST_BOOT_SECONDS = {"pi5": 240, "pi4": 300, "pi3": 420, "pizero2": 600}
SETTLE_SECONDS = 600  # prepare's wait for a first boot that reboots after sshd (systemd)
PREPARE_SECONDS = 300  # prepare without a pin: stop, configure, start OctoPrint


def boot_timeout(model: str) -> float:
    """How long a silent first boot on this model is normal, before the rig power cycles."""
    return float(FIRST_BOOT_SECONDS.get(model, FIRST_BOOT_SECONDS["pi3"]))


def prepare_timeout(model: str, start_version: str | None, python_version: str | None) -> float:
    """Prepare's limit: pinning a start version is a pip install as long as an update
    from the image's Python (wheels built on a Pi 3 on Python 3.7)."""
    limit = SETTLE_SECONDS + PREPARE_SECONDS
    if start_version:
        limit += update_timeout(model, python_version)
    return float(limit)


def _wait_gone(host: str, port: int, timeout: float) -> None:
    """Until the port stops accepting (the old boot's sshd is gone), or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except OSError:
            return
        time.sleep(0.5)


def data_of(ctx: ScenarioContext, key: str) -> Any:
    return ctx.facts.get(f"check_{key}")


ShellFactory = Callable[[ScenarioContext], DeviceShell]


def _plugins(ctx: ScenarioContext) -> dict[str, str]:
    """The matrix's release.plugins: bundled plugin check key -> release."""
    return dict(ctx.release_options.get("plugins") or {})


def _where(ctx: ScenarioContext, phase: str) -> str:
    return f"{ctx.device.name} {phase}"


class OctoPrintProfile(OctoPrintVocabulary):
    name = "octoprint"

    def __init__(
        self, shell_factory: ShellFactory = ssh_shell, upstream_checkout: str | None = None
    ) -> None:
        self._shell_factory = shell_factory
        self.upstream_checkout = upstream_checkout  # OctoPrint clone for octoprint-e2e
        self._shells: dict[str, DeviceShell] = {}

    def release_feed(
        self,
        version: str,
        channel: str,
        options: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> Any:
        """The feed that offers ``version`` on ``channel`` to the devices' release check,
        and each bundled plugin of ``options["plugins"]`` under that plugin's repository."""
        from rig.product.octoprint.feed import InjectedRelease, PluginRelease, feed_app
        from rig.product.octoprint.overlay import check_overlay

        plugins = dict((options or {}).get("plugins") or {})
        injected = tuple(PluginRelease(k, v) for k, v in sorted(plugins.items()))
        # the field's check overlay, as OctoPrint's own update check fetches it
        return feed_app(
            InjectedRelease(version, channel, name=name), overlay=check_overlay(), plugins=injected
        )

    def boot_timeout(self, ctx: ScenarioContext) -> float:
        """The first boot's normal silence for this device (before a power cycle)."""
        return boot_timeout(ctx.model)

    def prepare_timeout(self, ctx: ScenarioContext) -> float:
        """Prepare's time limit: longer when the start version is pinned with pip."""
        return prepare_timeout(ctx.model, ctx.start_version, ctx.image_python)

    def update_timeout(self, ctx: ScenarioContext) -> float:
        """The update's time limit for this device and starting state (after prepare)."""
        return update_timeout(ctx.model, ctx.facts.get("python_version"))

    def requirements_for(self, version: str) -> list[str]:
        """What pinning start ``version`` installs with pip (the daemon warms the package
        cache with it while the image under test is still being built)."""
        return requirements_for(version)

    # -- plumbing ---------------------------------------------------------------

    def shell(self, ctx: ScenarioContext) -> DeviceShell:
        key = ctx.scenario_id
        if key not in self._shells:
            self._shells[key] = self._shell_factory(ctx)
        return self._shells[key]

    def api(self, ctx: ScenarioContext) -> OctoPrintAPI:
        return OctoPrintAPI(
            ctx.device.base_url,
            ctx.admin_user,
            ctx.admin_password,
            where=ctx.device.name,
        )

    def close_shell(self, ctx: ScenarioContext) -> None:
        shell = self._shells.pop(ctx.scenario_id, None)
        if shell:
            with contextlib.suppress(Exception):
                shell.close()

    def close(self, ctx: ScenarioContext) -> None:
        self.close_shell(ctx)

    # -- prepare ----------------------------------------------------------------

    def prepare(self, ctx: ScenarioContext) -> None:
        """Stop, pin the start version, configure, inject, add the admin, start, read versions."""
        if ctx.feed_url is None and ctx.expect == "updated":
            raise ConfigError(
                "no release feed: the device could not be offered the release",
                where=f"scenario {ctx.scenario_id}",
                hint="rig run starts the feed; pass feed_url in the scenario context",
            )
        self._wait_settled(ctx)
        sh = self.shell(ctx)
        log = ctx.log
        ctx.facts["clock_offset"] = round(check_clock(sh, log, wait=120), 1)
        with log.step("stop OctoPrint"):
            sh.run(f"{SERVICE} stop", timeout=120)
            # A stop before start-up finished (a slow Pi 3, OctoPi's first-boot reboot)
            # leaves OctoPrint's flag, and the next start would be safe mode.
            sh.run(f"rm -f {INCOMPLETE_STARTUP}", quiet=True)
        self.point_pip(ctx)
        if ctx.start_version and self._snapshot_has_start(ctx, sh):
            ctx.log(
                f"OctoPrint {ctx.start_version} is on the card (snapshot {ctx.snapshot[:12]}): "
                "no pin"
            )
        elif ctx.start_version:
            reqs = requirements_for(ctx.start_version)
            with log.step(f"pin OctoPrint {ctx.start_version}", requirements=reqs):
                start = time.monotonic()
                sh.run(
                    f"{PYTHON} -m pip install --disable-pip-version-check --no-input "
                    + quote(*reqs),
                    timeout=update_timeout(ctx.model, ctx.image_python),
                )
                ctx.facts["pin_seconds"] = round(time.monotonic() - start, 1)
        installed = sh.run(
            f'{PYTHON} -c "import octoprint; print(octoprint.__version__)"', quiet=True
        ).stdout.strip()
        if ctx.start_version and installed != ctx.start_version:
            raise InfraError(
                f"pinned OctoPrint {ctx.start_version} but the venv has {installed}",
                where=_where(ctx, "prepare"),
            )
        ctx.facts["start_version"] = installed
        overlay = config_overlay(
            channel=ctx.channel,
            device_version=installed,
            pip=ctx.release_options.get("pip"),
            target_version=ctx.target_version,
            feed_url=ctx.feed_url,
            plugin_packages={key: BUNDLED_PLUGINS[key][2] for key in _plugins(ctx)},
        )
        with log.step("apply config profile and release injection"):
            sh.put_text("~/.rig/config_merge.py", MERGE_SCRIPT)
            sh.put_text("~/.rig/config_overlay.json", json.dumps(overlay, indent=2))
            sh.run(f"mkdir -p {BASEDIR}/plugins {BASEDIR}/logs", quiet=True)
            sh.run(
                f"{PYTHON} ~/.rig/config_merge.py {BASEDIR}/config.yaml ~/.rig/config_overlay.json"
            )
            if ctx.feed_url:
                sh.put_text(f"{BASEDIR}/plugins/{PLUGIN_NAME}.py", plugin_source())
            else:
                sh.run(f"rm -f {BASEDIR}/plugins/{PLUGIN_NAME}.py", quiet=True)
        with log.step(f"admin user {ctx.admin_user}"):
            # the password travels in a file only the device user reads, never on a command
            # line the scenario log records
            user, pw = quote(ctx.admin_user), '"$(cat ~/.rig/admin-password)"'
            sh.put_text("~/.rig/admin-password", ctx.admin_password, mode=0o600)
            octo = f"{PYTHON} -m octoprint --basedir {BASEDIR}"
            try:
                added = sh.run(f"{octo} user add {user} --password {pw} --admin", check=False)
                # an existing user (a card from a snapshot, a second prepare) is not an error
                # to the CLI: it says so and exits 0, and the password stays the old one
                if not added.ok or "already exist" in added.stdout + added.stderr:
                    sh.run(f"{octo} user password {user} --password {pw}")
                    sh.run(f"{octo} user activate {user}", check=False)
            finally:
                sh.run("rm -f ~/.rig/admin-password", quiet=True, check=False)
        with log.step("start OctoPrint"):
            sh.run(f"{SERVICE} start", timeout=120)
            api = self.api(ctx)
            try:
                server = api.wait_ready(timeout=240)
            except InfraError as e:
                raise InfraError(
                    f"OctoPrint {installed} did not come up after prepare: {e.message}\n"
                    + self._log_tail(sh),
                    where=_where(ctx, "prepare"),
                ) from e
            finally:
                api.close()
        if server.get("version") != installed:
            raise InfraError(
                f"OctoPrint reports {server.get('version')}, the venv has {installed}",
                where=_where(ctx, "prepare"),
            )
        if server.get("safemode"):
            raise InfraError(
                f"OctoPrint started in safe mode ({server['safemode']})",
                where=_where(ctx, "prepare"),
            )
        ctx.facts.update(self._versions(sh))
        ctx.facts["octoprint_version"] = server["version"]
        # where verify starts reading if a person, not the rig, does the update
        ctx.facts["log_offset"] = len(sh.read_bytes(LOG) or b"")
        log("prepared", **{k: v for k, v in ctx.facts.items() if isinstance(v, str | int | float)})

    def _snapshot_has_start(self, ctx: ScenarioContext, sh: DeviceShell) -> bool:
        """The card is a snapshot keyed on this start version and its venv has it."""
        if not ctx.snapshot:
            return False
        found = sh.run(
            f'{PYTHON} -c "import octoprint; print(octoprint.__version__)"', quiet=True, check=False
        )
        return found.ok and found.stdout.strip() == ctx.start_version

    # -- starting-state snapshots -------------------------------------------------

    def snapshot_inputs(self, ctx: ScenarioContext) -> dict[str, Any] | None:
        """What of the scenario shapes the prepared card beyond what every prepare applies
        again (the feed, the target version, the admin password are per run): the pinned
        version with its constraints, the channel and the plugins the config names."""
        if ctx.interactive:
            return None  # a person may change anything on the device: nothing to keep
        start = ctx.start_version
        return {
            "product": self.name,
            "start_version": start,  # None: the image's own
            "requirements": requirements_for(start) if start else [],
            "channel": ctx.channel,
            "plugins": sorted(BUNDLED_PLUGINS[key][2] for key in _plugins(ctx)),
        }

    def before_snapshot(self, ctx: ScenarioContext) -> None:
        """OctoPrint stopped, the run's feed, injection, pip.conf, logs and files off."""
        sh = self.shell(ctx)
        with ctx.log.step("stop OctoPrint for the snapshot"):
            sh.run(f"{SERVICE} stop", timeout=120)
            sh.run(f"rm -f {INCOMPLETE_STARTUP}", quiet=True)
        self.leave(ctx)
        # the admin with this run's password is made again by every prepare
        octo = f"{PYTHON} -m octoprint --basedir {BASEDIR}"
        # (the CLI asks for "yes" on its stdin)
        sh.run(f"echo yes | {octo} user remove {quote(ctx.admin_user)}", check=False, timeout=60)
        # this run's logs are not the next run's; ~/.rig held the merge script and overlay
        sh.run(f"rm -rf ~/.rig {BASEDIR}/logs/*", quiet=True, check=False)
        self.close_shell(ctx)

    def _wait_settled(self, ctx: ScenarioContext, attempts: int = 3) -> None:
        """Work only on a finished boot: a first boot may reboot once after sshd is up
        (OctoPi's hostname change). systemd says so: is-system-running --wait returns
        when the boot is done, "stopping" when a reboot began instead."""
        for _ in range(attempts):
            try:
                out = self.shell(ctx).run(
                    "systemctl is-system-running --wait", check=False, quiet=True, timeout=600
                )
                state = out.stdout.strip()
            except InfraError:
                state = "stopping"  # the connection went with the reboot
            if state != "stopping":
                ctx.facts["system_state"] = state or "unknown"
                return
            ctx.log("the device is rebooting on its own (first boot); waiting for it")
            self.close_shell(ctx)
            _wait_gone(ctx.device.host, ctx.device.ssh_port, timeout=120)
        raise InfraError(
            f"the device rebooted {attempts} times on its own after sshd was up",
            where=_where(ctx, "prepare"),
        )

    def _versions(self, sh: DeviceShell) -> dict[str, str]:
        octopi = sh.run("cat /etc/octopi_version", check=False, quiet=True)
        python = sh.run(f'{PYTHON} -c "import sys; print(sys.version.split()[0])"', quiet=True)
        pip = sh.run(f"{PYTHON} -m pip --version", check=False, quiet=True)
        # what the device itself runs, read from it (never from the catalogue)
        osr = sh.run('. /etc/os-release && echo "$PRETTY_NAME"', check=False, quiet=True)
        system = sh.run(
            "/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'",
            check=False,
            quiet=True,
        )
        return {
            "os_release": osr.stdout.strip() if osr.ok else "",
            "system_python_version": system.stdout.strip() if system.ok else "",
            "octopi_version": octopi.stdout.strip() if octopi.ok else "",
            "python_version": python.stdout.strip(),
            "pip_version": pip.stdout.split()[1] if pip.ok and pip.stdout.split() else "",
        }

    def _log_tail(self, sh: DeviceShell, lines: int = 30) -> str:
        data = sh.read_bytes(LOG) or b""
        return "octoprint.log ends with:\n" + "\n".join(
            data.decode("utf-8", "replace").splitlines()[-lines:]
        )

    # -- update -----------------------------------------------------------------

    def offered(self, ctx: ScenarioContext, api: OctoPrintAPI) -> dict[str, Any]:
        """The forced release check; the octoprint entry of its answer."""
        data = api.check(force=True)
        info = data.get("information", {}).get("octoprint")
        ctx.facts["check_environment"] = data.get("environment")
        ctx.facts["check_storage"] = data.get("storage")
        if info is None:
            raise ProductError(
                "the release check has no entry for octoprint",
                where=_where(ctx, "update"),
            )
        remote = ((info.get("information") or {}).get("remote") or {}).get("value")
        ctx.facts["check_status"] = data.get("status")
        ctx.facts["offered_version"] = remote
        ctx.log(
            f"release check: status {data.get('status')}, remote {remote}, "
            f"updateAvailable {info.get('updateAvailable')}, "
            f"updatePossible {info.get('updatePossible')}"
        )
        return info

    def update(self, ctx: ScenarioContext) -> None:
        sh = self.shell(ctx)
        api = self.api(ctx)
        try:
            api.login()
            if ctx.manual_update and ctx.expect == "updated":
                # the person updated in their browser: judge what they got, from prepare on
                ctx.log("the update was done by hand in the browser: waiting for the result")
                ctx.facts["updated_by"] = "person"
                self.wait_for_version(ctx, api, timeout=600)
                return
            ctx.facts["log_offset"] = len(sh.read_bytes(LOG) or b"")
            ctx.facts["throttle_before_update"] = self.throttle(ctx, sh, api)
            info = self.offered(ctx, api)
            remote = ctx.facts["offered_version"]
            is_offered = bool(info.get("updateAvailable")) and remote == ctx.target_version
            if ctx.expect == "not-offered":
                self._not_offered(ctx, api, info, is_offered)
                return
            if not is_offered:
                raise ProductError(
                    f"{ctx.target_version} is not offered on channel {ctx.channel} "
                    f"(the check sees {remote!r})",
                    where=_where(ctx, "update"),
                )
            if not info.get("updatePossible"):
                # the plugin's verdict on the device (Python environment, free space), not
                # on the release: softwareupdate's target_update_possible
                raise InfraError(
                    f"{ctx.target_version} is offered but the device cannot install it "
                    f"(updatePossible false: environment {data_of(ctx, 'environment')}, "
                    f"storage {data_of(ctx, 'storage')})",
                    where=_where(ctx, "update"),
                    hint="see the check's environment and storage in the facts",
                )
            start = time.monotonic()
            limit = self.update_timeout(ctx)
            ctx.facts["update_timeout"] = limit
            if ctx.update_mode == "api":
                self._update_api(ctx, api, timeout=limit)
            else:
                from rig.product.octoprint.ui_update import update_in_browser

                update_in_browser(ctx, self, update_timeout=limit)
            ctx.facts["update_seconds"] = round(time.monotonic() - start, 1)
            ctx.log(f"updated to {ctx.target_version} in {ctx.facts['update_seconds']}s")
        finally:
            try:
                self.unpoint_pip(ctx)  # the checks after the update see the user's pip
            except InfraError as e:
                ctx.log(f"the device's pip.conf is not restored yet ({e.message}); leave will")
            if "throttle_before_update" in ctx.facts:
                try:
                    ctx.facts["throttle_after_update"] = self.throttle(ctx, sh, api)
                except (InfraError, OSError, httpx.HTTPError) as e:
                    ctx.log(f"throttle state after the update not readable: {e}")
            api.close()

    def throttle(
        self, ctx: ScenarioContext, sh: DeviceShell, api: OctoPrintAPI
    ) -> dict[str, Any] | None:
        """The throttle flags as OctoPrint's Pi support sees them, else ``vcgencmd``."""
        state = api.throttle_state()
        if state is None:
            out = sh.run("vcgencmd get_throttled", check=False, quiet=True)
            text = out.stdout.strip()
            if out.ok and text.startswith("throttled="):
                state = throttle_flags(int(text.split("=", 1)[1], 0))
        if state and state.get("current_issue"):
            ctx.log(f"the device is throttled now: {state}")
        return state

    def _not_offered(
        self, ctx: ScenarioContext, api: OctoPrintAPI, info: dict[str, Any], is_offered: bool
    ) -> None:
        """The release must not reach the device, for the reason the scenario names."""
        where = _where(ctx, "update")
        because = ctx.options.get("because") or "channel"
        environment = ctx.facts.get("check_environment") or {}
        if because == "channel":
            if is_offered:
                raise ProductError(
                    f"{ctx.target_version} is offered on channel {ctx.channel}, but must not be",
                    where=where,
                )
        elif because == "python":
            if is_offered and environment.get("supported", True) and info.get("updatePossible"):
                raise ProductError(
                    f"{ctx.target_version} is offered and installable on Python "
                    f"{ctx.facts.get('python_version')}: the scenario expects the device's "
                    f"Python environment to rule it out",
                    where=where,
                )
        elif because == "throttle":
            throttled = (ctx.facts.get("throttle_before_update") or {}).get("current_issue")
            if not throttled:
                raise InfraError(
                    "the scenario expects a throttled device, but it reports no throttling",
                    where=where,
                    hint="the premise of the scenario does not hold on this device",
                )
            if is_offered:
                try:
                    api.start_update()
                except InfraError as e:
                    if "throttled" not in e.message:
                        raise
                    ctx.facts["refused"] = e.message
                else:
                    raise ProductError(
                        f"{ctx.target_version} was installed on a throttled device",
                        where=where,
                    )
        ctx.facts["not_offered_because"] = because
        ctx.log(f"{ctx.target_version} does not reach the device ({because}), as expected")

    def _update_api(self, ctx: ScenarioContext, api: OctoPrintAPI, timeout: float = 900) -> None:
        log = api.updatelog()
        before = None if log is None else len(log)  # None: no updatelog before 1.7.0
        answer = api.start_update()
        ctx.log(f"update started: {answer}")
        self.wait_for_version(ctx, api, timeout=timeout, updatelog_before=before)

    def wait_for_version(
        self,
        ctx: ScenarioContext,
        api: OctoPrintAPI,
        *,
        timeout: float = 900,
        updatelog_before: int | None = None,
    ) -> None:
        """Poll until the server runs the target; a failed update fails at once: from the
        update log where the version has one (1.7.0 on), else from octoprint.log, where
        every version logs "Update of octoprint can not be performed"."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                version = api.server().get("version")
                if version == ctx.target_version:
                    return
                last = f"still {version}"
                failed = self._failed_in_log(ctx)
                if failed:
                    raise ProductError(
                        f"the update failed: {failed}",
                        where=_where(ctx, "update"),
                        hint="see plugin_softwareupdate_console.log in the results",
                    )
                if updatelog_before is not None:
                    log = api.updatelog() or []
                    for entry in log[updatelog_before:]:
                        if entry.get("target") == "octoprint" and not entry.get("success"):
                            raise ProductError(
                                f"the update failed: {entry.get('text')}",
                                where=_where(ctx, "update"),
                                hint="see plugin_softwareupdate_console.log in the results",
                            )
            except (InfraError, OSError) as e:
                last = f"not answering ({e})"
            except Exception as e:  # httpx errors while it restarts
                if isinstance(e, ProductError):
                    raise
                last = f"not answering ({type(e).__name__})"
            time.sleep(2)
        raise ProductError(
            f"not running {ctx.target_version} within {timeout:.0f}s of the update ({last})",
            where=_where(ctx, "update"),
        )

    def _failed_in_log(self, ctx: ScenarioContext, target: str = "octoprint") -> str | None:
        """softwareupdate's failure line in octoprint.log since the update began, if any."""
        failed = re.compile(rf"Update of {re.escape(target)} can not be performed.*")
        data = self.shell(ctx).read_bytes(LOG) or b""
        offset = int(ctx.facts.get("log_offset", 0))
        new = data[offset:] if len(data) >= offset else data
        for line in new.decode("utf-8", "replace").splitlines():
            m = failed.search(line)
            if m:
                return line[m.start() :].strip()
        return None

    # -- verify -----------------------------------------------------------------

    def verify(self, ctx: ScenarioContext) -> None:
        sh = self.shell(ctx)
        api = self.api(ctx)
        try:
            server = api.wait_ready(timeout=240)
        finally:
            api.close()
        ctx.facts["final_version"] = server.get("version")
        want = ctx.target_version if ctx.expect == "updated" else ctx.facts.get("start_version")
        problems: list[str] = []
        if want and server.get("version") != want:
            problems.append(f"runs {server.get('version')}, expected {want}")
        if server.get("safemode"):
            problems.append(f"in safe mode ({server['safemode']})")
        new_log = self._new_log(sh, ctx)
        starts = [line for line in new_log if START_LINE.search(line)]
        ctx.facts["restarts"] = len(starts)
        expected_starts = 1 if ctx.expect == "updated" else 0
        if len(starts) != expected_starts:
            problems.append(
                f"the server started {len(starts)} times since the update "
                f"(expected {expected_starts})"
            )
        # Judge the server the update produced: from its start on. Requests that hit the
        # old process while pip swapped its files can log an ERROR there; those are kept
        # as a fact and in the log, and a failed install is caught by the update itself.
        last_start = max(
            (i for i, line in enumerate(new_log) if START_LINE.search(line)), default=0
        )
        during = self.error_lines(new_log[:last_start], ctx)
        if during:
            ctx.facts["error_lines_during_update"] = during
            ctx.log(f"{len(during)} ERROR line(s) from the old server while it was replaced")
        errors = self.error_lines(new_log[last_start:], ctx)
        ctx.facts["error_lines"] = errors
        if errors:
            problems.append(
                f"{len(errors)} new ERROR line(s) in octoprint.log:\n  " + "\n  ".join(errors[:10])
            )
        if problems:
            raise ProductError("; ".join(problems), where=_where(ctx, "verify"))
        ctx.log(f"verified: OctoPrint {server.get('version')}, one restart, no new errors")

    def _new_log(
        self, sh: DeviceShell, ctx: ScenarioContext, quiet: float = 3, limit: float = 45
    ) -> list[str]:
        """The log since the update, once it has been quiet for ``quiet`` seconds.

        Bundled plugins log their start-up fetches a moment after the server
        answers; reading too early would miss exactly the errors we look for.
        """
        offset = int(ctx.facts.get("log_offset", 0))
        data = sh.read_bytes(LOG) or b""
        deadline = time.monotonic() + limit
        stable_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - stable_since < quiet:
            time.sleep(0.5)
            again = sh.read_bytes(LOG) or b""
            if len(again) != len(data):
                data, stable_since = again, time.monotonic()
        # rotated at midnight since the update started: the whole file is new
        new = data[offset:] if len(data) >= offset else data
        return new.decode("utf-8", "replace").splitlines()

    @staticmethod
    def error_lines(lines: list[str], ctx: ScenarioContext | None = None) -> list[str]:
        noise = list(OFFLINE_NOISE) if ctx is not None and not ctx.feed_url else []
        return [
            line
            for line in lines
            if ERROR_LINE.search(line) and not any(p.search(line) for p, _ in noise)
        ]

    # -- checks and collection ---------------------------------------------------

    def check(self, ctx: ScenarioContext, name: str) -> None:
        if name == "smoke":
            from rig.product.octoprint.e2e import run_smoke

            version = ctx.facts.get("final_version") or ctx.target_version
            run_smoke(
                ctx.device.base_url,
                user=ctx.admin_user,
                password=ctx.admin_password,
                results=ctx.results / "smoke",
                expect_version=version,
                log=ctx.log,
                headed=ctx.interactive and display_available(),
            )
            self.webcam_snapshot(ctx)
            return
        if name == "plugin-updates":
            self._update_plugins(ctx)
            return
        if name == "octoprint-e2e":
            from rig.product.octoprint.upstream import run_upstream

            run_upstream(
                ctx.device.base_url,
                user=ctx.admin_user,
                password=ctx.admin_password,
                results=ctx.results / "octoprint-e2e",
                checkout=self.upstream_checkout,
                log=ctx.log,
            )
            return
        raise ConfigError(
            f"unknown check {name!r} for OctoPrint", where=f"scenario {ctx.scenario_id}"
        )

    def webcam_snapshot(self, ctx: ScenarioContext) -> dict[str, Any]:
        """The snapshot URL OctoPrint is configured with, fetched where OctoPrint fetches it
        (on the device): a JPEG, or a product failure. An image without a camera stack has
        none configured (OctoPi's images set it with their webcamd/camera-streamer;
        OctoPrint's default is empty): skipped, with the reason in the results."""
        api = self.api(ctx)
        try:
            cam = api.get_json("/api/settings").get("webcam") or {}
        finally:
            api.close()
        url = str(cam.get("snapshotUrl") or "")
        if not cam.get("webcamEnabled", True) or not url:
            why = "webcam disabled" if url else "no snapshot URL configured"
            result: dict[str, Any] = {
                "outcome": "skipped",
                "reason": f"{why}: the image has no camera stack",
            }
        else:
            target = (
                url
                if "://" in url
                else f"http://127.0.0.1{url if url.startswith('/') else '/' + url}"
            )
            out = self.shell(ctx).run(
                f"{PYTHON} -c {quote(SNAPSHOT_SCRIPT)} {quote(target)}", check=False, quiet=True
            )
            result = {"outcome": "ok", "url": url}
            fields = out.stdout.split()
            if not out.ok or len(fields) != 5:
                lines = (out.stderr or out.stdout or "no answer").strip().splitlines()
                if "Connection refused" in lines[-1]:
                    # OctoPi configures the URL whether or not a camera is attached; without
                    # one its streamer does not listen: no camera here, nothing to judge
                    result = {
                        "outcome": "skipped",
                        "url": url,
                        "reason": "nothing serves the snapshot URL: no camera attached",
                    }
                else:
                    result.update(outcome="failed", reason=lines[-1][-300:])  # the exception
            else:
                status, ctype, size, head, tail = fields
                result.update(status=int(status), content_type=ctype, bytes=int(size))
                if head != "ffd8" or tail != "ffd9":
                    result.update(outcome="failed", reason=f"not a JPEG ({ctype}, {size} bytes)")
        ctx.facts["webcam"] = result
        out_dir = ctx.results / "smoke"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "webcam.json").write_text(json.dumps(result, indent=2) + "\n")
        ctx.log(f"webcam snapshot: {result['outcome']}", **result)
        if result["outcome"] == "failed":
            raise ProductError(
                f"webcam snapshot {url}: {result['reason']}", where=_where(ctx, "smoke")
            )
        return result

    def _update_plugins(self, ctx: ScenarioContext) -> None:
        """Each bundled plugin release the matrix injects: offered by the device's own
        check of that plugin, installed through softwareupdate, loaded after the restart."""
        if not _plugins(ctx):
            raise ConfigError(
                "check plugin-updates without plugin releases to inject",
                where=f"scenario {ctx.scenario_id}",
                hint="name them under release.plugins, e.g. file_check: 2025.7.23",
            )
        api = self.api(ctx)
        try:
            for key, version in sorted(_plugins(ctx).items()):
                with ctx.log.step(f"update plugin {key} to {version}"):
                    info = api.check(target=key)["information"].get(key, {})
                    local = info.get("information", {}).get("local", {}).get("value")
                    remote = info.get("information", {}).get("remote", {}).get("value")
                    ctx.facts[f"plugin_{key}_before"] = local
                    if not info.get("updateAvailable") or remote != version:
                        raise ProductError(
                            f"plugin {key} {version} not offered (device has {local}, "
                            f"its check sees {remote})",
                            where=_where(ctx, "plugin-updates"),
                        )
                    api.start_update(target=key)
                    self._wait_plugin(ctx, api, key, version)
                    ctx.facts[f"plugin_{key}_after"] = version
        finally:
            api.close()

    def _wait_plugin(self, ctx: ScenarioContext, api: OctoPrintAPI, key: str, version: str) -> None:
        """Until the running OctoPrint reports the plugin at ``version`` (after its restart)."""
        limit = update_timeout(ctx.model, ctx.facts.get("python_version"))
        deadline, last = time.monotonic() + limit, "no answer"
        while time.monotonic() < deadline:
            try:
                info = api.check(force=False, target=key)["information"].get(key, {})
                last = info.get("information", {}).get("local", {}).get("value") or "unknown"
                if last == version:
                    return
            except (InfraError, ProductError, httpx.HTTPError) as e:
                last = f"restarting ({e})"
            failed = self._failed_in_log(ctx, key)
            if failed:
                raise ProductError(failed, where=_where(ctx, "plugin-updates"))
            time.sleep(2)
        raise ProductError(
            f"plugin {key} not at {version} within {limit:.0f}s of its update ({last})",
            where=_where(ctx, "plugin-updates"),
        )

    def leave(self, ctx: ScenarioContext) -> None:
        """Before power-off: take the rig's feed and release injection off the card.

        A card powered on again after its run then starts like a user's install (no
        ERRORs about an unreachable feed, CSRF and rate limiter on, OctoPrint's own
        release check) with an admin password nobody outside this run knows.
        """
        sh = self.shell(ctx)
        with ctx.log.step("restore the card's user settings"):
            sh.put_text("~/.rig/config_merge.py", MERGE_SCRIPT)
            sh.put_text("~/.rig/config_overlay.json", json.dumps(leave_overlay(), indent=2))
            sh.run(
                f"test ! -e {BASEDIR}/config.yaml || {PYTHON} ~/.rig/config_merge.py "
                f"{BASEDIR}/config.yaml ~/.rig/config_overlay.json",
            )
            sh.run(f"rm -f {BASEDIR}/plugins/{PLUGIN_NAME}.py", quiet=True)
        self.unpoint_pip(ctx)

    # -- the rig's package cache --------------------------------------------------

    def point_pip(self, ctx: ScenarioContext) -> None:
        """The venv's pip asks the rig's package index (prepare's pin, then the update).

        A pip.conf the image has there is set aside and comes back with unpoint_pip."""
        if ctx.package_index is None:
            return
        sh = self.shell(ctx)
        current = sh.read_bytes(PIP_CONF)
        if current is not None and not is_ours(current.decode("utf-8", "replace")):
            sh.run(f"mv {PIP_CONF} {PIP_CONF_SAVED}", quiet=True)
        sh.put_text(PIP_CONF, pip_conf(ctx.package_index.url))
        ctx.log(f"pip on the device uses the rig's package cache {ctx.package_index.url}")

    def unpoint_pip(self, ctx: ScenarioContext) -> None:
        """Back to the user's pip configuration (the image's own pip.conf, if it had one)."""
        if ctx.package_index is None:
            return
        sh = self.shell(ctx)
        current = sh.read_bytes(PIP_CONF)
        if current is not None and is_ours(current.decode("utf-8", "replace")):
            sh.run(f"rm -f {PIP_CONF}", quiet=True)
        sh.run(f"test ! -e {PIP_CONF_SAVED} || mv {PIP_CONF_SAVED} {PIP_CONF}", quiet=True)

    def collect_wheels(self, ctx: ScenarioContext) -> list[str]:
        """The wheels the device's pip built from sdists, into the rig's package cache,
        keyed by the environment its pip names (so only the same Python and platform get
        them). Never raises: a wheel not collected is only built again next time."""
        if ctx.package_index is None:
            return []
        sh = self.shell(ctx)
        found = sh.run(
            f"find {PIP_WHEELS} -type f -name '*.whl' 2>/dev/null", check=False, quiet=True
        )
        paths = [p for p in found.stdout.splitlines() if p.strip()]
        if not paths:
            return []
        agent = sh.run(f"{PYTHON} -c {quote(USER_AGENT_SCRIPT)}", check=False, quiet=True)
        kept = []
        for path in paths:
            data = sh.read_bytes(path)
            name = path.rsplit("/", 1)[-1]
            try:
                if data and ctx.package_index.keep_built(agent.stdout.strip(), name, data):
                    kept.append(name)
            except OSError as e:  # the flash host's disk: the wheel is only built again
                ctx.log(f"could not keep the wheel {name}: {e}")
        ctx.facts["built_wheels_collected"] = kept
        if kept:
            ctx.log(f"kept {len(kept)} wheel(s) the device built: {', '.join(kept)}")
        return kept

    def collect(self, ctx: ScenarioContext) -> None:
        """octoprint.log, the update console log and the facts into the results."""
        out = ctx.results
        out.mkdir(parents=True, exist_ok=True)
        try:
            sh = self.shell(ctx)
            for remote in (
                LOG,
                f"{BASEDIR}/logs/plugin_softwareupdate_console.log",
                f"{BASEDIR}/logs/serial.log",
            ):
                try:
                    data = sh.read_bytes(remote)
                except InfraError as e:
                    ctx.log(f"collect: {remote}: {e.message}")
                    continue
                if data is not None:
                    (out / remote.rsplit("/", 1)[1]).write_bytes(data)
            self.collect_wheels(ctx)
        except InfraError as e:
            ctx.log(f"collect: device not reachable: {e.message}")
        facts = {k: v for k, v in ctx.facts.items()}
        (out / "facts.json").write_text(json.dumps(facts, indent=2, default=str))
        self.close(ctx)
