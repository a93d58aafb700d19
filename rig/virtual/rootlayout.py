"""Where a virtual Pi's files are, and who runs OctoPrint from where.

A card with a real userland (rig.virtual.userland) *is* the device: its root
partition is mounted and becomes the device's ``/``. A card from a recipe
without a userland (the test fixtures) runs on the host's userland, its state
laid out under ``<state>/virtual/devices/<name>/<card-key>/`` as the image and
its first boot would have made it: users, hostname, the OctoPrint venv (built
once per version, rig.virtual.venvs), OctoPi's ``config.yaml``. Either way the
board's view (model, throttle flags) is laid out for this boot's faults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rig.errors import InfraError
from rig.virtual.board import lay_out_board
from rig.virtual.faults import DeviceFaults
from rig.virtual.sandbox import PATH, pip_environment
from rig.virtual.venvs import base_venv, copy_venv

if TYPE_CHECKING:
    from rig.virtual.firstboot import BootOutcome

# what OctoPi ships in ~/.octoprint/config.yaml
OCTOPI_CONFIG = (
    "server:\n"
    "  commands:\n"
    "    serverRestartCommand: sudo service octoprint restart\n"
    "    systemRestartCommand: sudo shutdown -r now\n"
    "    systemShutdownCommand: sudo shutdown -h now\n"
    "plugins:\n"
    "  discovery:\n"
    "    publicPort: 80\n"
)
# the host directories a host-userland device's state is bound to, by device path
_STATE_DIRS = (("/home/", "home/"), ("/opt/octopi/", "opt/octopi/"), ("/etc/", "etc/"))


@dataclass
class Layout:
    """The device's files on the host: ``root`` is its mounted card (``card_rooted``) or
    its state directory; ``user`` runs OctoPrint from ``venv`` with ``basedir``."""

    root: Path
    card_rooted: bool = False
    user: str = "pi"
    home: str = "/home/pi"
    venv: str = "/home/pi/oprint"
    basedir: str = "/home/pi/.octoprint"
    homes: dict[str, str] = field(default_factory=dict)

    def host_path(self, inside: str) -> Path:
        """Where a path of the device lies on the host (a host-userland device: only its
        bound directories)."""
        if self.card_rooted:
            return self.root / inside.lstrip("/")
        for prefix, sub in _STATE_DIRS:
            if inside.startswith(prefix):
                return self.root / sub / inside[len(prefix) :]
        raise ValueError(f"{inside} is not on the card's writable state")

    def home_of(self, user: str) -> str:
        return self.homes.get(user) or f"/home/{user}"

    def environment(self, user: str) -> dict[str, str]:
        """A login's environment inside; pip reaches the index with the host's settings."""
        if self.card_rooted:
            from rig.virtual.hostpip import host_pip

            pip_env = host_pip().env  # its files are bound under /run/rig-host
        else:
            pip_env = pip_environment()
        return {
            "HOME": self.home_of(user),
            "USER": user,
            "LOGNAME": user,
            "SHELL": "/bin/bash",
            "PATH": PATH,
            "LANG": "C.UTF-8",
            **pip_env,
        }


def for_outcome(root: Path, outcome: BootOutcome, *, card_rooted: bool) -> Layout:
    """Who runs OctoPrint from where on the card this boot read."""
    users = outcome.users
    user = outcome.octoprint_user or next(iter(users), "pi")
    layout = Layout(root=root, card_rooted=card_rooted, user=user, homes=dict(outcome.homes))
    layout.home = layout.home_of(user)
    layout.basedir = outcome.basedir or f"{layout.home}/.octoprint"
    layout.venv = venv_inside(outcome, user)
    return layout


def venv_inside(outcome: BootOutcome, user: str) -> str:
    """0.18/1.0 keep the venv in the home; 1.1 in /opt/octopi/oprint, linked from ~/oprint."""
    if outcome.venv:
        return outcome.venv
    try:
        major_minor = tuple(int(x) for x in (outcome.generation or "").split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    return "/opt/octopi/oprint" if major_minor >= (1, 1) else f"/home/{user}/oprint"


def check_card_root(layout: Layout, faults: DeviceFaults, device: str) -> None:
    """The mounted card must hold its OctoPrint; then the board for this boot's faults."""
    venv = layout.host_path(layout.venv)
    if not (venv / "bin" / "octoprint").exists():
        raise InfraError(f"the card has no OctoPrint in {layout.venv}", where=f"device {device}")
    lay_out_board(layout.root, venv, layout.host_path(layout.basedir), faults)


def lay_out_state(
    layout: Layout,
    outcome: BootOutcome,
    faults: DeviceFaults,
    *,
    device: str,
    venv_cache: Path | None,
    say: Callable[[str], None],
) -> None:
    """A host-userland device's state, as the image and its first boot would have made it."""
    root, users, homes = layout.root, outcome.users, layout.homes
    home = layout.host_path(layout.home)
    etc = root / "etc"
    for d in (home, etc / "ssh", root / "opt" / "octopi", root / "var" / "log"):
        d.mkdir(parents=True, exist_ok=True)
    hostname = outcome.hostname or "octopi"
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    (etc / "octopi_version").write_text((outcome.generation or "") + "\n")
    passwd = ["root:x:0:0:root:/root:/bin/bash"]
    group = ["root:x:0:", "sudo:x:27:" + ",".join(users)]
    names = [layout.user] + [u for u in users if u != layout.user]
    for i, name in enumerate(names):
        passwd.append(f"{name}:x:{1000 + i}:{1000 + i}:,,,:{layout.home_of(name)}:/bin/bash")
        group.append(f"{name}:x:{1000 + i}:")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")
    for name, lines in outcome.ssh_keys.items():
        if lines:
            ssh_dir = layout.host_path(homes.get(name) or f"/home/{name}") / ".ssh"
            ssh_dir.mkdir(parents=True, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text("\n".join(lines) + "\n")
    venv_host = layout.host_path(layout.venv)
    if not (root / ".venv-ready").exists():
        from rig.product.octoprint.constraints import requirements_for

        version = outcome.octoprint_version or ""
        if not version:
            raise InfraError(
                "the card does not say which OctoPrint it has", where=f"device {device}"
            )
        reqs = list(outcome.octoprint_requirements) or requirements_for(version)
        base = base_venv(version, reqs, inside=layout.venv, cache=venv_cache, say=say)
        copy_venv(base, venv_host)
        if layout.venv != f"{layout.home}/oprint":
            link = home / "oprint"
            if not link.is_symlink():
                link.symlink_to(layout.venv)
        (root / ".venv-ready").touch()
    basedir = layout.host_path(layout.basedir)
    if not (basedir / "config.yaml").exists():
        basedir.mkdir(parents=True, exist_ok=True)
        (basedir / "config.yaml").write_text(OCTOPI_CONFIG)
    lay_out_board(root, venv_host, basedir, faults)
