"""One sandbox per virtual Pi: its own files, its own processes, uid 1000 inside.

Choice: bubblewrap (``bwrap``) plus ``nsenter``. Why:

- OctoPrint refuses to run as root, and CI runs as root. ``bwrap --unshare-user
  --uid 1000`` gives a user namespace in which every process of the device is
  uid 1000 (the ``pi`` user of OctoPi) without adding a user to the host, and
  without any privilege inside: ``sudo`` is a shim, writes to ``/usr`` fail.
- ``--unshare-pid`` gives each device its own process tree; ``ps`` inside shows
  only that device. Killing the namespace's pid 1 makes the kernel SIGKILL every
  process in it at once, which is exactly a power cut (a half-done ``pip
  install`` stays half-done). ``--die-with-parent`` ties the tree to the
  supervisor, so a killed supervisor leaves no orphans.
- The root file system is a fresh tmpfs with the host's ``/usr`` read-only and
  the device's own state directory bound at the OctoPi paths (``/home/pi``,
  ``/etc``, ``/opt/octopi``), so device A cannot even name device B's files.
- No network namespace: a namespace per device would need veth pairs, routes
  and NAT to reach the package index, i.e. root-only plumbing that breaks in
  containers. Instead each device's servers bind to its own loopback address
  (127.0.42.1N); the price is that a device could connect to another's address.
- Commands of an SSH session and OctoPrint itself are started *into* the running
  namespaces with ``nsenter`` (as root on the host, entering the user namespace
  as uid 1000), so they share the device's process tree and die with it.

chroot alone isolates neither processes nor uids; containers (podman, docker)
are heavier, need daemons or images and are often absent in CI; systemd-nspawn
needs systemd as pid 1 of the host. bwrap is one small binary (Debian
``bubblewrap``, also on Raspberry Pi OS).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rig.errors import InfraError
from rig.procs import pid_alive
from rig.virtual.hostpip import NETWORK_ENV, bwrap_binds

if TYPE_CHECKING:
    from rig.virtual.pi3 import DeviceGroup

UID = 1000
GID = 1000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHIMS_DIR = Path(__file__).with_name("shims")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"

# host files a Debian userland needs to work (read-only inside the device's /etc)
HOST_ETC = (
    "alternatives",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "resolv.conf",
    "localtime",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
    "pip.conf",
    "xdg/pip",
)
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64")

_checked: bool | None = None


class _Spawner:
    """Starts sandboxes from one thread that lives as long as the process.

    ``--die-with-parent`` is PR_SET_PDEATHSIG, which fires when the *thread*
    that forked bwrap ends; a boot thread that started a sandbox and finished
    would otherwise power the device off behind our back.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], queue.Queue[object]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], object]) -> object:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="sandbox-spawner", daemon=True
                )
                self._thread.start()
        reply: queue.Queue[object] = queue.Queue()
        self._jobs.put((fn, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _loop(self) -> None:
        while True:
            fn, reply = self._jobs.get()
            try:
                reply.put(fn())
            except BaseException as e:
                reply.put(e)


_spawner = _Spawner()


def require_sandbox() -> None:
    """Fail with a clear message where this machine cannot run the device sandbox."""
    global _checked
    if _checked:
        return
    for tool, package in (("bwrap", "bubblewrap"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            raise InfraError(
                f"the virtual rig needs `{tool}`, which is not installed",
                where="virtual rig sandbox",
                hint=f"apt-get install {package}",
            )
    if not Path(SFTP_SERVER).exists():  # the rig copies files to devices over SFTP
        raise InfraError(
            f"the virtual Pis serve SFTP with OpenSSH's {SFTP_SERVER}, which is not installed",
            where="virtual rig sandbox",
            hint="apt-get install openssh-sftp-server",
        )
    cmd = [
        "bwrap",
        "--unshare-user",
        "--uid",
        str(UID),
        "--gid",
        str(GID),
        "--unshare-pid",
        "--ro-bind",
        "/usr",
        "/usr",
        *_top_level_args(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "/usr/bin/id",
        "-u",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InfraError(f"bwrap did not run: {e}", where="virtual rig sandbox") from e
    if proc.returncode != 0 or proc.stdout.strip() != str(UID):
        raise InfraError(
            "this machine cannot create the user and pid namespaces the virtual Pis need: "
            + (proc.stderr.strip() or proc.stdout.strip()),
            where="virtual rig sandbox",
            hint="run as root, or enable unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, "
            "kernel.apparmor_restrict_unprivileged_userns=0); in a container, "
            "allow unshare (e.g. docker --privileged or a seccomp profile permitting it)",
        )
    _checked = True


def _top_level_args() -> list[str]:
    """/bin, /lib ... as the host has them: symlinks into /usr, or read-only dirs."""
    args: list[str] = []
    for name in TOP_LEVEL_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def shims_target() -> str:
    """Where the OctoPi command shims appear: first on the Debian PATH."""
    return "/usr/local/sbin" if Path("/usr/local/sbin").is_dir() else "/.rig/bin"


def pip_environment() -> dict[str, str]:
    """The host's pip and network settings (index, certificate bundle, proxies), so pip
    and OctoPrint inside reach the package index exactly as the host does."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env.update({k: os.environ[k] for k in NETWORK_ENV if k in os.environ})
    return env


def _pip_paths() -> list[str]:
    """Local directories the host's pip settings name (find-links dirs), to bind read-only."""
    paths: list[str] = []
    for key, value in pip_environment().items():
        if not key.startswith("PIP_"):
            continue
        for part in value.replace(",", " ").split():
            part = part.removeprefix("file://")
            if part.startswith("/") and Path(part).is_dir() and not part.startswith("/usr"):
                paths.append(part)
    return paths


@dataclass
class Sandbox:
    """The namespaces of one running device. ``root`` is its state directory on the host.

    ``mounts`` maps paths inside (``/home/pi``) to directories under ``root``;
    they are bound read-write, except ``/etc`` which is read-only as on a Pi
    (only root writes there, and nobody is root inside).
    """

    name: str
    root: Path
    hostname: str
    mounts: dict[str, Path] = field(default_factory=dict)
    readonly: tuple[str, ...] = ("/etc",)
    share_net: bool = True
    # the card's mounted root file system: the device's own userland becomes "/"
    # (no user namespace: the card's owners are real, processes run as uid 1000)
    rootfs: Path | None = None
    host_binds: dict[str, str] = field(default_factory=dict)  # host path -> inside
    # the pi3 profile's cgroup (rig.virtual.pi3): every process of the device starts in it
    cgroup: DeviceGroup | None = None
    pid: int | None = None  # host pid of the namespace's pid 1
    _proc: subprocess.Popen[bytes] | None = None
    _init_group: str = ""

    def bwrap_args(self) -> list[str]:
        if self.rootfs is not None:
            return self._rootfs_args(self.rootfs)
        args = [
            "bwrap",
            "--unshare-user",
            "--uid",
            str(UID),
            "--gid",
            str(GID),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            self.hostname,
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
            *_top_level_args(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--dir",
            "/run",
        ]
        for inside, host in sorted(self.mounts.items()):
            flag = "--ro-bind" if inside in self.readonly else "--bind"
            args += [flag, str(host), inside]
        etc = self.mounts.get("/etc")
        if etc is not None:
            for name in HOST_ETC:
                host = Path("/etc") / name
                if host.exists():
                    _placeholder(etc / name, host.is_dir() and not host.is_symlink())
                    args += ["--ro-bind", str(host), f"/etc/{name}"]
        for path in _pip_paths():
            args += ["--ro-bind", path, path]
        args += ["--ro-bind", str(SHIMS_DIR), shims_target()]
        return args

    def _rootfs_args(self, rootfs: Path) -> list[str]:
        """The card's root as "/": only the kernel's file systems and the bindings
        listed here are not the card's; every mount point used exists on a Debian root
        or lies on a tmpfs, so starting the device writes nothing to its card."""
        args = [
            "bwrap",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            self.hostname,
            "--die-with-parent",
            *rootfs_args(rootfs),
        ]
        if (rootfs / "etc" / "resolv.conf").exists() and Path("/etc/resolv.conf").exists():
            # what DHCP would tell the Pi: the network's name server
            args += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        args += bwrap_binds(self.host_binds)
        for inside, host in sorted(self.mounts.items()):
            args += ["--perms", "0755", "--dir", inside] if inside.startswith("/run/") else []
            args += ["--bind", str(host), inside]
        args += ["--ro-bind", str(SHIMS_DIR), "/usr/local/sbin"]
        return args

    def start(self, init: list[str] | None = None) -> int:
        """Start the namespaces with a do-nothing pid 1; return its host pid."""
        require_sandbox()
        init = init or ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600; done"]
        read_fd, write_fd = os.pipe()
        cmd = [*self.bwrap_args(), "--info-fd", str(write_fd), "--clearenv", *init]
        if self.cgroup is not None:
            self._init_group = self.cgroup.leaf("init")
            cmd = self.cgroup.argv(self._init_group, cmd)

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd,
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )

        try:
            self._proc = _spawner.run(spawn)  # type: ignore[assignment]
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd, "rb") as info:
            raw = info.read()
        try:
            self.pid = int(json.loads(raw)["child-pid"])
        except (ValueError, KeyError) as e:
            err = b""
            with contextlib.suppress(Exception):
                _, err = self._proc.communicate(timeout=5)
            raise InfraError(
                f"sandbox did not start: {err.decode(errors='replace').strip()}",
                where=f"device {self.name}",
            ) from e
        # bwrap reports the pid before it has written the uid/gid maps (or, on a
        # card root, before it has set up the mounts: the shims are bound last)
        deadline = time.monotonic() + 10
        while self.rootfs is not None and time.monotonic() < deadline:
            if Path(f"/proc/{self.pid}/root/usr/local/sbin/rig-control").exists():
                return self.pid
            time.sleep(0.005)
        while self.rootfs is None and time.monotonic() < deadline:
            try:
                maps = Path(f"/proc/{self.pid}/uid_map").read_text()
                maps += Path(f"/proc/{self.pid}/gid_map").read_text()
            except OSError:
                maps = ""
            if maps.count(str(UID)) >= 2 and Path(f"/proc/{self.pid}/exe").exists():
                break
            time.sleep(0.005)
        return self.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(
        self, argv: list[str], *, cwd: str = "/", env: dict[str, str], group: str | None = None
    ) -> list[str]:
        """A host command line that runs ``argv`` inside the running sandbox as uid 1000,
        in the device's cgroup ``group`` (a leaf from ``cgroup.leaf``; default: init's)
        before it runs anything."""
        if self.pid is None:
            raise InfraError("sandbox is not running", where=f"device {self.name}")
        cmd = self._command(argv, cwd=cwd, env=env)
        if self.cgroup is None:
            return cmd
        return self.cgroup.argv(group or self._init_group, cmd)

    def _command(self, argv: list[str], *, cwd: str, env: dict[str, str]) -> list[str]:
        envargs = [f"{k}={v}" for k, v in env.items()]
        if self.rootfs is not None:
            # the card's own setpriv: uid 1000 with the groups /etc/group on the card gives
            return [
                "nsenter",
                "-t",
                str(self.pid),
                "-m",
                "-p",
                "-u",
                "-i",
                "-r",
                "--",
                "/usr/bin/setpriv",
                "--reuid",
                str(UID),
                "--regid",
                str(GID),
                "--init-groups",
                "/usr/bin/env",
                "-i",
                f"--chdir={cwd}",
                *envargs,
                *argv,
            ]
        return [
            "nsenter",
            "-t",
            str(self.pid),
            "-U",
            "-m",
            "-p",
            "-u",
            "-i",
            "-r",
            "-S",
            str(UID),
            "-G",
            str(GID),
            "--",
            "/usr/bin/env",
            "-i",
            f"--chdir={cwd}",  # inside: nsenter's --wd would resolve on the host
            *envargs,
            *argv,
        ]

    def kill(self) -> None:
        """Power cut: SIGKILL pid 1 of the namespace; the kernel kills the rest at once."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self._proc is not None:
            # let the outer bwrap reap pid 1 and exit; killing it first would leave
            # a zombie for the host's init to collect
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
        # the namespace is gone once its last process is reaped
        deadline = time.monotonic() + 5
        while self.pid is not None and pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.pid = None
        self._proc = None


def _placeholder(path: Path, is_dir: bool) -> None:
    """A mount point for a host file inside the device's own /etc (made on the host side)."""
    if path.exists() or path.is_symlink():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        path.mkdir()
    else:
        path.touch()


def rootfs_args(tree: Path) -> list[str]:
    """bwrap arguments that make ``tree`` the root: its own /proc, /dev, /tmp and /run."""
    return [
        "--bind",
        str(tree),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--perms",
        "0755",
        "--tmpfs",
        "/run",
    ]
