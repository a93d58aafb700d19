"""OctoPrint venvs for the virtual Pis: one cached base per version, a cheap copy per card.

Installing OctoPrint takes half a minute; a virtual Pi boots in seconds
because its venv is a hard-link copy (``cp -al``) of a cached base venv built
once per (OctoPrint version, Python, path inside the device).

Why hard links are safe here: pip never writes into an installed file; it
removes the old distribution's files (unlink) and writes new files (new
inodes), and Python writes ``.pyc`` files via rename. The cache's files are
additionally made read-only, so a tool inside a device that tried to write one
in place would fail with EACCES instead of corrupting every other device
(inside the sandbox nobody has CAP_DAC_OVERRIDE). ``tests/virtual`` checks the
cache is byte-identical after an upgrade inside a device.

The base venv is built *inside* a sandbox with its directory bound at the path
the devices will see (``/home/pi/oprint``), because venvs hard-code their own
path in scripts and ``pyvenv.cfg``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from rig.errors import InfraError
from rig.virtual.sandbox import Sandbox, pip_environment, require_sandbox

log = logging.getLogger(__name__)

PYTHON = "/usr/bin/python3"  # the host's system Python, visible inside the sandbox
BUILD_TIMEOUT = 900.0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rig" / "octoprint-venvs"


def python_version(python: str = PYTHON) -> str:
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def venv_key(version: str, inside: str, python: str = PYTHON) -> str:
    slug = hashlib.sha1(inside.encode()).hexdigest()[:8]
    return f"octoprint-{version}-py{python_version(python)}-{slug}"


def base_venv(
    version: str,
    requirements: list[str],
    *,
    inside: str = "/home/pi/oprint",
    cache: Path | None = None,
    say: Callable[[str], None] = log.info,
) -> Path:
    """The cached venv with ``requirements`` installed, built on first use (locked)."""
    require_sandbox()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = venv_key(version, inside)
    target = cache / key
    with open(cache / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".rig-complete").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        say(f"building OctoPrint {version} venv (once per version) in {target}")
        _build(target, requirements, inside, cache / f"{key}.log")
        for path in target.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)
        (target / ".rig-complete").write_text(" ".join(requirements) + "\n")
    return target


def _build(target: Path, requirements: list[str], inside: str, logfile: Path) -> None:
    etc = target.parent / ".build-etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\npi:x:1000:1000::/tmp:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\npi:x:1000:\n")
    box = Sandbox(
        name="venv-build", root=target, hostname="venv-build", mounts={inside: target, "/etc": etc}
    )
    pip_cache = Path.home() / ".cache" / "pip"
    args = box.bwrap_args()
    if pip_cache.is_dir():
        args += ["--bind", str(pip_cache), "/tmp/.cache/pip"]
    env = {"HOME": "/tmp", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **pip_environment()}
    script = (
        f'set -e; {PYTHON} -m venv "$1"; "$1/bin/pip" install -q --upgrade pip wheel; '
        f'shift; "{inside}/bin/pip" install "$@"'
    )
    cmd = [*args, "--clearenv"]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    cmd += ["/bin/sh", "-c", script, "build", inside, *requirements]
    with open(logfile, "wb") as out:
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise InfraError(
                f"building the OctoPrint venv took over {BUILD_TIMEOUT:.0f} s", where=str(target)
            ) from e
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-5:]
        raise InfraError(
            f"pip could not install {' '.join(requirements)}: " + " | ".join(tail),
            where=str(logfile),
            hint="check that the package index is reachable from this machine",
        )


def copy_venv(base: Path, dest: Path) -> None:
    """Give a device its own venv: hard links (instant), or a full copy across file systems."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["cp", "-al", str(base), str(dest)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        log.warning("hard links impossible (%s): copying the venv", proc.stderr.strip())
        shutil.copytree(base, dest, symlinks=True)
    (dest / ".rig-complete").unlink(missing_ok=True)
