"""The smoke suite: pytest + Playwright against any OctoPrint URL.

Runnable on its own (``rig e2e URL``) and as a scenario check (``smoke``). Each
test leaves a screenshot and a Playwright trace in the results directory; the
junit.xml there is what the report merges.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from rig.errors import InfraError, ProductError

HERE = Path(__file__).resolve().parent


#: pytest's exit code for "the suite could not start" (set by the suite's own conftest too)
CANNOT_START = 3


def _cause(output: str) -> str:
    """The one line that says why a sub-run could not start, else the last lines it printed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("Exit: ", "ModuleNotFoundError: ", "ImportError: ", "No module named "):
        for line in reversed(lines):
            if marker in line:
                return line[line.index(marker) :].strip(" !")
    tail = lines[-15:]
    return "\n".join(tail) if tail else "it printed nothing"


def smoke_command(
    base_url: str,
    *,
    user: str,
    results: Path,
    expect_version: str | None,
    headed: bool,
    keyword: str | None,
) -> list[str]:
    """The suite's pytest command line: our conftest only, no rootdir or ini files."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE / "test_smoke.py"),
        "-c",
        os.devnull,
        f"--rootdir={HERE}",
        f"--confcutdir={HERE}",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={results / 'junit.xml'}",
        f"--octoprint-url={base_url}",
        f"--octoprint-user={user}",
        f"--results-dir={results}",
    ]
    if expect_version:
        cmd.append(f"--expect-version={expect_version}")
    if headed:
        cmd.append("--headed")
    if keyword:
        cmd += ["-k", keyword]
    return cmd


def smoke_environment(password: str) -> dict[str, str]:
    """The caller's environment without what would change pytest under us: installed plugins
    load only when named (a user's pytest-playwright adds its own ``--headed``), and neither
    PYTEST_ADDOPTS nor PYTEST_PLUGINS from a developer's shell applies."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["RIG_OCTOPRINT_PASSWORD"] = password
    return env


def run_smoke(
    base_url: str,
    *,
    user: str,
    password: str,
    results: Path,
    expect_version: str | None = None,
    log=None,
    headed: bool = False,
    keyword: str | None = None,
    timeout: float = 900,
) -> Path:
    """Run the suite in a pytest subprocess. Returns junit.xml.

    ProductError when a test ran and failed; InfraError (with its cause in one line) when the
    suite could not run at all: pytest or Playwright missing, no browser, a usage error.
    """
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    junit = results / "junit.xml"
    where = f"{base_url} smoke"
    if importlib.util.find_spec("pytest") is None:
        raise InfraError(
            f"the smoke suite cannot start: pytest is not installed in {sys.prefix}",
            where=where,
            hint="reinstall the rig (pytest is one of its runtime dependencies)",
        )
    cmd = smoke_command(
        base_url,
        user=user,
        results=results,
        expect_version=expect_version,
        headed=headed,
        keyword=keyword,
    )
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=smoke_environment(password),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise InfraError(f"smoke suite did not finish in {timeout:.0f}s", where=where) from e
    output = proc.stdout + proc.stderr
    (results / "pytest.log").write_text(output)
    if log:
        for line in proc.stdout.splitlines()[-20:]:
            log(f"  smoke | {line}")
        log(f"smoke suite exit {proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode == 1 and junit.exists():
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise ProductError(
            "smoke checks failed:\n  " + "\n  ".join(failed or [_cause(output)]),
            where=where,
            hint=f"screenshots and traces in {results}",
        )
    if proc.returncode != 0:
        raise InfraError(
            f"smoke suite could not run (exit {proc.returncode}): {_cause(output)}",
            where=where,
            hint=f"the whole output is in {results / 'pytest.log'}",
        )
    return junit
