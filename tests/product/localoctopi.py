"""A real OctoPrint on 127.0.0.1 laid out like OctoPi, for the profile's tests.

- venvs per version are built once with ``requirements_for(version)`` and cached
  under ~/.cache/rig/test-venvs/ (OctoPrint refuses root, so everything runs in a
  user namespace as uid 1000 via bwrap; the files stay ours outside);
- each device gets its own home: ``~/oprint`` (a copy of the cached venv, so the
  update really rewrites it), ``~/.octoprint``, and ``/etc/octopi_version`` bound in;
- ``sudo`` and ``service octoprint start|stop|restart`` are small scripts talking to
  a supervisor loop, so OctoPrint's restart command really restarts it.

The profile reaches this device through `LocalShell`, running the same command
lines it runs over SSH on a real OctoPi.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from rig.device.shell import LocalShell
from rig.product.octoprint.constraints import requirements_for

PYTHON = shutil.which("python3.11") or sys.executable
CACHE = Path(os.environ.get("RIG_TEST_VENVS", Path.home() / ".cache/rig/test-venvs"))
BWRAP = ["bwrap", "--unshare-user", "--uid", "1000", "--gid", "1000", "--bind", "/", "/"]
BWRAP += ["--dev", "/dev", "--proc", "/proc"]


def _real_python() -> str:
    out = subprocess.run(
        [PYTHON, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True
    )
    return out.stdout.strip() or PYTHON


def cached_venv(version: str) -> Path:
    """A venv with OctoPrint ``version`` (built once; a lock keeps parallel runs apart)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    pyver = (
        "py"
        + subprocess.run(
            [PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    target = CACHE / f"octoprint-{version}-{pyver}"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".rig-complete").exists():
            return target
        tmp = target.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([_real_python(), "-m", "venv", str(tmp)], check=True)
        reqs = requirements_for(version)
        subprocess.run([str(tmp / "bin/python"), "-m", "pip", "install", "-q", *reqs], check=True)
        (tmp / ".rig-complete").write_text(" ".join(reqs))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SUDO = """#!/bin/sh
exec "$@"
"""

SERVICE = """#!/bin/bash
# service octoprint start|stop|restart, as on OctoPi, driving the supervisor
d="$HOME/.rig-service"
pid=$(cat "$d/pid" 2>/dev/null)
stop_it() {
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}
case "$2" in
  stop) touch "$d/stopped"; stop_it ;;
  start) rm -f "$d/stopped" ;;
  restart) touch "$d/stopped"; stop_it; rm -f "$d/stopped" ;;
  status) [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null ;;
  *) echo "usage: service octoprint start|stop|restart" >&2; exit 2 ;;
esac
"""

SUPERVISOR = """#!/bin/bash
# the octoprint.service of this test device: restart OctoPrint whenever it exits
d="$HOME/.rig-service"
while [ ! -e "$d/exit" ]; do
  if [ -e "$d/stopped" ]; then sleep 0.1; continue; fi
  "$HOME/oprint/bin/python" -m octoprint serve --host 127.0.0.1 --port "$PORT" \\
      >>"$d/console.log" 2>&1 &
  echo $! > "$d/pid"
  wait $!
  rm -f "$d/pid"
done
"""


class LocalOctoPi:
    """One test device: a home directory, a supervisor, a shell."""

    def __init__(self, root: Path, version: str, *, octopi_version: str = "1.0.0") -> None:
        self.home = root / "home"
        self.version = version
        self.port = free_port()
        self.home.mkdir(parents=True)
        src = cached_venv(version)
        subprocess.run(["cp", "-a", str(src), str(self.home / "oprint")], check=True)
        self.bin = self.home / ".rig-bin"
        self.bin.mkdir()
        for name, text in (("sudo", SUDO), ("service", SERVICE), ("supervisor", SUPERVISOR)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        (self.home / ".rig-service").mkdir()
        (self.home / ".rig-service" / "stopped").touch()  # like a service before first start
        (root / "octopi_version").write_text(octopi_version + "\n")
        self.wrapper = [*BWRAP, "--ro-bind", str(root / "octopi_version"), "/etc/octopi_version"]
        self.env = {
            "HOME": str(self.home),
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "PORT": str(self.port),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "LC_ALL": "C.UTF-8",
        }
        self._supervisor: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shell(self, log=None) -> LocalShell:
        return LocalShell(
            self.home, name="local-octopi", log=log, wrapper=self.wrapper, env=self.env
        )

    def boot(self) -> None:
        """Start the supervisor (the 'service manager'); OctoPrint starts with `service start`."""
        self._supervisor = subprocess.Popen(
            [*self.wrapper, str(self.bin / "supervisor")],
            env={**os.environ, **self.env},
            start_new_session=True,
        )

    def start_octoprint(self) -> None:
        (self.home / ".rig-service" / "stopped").unlink(missing_ok=True)

    def shutdown(self) -> None:
        d = self.home / ".rig-service"
        (d / "exit").touch()
        (d / "stopped").touch()
        pid = (d / "pid").read_text().strip() if (d / "pid").exists() else ""
        if pid:
            try:
                os.kill(int(pid), 15)
            except (ProcessLookupError, ValueError):
                pass
        if self._supervisor:
            try:
                self._supervisor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._supervisor.pid, 9)
                self._supervisor.wait()
        if pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(int(pid), 0)
                except (ProcessLookupError, ValueError):
                    break
                time.sleep(0.1)
