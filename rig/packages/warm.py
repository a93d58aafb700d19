"""Warm the package cache: fetch requirements through the cache before a device asks.

pip resolves and downloads the requirements from the cache's own index, served
on loopback for the length of the download, so every file passes the same code
path a device's pip uses (fetched upstream, checked against its hashes, kept).
pip resolves for the flash host's Python and platform: the pure-Python files,
most of what a device installs, are the same ones; a platform wheel the device
needs and this host does not is fetched by the device's own first install.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rig.asgi import BackgroundServer
from rig.errors import InfraError
from rig.packages.serve import index_app
from rig.packages.settings import PackageSettings
from rig.procs import wait_unless


@dataclass
class Warmed:
    """What a warm-up fetched (file names pip downloaded through the cache)."""

    requirements: list[str]
    files: list[str] = field(default_factory=list)
    stopped: bool = False  # stopped before the end (a test job came first)
    seconds: float = 0.0

    def summary(self) -> str:
        if self.stopped:
            return f"stopped after {self.seconds:.0f}s ({', '.join(self.requirements)})"
        return (
            f"{len(self.files)} file(s) in the package cache for "
            f"{', '.join(self.requirements)} in {self.seconds:.0f}s"
        )


def _pip_env() -> dict[str, str]:
    """The environment without pip settings that would send pip anywhere but the cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def warm_cache(
    settings: PackageSettings,
    requirements: list[str],
    log_file: Path,
    *,
    stop: Callable[[], bool] = lambda: False,
    timeout: float = 1800.0,
) -> Warmed:
    """Download ``requirements`` (and their dependencies) through the cache at ``settings``.

    ``stop`` is asked twice a second; when it says so pip is stopped and the
    result says ``stopped`` (the files fetched so far stay in the cache)."""
    warmed = Warmed(list(requirements))
    if not requirements:
        return warmed
    start = time.monotonic()
    server = BackgroundServer(index_app(settings), "127.0.0.1", 0).start()
    try:
        with tempfile.TemporaryDirectory(prefix="rig-warm-") as dest, open(log_file, "ab") as out:
            argv = [
                sys.executable, "-m", "pip", "download", "--no-cache-dir", "--progress-bar",
                "off", "--index-url", f"http://127.0.0.1:{server.port}/simple/", "--dest",
                dest, "--", *requirements,
            ]  # fmt: skip
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_pip_env(),
                start_new_session=True,  # its build subprocesses stop with it
            )
            timed_out = False

            def stopping() -> bool:
                nonlocal timed_out
                timed_out = time.monotonic() - start > timeout
                return stop() or timed_out

            try:
                warmed.stopped = wait_unless(proc, stopping, grace=10)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            warmed.files = sorted(os.listdir(dest))
            warmed.seconds = time.monotonic() - start
            if timed_out:
                raise InfraError(
                    f"warming the package cache took longer than {timeout:.0f}s",
                    where=str(log_file),
                )
            if not warmed.stopped and proc.returncode != 0:
                tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
                raise InfraError(
                    f"pip could not download {' '.join(requirements)} through the package "
                    f"cache (exit {proc.returncode}): {' / '.join(tail)}",
                    where=str(log_file),
                    hint="check run.package_index in rig.yaml and that the upstream is reachable",
                )
    finally:
        server.stop()
    return warmed
