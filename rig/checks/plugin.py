"""The rig's pytest plugin: fixtures for the device under test, in a run and standalone.

Installed with the rig as a ``pytest11`` entry point (and loadable with
``-p rig.checks.plugin``). A session that names no device is left alone: the
options exist, nothing is read, nothing is imported beyond this module, and the
fixtures skip saying how to name a device (as labgrid's ``env`` fixture does
without ``--lg-env``).

The device comes from, in this order: ``--rig-device NAME`` (rig.yaml found as
`rig` finds it, or ``--rig-config FILE``), else the context file a `rig run`
scenario hands its user checks (``$RIG_CHECK_CONTEXT``).

Fixtures: ``rig_device`` (name, host, ports), ``base_url``, ``ssh`` (a shell on the
device over the rig's own SSH client), ``credentials``, ``page`` (a Playwright page
on the rig's Chromium; screenshot and trace kept when the test fails), ``scenario``
and ``facts``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from rig.checks.context import CONTEXT_ENV, CheckContext

CANNOT_START = 3  # the exit code rig.checks.suite reads as "could not start"
CONTEXT = pytest.StashKey["CheckContext | None"]()
REPORT = pytest.StashKey[dict[str, pytest.TestReport]]()
NO_DEVICE = (
    "no device under test: pass --rig-device NAME (a device of rig.yaml), "
    "or list this file in a scenario's checks and `rig run` it"
)

log = logging.getLogger("rig.checks")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rig", "the rig's device under test")
    group.addoption(
        "--rig-device",
        metavar="NAME",
        help="run the checks against this device of rig.yaml",
    )
    group.addoption(
        "--rig-config",
        metavar="FILE",
        help="rig.yaml to read (default: $RIG_CONFIG, ./rig.yaml, ~/.config/rig/rig.yaml)",
    )
    group.addoption(
        "--rig-results",
        metavar="DIR",
        default="rig-results",
        help="screenshots and traces of failed checks (standalone; default: rig-results)",
    )
    group.addoption("--rig-headed", action="store_true", help="show the browser")


def _load(config: pytest.Config) -> CheckContext | None:
    device = config.getoption("--rig-device")
    if device:
        from rig.checks.context import from_config
        from rig.config import load_config
        from rig.errors import ConfigError

        try:
            rig = load_config(config.getoption("--rig-config"))
            return from_config(rig, device, Path(config.getoption("--rig-results")).absolute())
        except ConfigError as e:
            raise pytest.UsageError(f"--rig-device {device}: {e}") from None
    handed = os.environ.get(CONTEXT_ENV)
    if handed:
        from rig.checks.context import read_handed_over
        from rig.errors import ConfigError

        try:
            return read_handed_over(Path(handed))
        except ConfigError as e:
            raise pytest.UsageError(str(e)) from None
    return None


def pytest_configure(config: pytest.Config) -> None:
    context = _load(config)
    config.stash[CONTEXT] = context
    if context is not None and config.pluginmanager.has_plugin("playwright"):
        # pytest-playwright defines `page` as well; which one a test gets depends on the order
        # the plugins were installed in
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                "pytest-playwright is loaded too and also defines `page`: run with "
                "-p no:playwright to get the rig's page on the device under test"
            ),
            stacklevel=2,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the test, so `page` knows at teardown whether it failed."""
    report = yield
    item.stash.setdefault(REPORT, {})[report.when] = report
    return report


def _context(request: pytest.FixtureRequest) -> CheckContext:
    context = request.config.stash.get(CONTEXT, None)
    if context is None:
        pytest.skip(NO_DEVICE)
    return context


@pytest.fixture(scope="session")
def rig_device(request: pytest.FixtureRequest, record_testsuite_property) -> Any:
    """The device under test: ``name``, ``host``, ``ssh_port``, ``http_port``, ``base_url``."""
    context = _context(request)
    record_testsuite_property("rig_device", context.device.name)
    record_testsuite_property("rig_host", context.device.host)
    if context.scenario.id:
        record_testsuite_property("rig_scenario", context.scenario.id)
    return context.device


@pytest.fixture(scope="session")
def base_url(rig_device) -> str:
    """The device's web address, e.g. ``http://127.0.42.11:8080``."""
    return rig_device.base_url


@pytest.fixture(scope="session")
def credentials(request: pytest.FixtureRequest, rig_device) -> Any:
    """``user``/``password`` (SSH, the device user) and ``admin_user``/``admin_password``
    (the product's admin; None standalone when rig.yaml sets none)."""
    return _context(request).credentials


@pytest.fixture(scope="session")
def scenario(request: pytest.FixtureRequest, rig_device) -> Any:
    """The scenario the check runs in (id, product, target_version, ...)."""
    return _context(request).scenario


@pytest.fixture
def facts(request: pytest.FixtureRequest, rig_device) -> dict[str, Any]:
    """What the run found out so far (versions, boot time, ...); a copy per test."""
    return dict(_context(request).facts)


@pytest.fixture(scope="session")
def ssh(rig_device, credentials):
    """A shell on the device through the rig's SSH client (rig.device.ssh.SSHShell):
    ``ssh.run("cmd")`` (raises on a non-zero exit unless ``check=False``),
    ``ssh.put_text(path, text)``, ``ssh.read_bytes(path)``."""
    from rig.device.ssh import SSHShell
    from rig.errors import InfraError

    shell = SSHShell(
        rig_device.host,
        port=rig_device.ssh_port,
        user=credentials.user,
        password=credentials.password,
        key_filename=credentials.ssh_key,
        host_keys=credentials.host_keys,
        name=rig_device.name,
        log=lambda message, **_: log.info(message),
    )
    try:
        shell.connect(timeout=30)
    except InfraError as e:
        # the device is not reachable: the rig's problem, not the checks' failure
        pytest.exit(f"ssh fixture: {e}".replace("\n", " "), returncode=CANNOT_START)
    yield shell
    shell.close()


@pytest.fixture(scope="session")
def _rig_browser(request: pytest.FixtureRequest):
    from playwright.sync_api import sync_playwright

    from rig.device.browser import launch_chromium
    from rig.errors import InfraError

    context = _context(request)
    headed = context.headed or request.config.getoption("--rig-headed")
    with sync_playwright() as p:
        try:
            browser = launch_chromium(p, headless=not headed)
        except InfraError as e:
            pytest.exit(str(e).replace("\n", " "), returncode=CANNOT_START)
        yield browser
        browser.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, _rig_browser, base_url: str):
    """A fresh browser context per test with ``base_url`` set (``page.goto("/")``), traced;
    when the test fails, its screenshot and trace go to the results directory."""
    results = _context(request).results / re.sub(r"[^\w.-]+", "_", request.node.name)
    context = _rig_browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.tracing.start(screenshots=True, snapshots=True, sources=False)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        reports = request.node.stash.get(REPORT, {})
        failed = any(r.failed for r in reports.values())
        try:
            if failed:
                results.mkdir(parents=True, exist_ok=True)
                pg.screenshot(path=str(results / "screenshot.png"))
        finally:
            context.tracing.stop(path=str(results / "trace.zip") if failed else None)
            context.close()
