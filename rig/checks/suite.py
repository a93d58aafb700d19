"""Run a pytest suite in a subprocess and turn its end into the rig's verdict.

Shared by the built-in browser checks (the OctoPrint smoke suite) and the user's own
check files: the suite runs in its own interpreter with only the plugins it names
(a developer's installed plugins, PYTEST_ADDOPTS and ini files stay out), writes its
junit.xml and pytest.log into the check's results directory, and its end maps to the
failure taxonomy: a test that ran and failed is a product failure; a suite that could
not start (pytest missing, no browser, a usage or collection error) is an
infrastructure error whose message names the one line that says why.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rig.errors import InfraError, ProductError

#: pytest's exit code a suite's own conftest uses for "the suite could not start"
CANNOT_START = 3

_CAUSE_MARKERS = ("Exit: ", "ModuleNotFoundError: ", "ImportError: ", "No module named ")


def cause(output: str) -> str:
    """The one line that says why a sub-run could not start, else the last lines it printed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in _CAUSE_MARKERS:
        for line in reversed(lines):
            if marker in line:
                return line[line.index(marker) :].strip(" !")
    tail = lines[-15:]
    return "\n".join(tail) if tail else "it printed nothing"


def isolation_args(rootdir: Path) -> list[str]:
    """pytest arguments that keep the caller's files out: no ini file, no rootdir search,
    no conftest above ``rootdir``, no cache directory written next to the suite."""
    return [
        "-c",
        os.devnull,
        f"--rootdir={rootdir}",
        f"--confcutdir={rootdir}",
        "-p",
        "no:cacheprovider",
    ]


def suite_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without what would change pytest under us: installed plugins
    load only when named (a user's pytest-playwright adds its own ``--headed``), and neither
    PYTEST_ADDOPTS nor PYTEST_PLUGINS from a developer's shell applies."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.update(extra or {})
    return env


def _masked(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def run_suite(
    label: str,
    args: Sequence[str],
    *,
    results: Path,
    where: str,
    env: dict[str, str] | None = None,
    secrets: Iterable[str] = (),
    log: Callable[..., None] | None = None,
    timeout: float = 900,
    cwd: Path | None = None,
) -> Path:
    """Run ``python -m pytest ARGS --junitxml=RESULTS/junit.xml``; returns junit.xml.

    ``label`` names the checks in messages and log lines ("smoke", "user"); ``cwd`` is
    where pytest runs (its summary names tests relative to it);
    ``secrets`` are masked in pytest.log, the log and every message. ProductError when
    a test ran and failed; InfraError (with its cause) when the suite could not run.
    """
    results = Path(results).absolute()
    results.mkdir(parents=True, exist_ok=True)
    junit = results / "junit.xml"
    secrets = tuple(s for s in secrets if s)
    if importlib.util.find_spec("pytest") is None:
        raise InfraError(
            f"the {label} checks cannot start: pytest is not installed in {sys.prefix}",
            where=where,
            hint="reinstall the rig (pytest is one of its runtime dependencies)",
        )
    cmd = [sys.executable, "-m", "pytest", *args, f"--junitxml={junit}"]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=suite_environment(env),
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as e:
        raise InfraError(f"the {label} checks did not finish in {timeout:.0f}s", where=where) from e
    # a suite may get a password through its environment; its output must not carry it on
    stdout, stderr = _masked(proc.stdout, secrets), _masked(proc.stderr, secrets)
    output = stdout + stderr
    (results / "pytest.log").write_text(output)
    if log:
        for line in stdout.splitlines()[-20:]:
            log(f"  {label} | {line}")
        log(f"{label} checks: pytest exit {proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode == 1 and junit.exists():
        failed = [line for line in stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise ProductError(
            f"{label} checks failed:\n  " + "\n  ".join(failed or [cause(output)]),
            where=where,
            hint=f"screenshots and traces in {results}",
        )
    if proc.returncode != 0:
        raise InfraError(
            f"the {label} checks could not run (exit {proc.returncode}): {cause(output)}",
            where=where,
            hint=f"the whole output is in {results / 'pytest.log'}",
        )
    return junit
