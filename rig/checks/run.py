"""A scenario's own check files, run inside `rig run` with the rig's pytest plugin.

The suite runs in a pytest subprocess (rig.checks.suite) with only the rig's plugin
loaded; the scenario's context reaches it in a file only the rig's user can read,
named by $RIG_CHECK_CONTEXT. junit.xml, pytest.log and the screenshot and trace of
each failed check land in the scenario's results under ``user-checks/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rig.checks.context import CONTEXT_ENV, from_scenario, handed_over
from rig.checks.suite import isolation_args, run_suite
from rig.product.profile import ScenarioContext

RESULTS = "user-checks"  # under the scenario's results directory


def check_root(files: Sequence[Path]) -> Path:
    """The files' common directory: pytest's rootdir and working directory, and the top
    of the conftest.py files that apply (the user's own, next to their checks)."""
    return Path(os.path.commonpath([Path(f).resolve().parent for f in files]))


def user_check_args(files: Sequence[Path]) -> list[str]:
    """pytest's arguments: the files, the rig's plugin and nothing the calling shell or
    machine adds (no ini file, no installed plugins, no conftest above the files)."""
    paths = [str(Path(f).resolve()) for f in files]
    return [*paths, *isolation_args(check_root(files)), "-p", "rig.checks.plugin", "-q", "-rfE"]


def run_user_checks(ctx: ScenarioContext, files: Sequence[Path], *, timeout: float = 900) -> Path:
    """Run the files against the scenario's device; returns their junit.xml.

    ProductError when a check failed; InfraError with the cause when the suite could not
    start (a file that does not import, no browser, the device's SSH refused)."""
    results = (ctx.results / RESULTS).absolute()
    context = from_scenario(ctx, results)
    secrets = (ctx.device.password, ctx.admin_password)
    with handed_over(context) as path:
        return run_suite(
            "user",
            user_check_args(files),
            results=results,
            where=f"{ctx.device.name} checks",
            env={CONTEXT_ENV: str(path)},
            secrets=secrets,
            log=ctx.log,
            timeout=timeout,
            cwd=check_root(files),
        )
