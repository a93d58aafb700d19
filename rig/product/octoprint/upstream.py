"""``octoprint-e2e``: OctoPrint's own Playwright suite (Node) against the device.

From a checkout of OctoPrint (``tests/playwright``; ``npm ci`` is run when its
``node_modules`` is missing) we run ``playwright test`` with the environment the
suite expects against an existing server (``NO_SERVER=true``,
``PLAYWRIGHT_BASEURL``, ``OCTOPRINT_USERNAME/PASSWORD``), excluding the tests
that need their own server (``@isolated``, ``@csrf``). A small config of ours,
written next to theirs, extends it: only the Chromium project, launched with the
same executable and arguments as our own browser checks, no video (needs
Playwright's ffmpeg), junit output and traces into the scenario's results.

The checkout comes from ``$RIG_OCTOPRINT_CHECKOUT`` (or the profile's
``upstream_checkout`` option).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from rig.device.browser import launch_options
from rig.errors import ConfigError, InfraError, ProductError

CONFIG_NAME = ".rig-playwright.config.js"
CONFIG = """// written by rig: OctoPrint's config, Chromium only, our browser and outputs
const base = require("./playwright.config.js");
const {devices} = require("@playwright/test");
const launch = JSON.parse(process.env.RIG_LAUNCH_OPTIONS);
module.exports = {
    ...base,
    webServer: undefined,
    retries: 0,
    outputDir: process.env.RIG_E2E_OUTPUT,
    reporter: [["list"], ["junit", {outputFile: process.env.RIG_E2E_JUNIT}]],
    use: {...base.use, video: "off", trace: "on"},
    projects: [{name: "chromium", use: {...devices["Desktop Chrome"], launchOptions: launch}}]
};
"""


def suite_dir(checkout: str | os.PathLike[str] | None) -> Path:
    path = checkout or os.environ.get("RIG_OCTOPRINT_CHECKOUT")
    if not path:
        raise ConfigError(
            "octoprint-e2e needs a checkout of OctoPrint",
            where="checks: octoprint-e2e",
            hint="set $RIG_OCTOPRINT_CHECKOUT to a clone of OctoPrint/OctoPrint",
        )
    suite = Path(path) / "tests" / "playwright"
    if not (suite / "playwright.config.js").exists():
        raise ConfigError(f"{suite} has no playwright.config.js", where="$RIG_OCTOPRINT_CHECKOUT")
    return suite


def run_upstream(
    base_url: str,
    *,
    user: str,
    password: str,
    results: Path,
    checkout: str | os.PathLike[str] | None = None,
    log=None,
    grep: str | None = None,
    timeout: float = 1800,
) -> Path:
    """Run the suite; ProductError when a test fails. Returns the junit.xml path."""
    suite = suite_dir(checkout)
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise InfraError(
                f"OctoPrint's suite cannot start: {tool} is not installed",
                where="octoprint-e2e",
                hint="install Node.js and npm (Debian: apt install nodejs npm)",
            )
    if not (suite / "node_modules" / "@playwright" / "test").exists():
        npm = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=suite, capture_output=True, text=True
        )
        if npm.returncode != 0:
            said = (npm.stderr or npm.stdout).strip()[-2000:] or f"exit {npm.returncode}"
            raise InfraError(f"npm ci failed in {suite}:\n{said}", where="octoprint-e2e")
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    junit = results / "junit.xml"
    (suite / CONFIG_NAME).write_text(CONFIG)
    options = launch_options(headless=True)
    launch = {"args": options["args"]}
    if "executable_path" in options:
        launch["executablePath"] = options["executable_path"]
    env = {
        **os.environ,
        "NO_SERVER": "true",
        "PLAYWRIGHT_BASEURL": base_url.rstrip("/"),
        "OCTOPRINT_USERNAME": user,
        "OCTOPRINT_PASSWORD": password,
        "RIG_LAUNCH_OPTIONS": json.dumps(launch),
        "RIG_E2E_OUTPUT": str(results / "artifacts"),
        "RIG_E2E_JUNIT": str(junit),
    }
    env.pop("CI", None)
    cmd = [
        str(suite / "node_modules" / ".bin" / "playwright"),
        "test",
        "-c",
        CONFIG_NAME,
        "--grep-invert",
        "@isolated|@csrf",
    ]
    if grep:
        cmd += ["--grep", grep]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise InfraError(
            f"OctoPrint's suite did not finish in {timeout:.0f}s", where=base_url
        ) from e
    (results / "playwright.log").write_text(proc.stdout + proc.stderr)
    if log:
        for line in proc.stdout.splitlines()[-15:]:
            log(f"  octoprint-e2e | {line}")
        log(f"octoprint-e2e exit {proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode == 1 and junit.exists():
        failed = [line.strip() for line in proc.stdout.splitlines() if "✘" in line]
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-10:]
        raise ProductError(
            "OctoPrint's own e2e tests failed:\n  "
            + "\n  ".join(failed[:15] or tail or ["(it printed nothing)"]),
            where=f"{base_url} octoprint-e2e",
            hint=f"traces in {results / 'artifacts'}",
        )
    if proc.returncode != 0:
        said = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise InfraError(
            f"OctoPrint's suite could not run (exit {proc.returncode}):\n"
            + (said or "it printed nothing"),
            where=f"{base_url} octoprint-e2e",
        )
    return junit
