"""The smoke suite: pytest + Playwright against any OctoPrint URL.

Runnable on its own (``rig e2e URL``) and as a scenario check (``smoke``). Each
test leaves a screenshot and a Playwright trace in the results directory; the
junit.xml there is what the report merges.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rig.errors import InfraError, ProductError

HERE = Path(__file__).resolve().parent


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
    """Run the suite in a pytest subprocess; ProductError when a test fails. Returns junit.xml."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    junit = results / "junit.xml"
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
        f"--junitxml={junit}",
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
    env = {**os.environ, "RIG_OCTOPRINT_PASSWORD": password}
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise InfraError(f"smoke suite did not finish in {timeout:.0f}s", where=base_url) from e
    # the suite gets the password through its environment; its output must not carry it on
    proc.stdout, proc.stderr = (
        proc.stdout.replace(password, "***") if password else proc.stdout,
        proc.stderr.replace(password, "***") if password else proc.stderr,
    )
    (results / "pytest.log").write_text(proc.stdout + proc.stderr)
    if log:
        for line in proc.stdout.splitlines()[-20:]:
            log(f"  smoke | {line}")
        log(f"smoke suite exit {proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode == 1:
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise ProductError(
            "smoke checks failed:\n  " + "\n  ".join(failed or proc.stdout.splitlines()[-10:]),
            where=f"{base_url} smoke",
            hint=f"screenshots and traces in {results}",
        )
    if proc.returncode != 0:
        raise InfraError(
            f"smoke suite could not run (pytest exit {proc.returncode}):\n"
            + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:]),
            where=f"{base_url} smoke",
        )
    return junit
