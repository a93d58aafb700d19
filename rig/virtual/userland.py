"""Real Debian userlands for the virtual images, built once per machine and cached.

A virtual OctoPi runs its image's own Debian and Python: the root file system
is the Debian release the real image is based on (bullseye for OctoPi 1.0.x,
bookworm for 1.1.x, trixie for a Raspberry Pi OS Trixie image), fetched from the
Debian archive with ``mmdebstrap`` (minbase plus the recipe's packages), with the
image's first user created by the image's own ``useradd``, and OctoPrint
installed into the venv **by that userland's Python and pip**, as uid 1000, the
way OctoPi's build does (``python3 -m venv ~/oprint``, upgrade pip, install
OctoPrint). Real OctoPi images are Raspbian armhf; the virtual userland is the
same Debian release for the host's architecture (the Python minor version,
the Debian packages and their versions are the ones that matter for updates).

The tree is cached under ``<cache>/rig/userlands/<key>/`` where the key hashes
everything that goes into it (suite, packages, user, venv path, pip
requirements, this file). It is built in a temporary directory and renamed into
place under a lock, so concurrent builders get one tree. Builds need root
(mmdebstrap's root mode and real file owners); the package index is reached
with the host's pip settings (rig.virtual.hostpip), nothing of which is left in
the tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rig.errors import ConfigError, InfraError
from rig.virtual.hostpip import bwrap_binds, host_pip
from rig.virtual.sandbox import rootfs_args

EPOCH = 1_700_000_000
MIRROR = "http://deb.debian.org/debian"
SUITES = {"bullseye": "11", "bookworm": "12", "trixie": "13"}
# what every virtual image needs beyond minbase: the image's Python with venv and pip,
# sudo (OctoPi's pi may sudo), CA certificates, sftp-server (the rig copies files
# over SFTP; OctoPi ships openssh-server), setpriv/ps (util-linux, procps)
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "python3-pip",
    "sudo",
    "ca-certificates",
    "openssh-sftp-server",
    "procps",
)
BUILD_TIMEOUT = 1800.0
# part of every cache key: bump it when a build step below changes what a tree holds
FORMAT = 1


@dataclass(frozen=True)
class UserlandSpec:
    """Everything a userland tree is made of; its hash is the cache key."""

    suite: str
    packages: tuple[str, ...]
    user: str
    uid: int
    venv: str
    requirements: tuple[str, ...]

    def key(self) -> str:
        h = hashlib.sha256(json.dumps([FORMAT, asdict(self)], sort_keys=True).encode())
        return f"{self.suite}-{h.hexdigest()[:16]}"


def cache_root() -> Path:
    """The shared cache of this machine's user (``$XDG_CACHE_HOME/rig``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rig"


def spec_from_recipe(data: dict, where: str, requirements: list[str]) -> UserlandSpec | None:
    """The recipe's ``userland:`` section as a spec (None: the recipe has none)."""
    ul = data.get("userland")
    if not ul:
        return None
    suite = str(ul.get("suite", ""))
    if suite not in SUITES:
        known = ", ".join(SUITES)
        raise ConfigError(
            f"userland.suite {suite!r} is not a Debian release the archive serves ({known})",
            where=where,
        )
    extra = tuple(str(p) for p in ul.get("packages", []) or [])
    user = data["user"]
    return UserlandSpec(
        suite=suite,
        packages=tuple(sorted(set(BASE_PACKAGES + extra))),
        user=str(user["name"]),
        uid=int(user["uid"]),
        venv=str(data["octoprint"]["venv"]),
        requirements=tuple(requirements),
    )


def build_userland(spec: UserlandSpec, *, say: Callable[[str], None] = print) -> Path:
    """The cached userland tree for ``spec``, built on first use (locked, atomic)."""
    root = cache_root() / "userlands"
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.key()
    if (target / ".rig-complete").exists():
        return target
    _check_tools()
    with open(root / f".{spec.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".rig-complete").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        say(f"building the {spec.suite} userland with OctoPrint (once per machine): {target}")
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.suite}.build-") as tmp:
            tree = Path(tmp) / "root"
            log = Path(tmp) / "build.log"
            try:
                base = _debootstrapped(spec, root, log, say)
                _run(["cp", "-a", str(base), str(tree)], log, "copying the Debian tree")
                _install_octoprint(spec, tree, log)
                (tree / ".rig-complete").unlink()
                _fix_times(tree)
            except InfraError:
                shutil.copy(log, root / f"{spec.key()}.log")
                raise
            (tree / ".rig-complete").write_text(
                json.dumps({**asdict(spec), "seconds": round(time.monotonic() - t0, 1)}) + "\n"
            )
            shutil.copy(log, root / f"{spec.key()}.log")
            os.replace(tree, target)
        say(f"{spec.suite} userland built in {time.monotonic() - t0:.0f} s")
    return target


def _check_tools() -> None:
    if os.geteuid() != 0:
        raise InfraError(
            "building a virtual image's Debian userland needs root (mmdebstrap, real owners)",
            where="rig.virtual.userland",
            hint="run as root (CI and the virtual rig do), or use a machine where the "
            "images are already cached",
        )
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("bwrap", "bubblewrap")):
        if shutil.which(tool) is None:
            raise InfraError(
                f"building the virtual images' userlands needs `{tool}`, which is not installed",
                where="rig.virtual.userland",
                hint=f"apt-get install {package} (scripts/setup installs it)",
            )


def _run(cmd: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
                env=env,
            )
        except subprocess.TimeoutExpired as e:
            raise InfraError(f"{what} took over {BUILD_TIMEOUT:.0f} s", where=str(log)) from e
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-6:]
        raise InfraError(
            f"{what} failed: " + " | ".join(tail),
            where=str(log),
            hint="check that the Debian archive and the package index are reachable",
        )


def _debootstrapped(spec: UserlandSpec, root: Path, log: Path, say: Callable[[str], None]) -> Path:
    """The Debian tree alone (suite, packages, user), cached: recipes that differ only in
    their OctoPrint share it."""
    h = hashlib.sha256(
        json.dumps([FORMAT, spec.suite, spec.packages, spec.user, spec.uid]).encode()
    )
    target = root / f"debian-{spec.suite}-{h.hexdigest()[:16]}"
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".rig-complete").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(dir=root, prefix=f".debian-{spec.suite}.") as tmp:
            tree = Path(tmp) / "root"
            _debootstrap(spec, tree, log)
            (tree / ".rig-complete").write_text(f"{time.monotonic() - t0:.1f} s\n")
            os.replace(tree, target)
        say(f"Debian {spec.suite} fetched with mmdebstrap in {time.monotonic() - t0:.0f} s")
    return target


def _debootstrap(spec: UserlandSpec, tree: Path, log: Path) -> None:
    mirror = os.environ.get("RIG_DEBIAN_MIRROR", MIRROR)
    groups = "sudo,dialout,video,plugdev"
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(spec.packages),
        "--customize-hook="
        f'chroot "$1" useradd --create-home --uid {spec.uid} --user-group '
        f"--groups {groups} --shell /bin/bash {spec.user}",
        # no apt lists, no host resolver or hostname left behind
        '--customize-hook=rm -f "$1"/etc/resolv.conf "$1"/etc/hostname',
        '--customize-hook=touch "$1"/etc/resolv.conf',
        spec.suite,
        str(tree),
        mirror,
    ]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    _run(cmd, log, f"mmdebstrap {spec.suite}", env)


def _install_octoprint(spec: UserlandSpec, tree: Path, log: Path) -> None:
    """The image's own Python builds the venv and installs OctoPrint, as uid 1000."""
    pip = host_pip()
    venv = spec.venv
    home = f"/home/{spec.user}"
    parent = str(Path(venv).parent)
    if not (tree / parent.lstrip("/")).exists():  # /opt/octopi: made by the image build as root
        (tree / parent.lstrip("/")).mkdir(parents=True)
        os.chown(tree / parent.lstrip("/"), spec.uid, spec.uid)
    cmd = [
        "bwrap",
        "--unshare-pid",
        "--die-with-parent",
        *rootfs_args(tree),
        "--ro-bind",
        "/etc/resolv.conf",
        "/etc/resolv.conf",
    ]
    cmd += bwrap_binds(pip.binds)
    env = {"HOME": home, "USER": spec.user, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(pip.env)
    env["PIP_NO_CACHE_DIR"] = "1"  # nothing of the build's downloads on the card
    script = (
        'set -e; python3 -m venv "$1"; "$1/bin/pip" install -q --upgrade pip wheel; '
        'v="$1"; shift; "$v/bin/pip" install -q "$@"; "$v/bin/python" -m compileall -q "$v" || true'
    )
    cmd += [
        "/usr/bin/setpriv",
        "--reuid",
        str(spec.uid),
        "--regid",
        str(spec.uid),
        "--init-groups",
        "/usr/bin/env",
        "-i",
        f"--chdir={home}",
        *[f"{k}={v}" for k, v in env.items()],
        "/bin/sh",
        "-c",
        script,
        "build",
        venv,
        *spec.requirements,
    ]
    _run(cmd, log, f"installing {' '.join(spec.requirements)} with the {spec.suite} Python")


def _fix_times(tree: Path) -> None:
    """Every file at the same fixed time (pip's files carry the build's clock)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(tree, (EPOCH, EPOCH))


def describe(tree: Path, venv: str) -> dict[str, str]:
    """What the userland really is: Debian release and the two Pythons' versions."""
    osr = _os_release(tree / "etc" / "os-release")
    return {
        "debian": osr.get("VERSION_ID", ""),
        "pretty_name": osr.get("PRETTY_NAME", ""),
        "python": _python_of(tree, "usr/bin/python3"),
        "venv_python": _python_of(tree, venv.lstrip("/") + "/bin/python"),
    }


def _os_release(path: Path) -> dict[str, str]:
    if path.is_symlink():
        path = path.parent / os.readlink(path)
        if not path.exists():
            path = path.parents[1] / "usr" / "lib" / "os-release"
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v.strip().strip('"')
    return out


def _python_of(tree: Path, rel: str) -> str:
    """major.minor of a python in the tree, from the name its symlink chain ends at."""
    p = tree / rel
    for _ in range(10):
        if not p.is_symlink():
            break
        target = os.readlink(p)
        p = (tree / target.lstrip("/")) if target.startswith("/") else p.parent / target
    name = p.name
    return name.removeprefix("python") if name.startswith("python3.") else ""
