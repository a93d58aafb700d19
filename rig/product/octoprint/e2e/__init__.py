"""The smoke suite: pytest + Playwright against any OctoPrint URL.

Runnable on its own (``rig e2e URL``) and as a scenario check (``smoke``). Each
test leaves a screenshot and a Playwright trace in the results directory; the
junit.xml there is what the report merges.
"""

from __future__ import annotations

from pathlib import Path

from rig.checks.suite import isolation_args, run_suite

HERE = Path(__file__).resolve().parent


def smoke_command(
    base_url: str,
    *,
    user: str,
    results: Path,
    expect_version: str | None,
    headed: bool,
    keyword: str | None,
) -> list[str]:
    """The suite's pytest arguments: our conftest only, no rootdir or ini files."""
    cmd = [
        str(HERE / "test_smoke.py"),
        *isolation_args(HERE),
        "-q",
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
    """Run the suite in a pytest subprocess (rig.checks.suite). Returns junit.xml.

    ProductError when a test ran and failed; InfraError (with its cause in one line) when the
    suite could not run at all: pytest or Playwright missing, no browser, a usage error.
    """
    results = Path(results)
    args = smoke_command(
        base_url,
        user=user,
        results=results,
        expect_version=expect_version,
        headed=headed,
        keyword=keyword,
    )
    return run_suite(
        "smoke",
        args,
        results=results,
        where=f"{base_url} smoke",
        env={"RIG_OCTOPRINT_PASSWORD": password},
        secrets=(password,),
        log=log,
        timeout=timeout,
    )
