"""Install the rig's host side: the `rig` user and group, udev rules, sg, the unit, config.

Idempotent: every step first looks whether the host already has what it would make,
and says ``ok`` instead of doing it again. ``--dry-run`` prints every change and makes
none; ``--root DIR`` installs into a throwaway root (users through ``useradd --root``,
files below DIR, nothing reloaded). Never overwrites a config or credentials that exist.

Runs with the standard library and PyYAML only, so scripts/install-flash-host can call it
before the rig's own environment exists (``python3 -m rig.host.install``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rig.errors import EXIT_OK
from rig.host import (
    CONFIG,
    CREDENTIALS,
    GROUP,
    HOME,
    MODULES,
    RULES,
    SHIPPED,
    UNIT,
    USER,
)


@dataclass
class Step:
    """One change to the host: what it is, and how to make it (None: already there)."""

    what: str
    make: Callable[[], None] | None


def account_entries(path: Path) -> dict[str, list[str]]:
    """name -> fields of /etc/passwd or /etc/group under a root."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {f[0]: f for f in (line.split(":") for line in lines) if f and f[0]}


def group_members(root: Path, group: str) -> set[str]:
    fields = account_entries(root / "etc/group").get(group)
    return {m for m in fields[3].split(",") if m} if fields and len(fields) > 3 else set()


def _run(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
            raise SystemExit(f"install-flash-host: {' '.join(argv)} failed: {said}")

    return run


def _write(path: Path, text: str, mode: int) -> Callable[[], None]:
    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".rig-new")
        tmp.write_text(text)
        tmp.chmod(mode)
        os.replace(tmp, path)

    return write


def _file(root: Path, rel: str, text: str, mode: int = 0o644, *, keep: bool = False) -> Step:
    """Install ``text`` at ``/rel``; with ``keep`` an existing file is the user's and stays."""
    path = root / rel
    if path.exists():
        if keep:
            return Step(f"ok      /{rel} (exists: kept as it is)", None)
        if path.read_text() == text:
            return Step(f"ok      /{rel}", None)
        return Step(f"update  /{rel}", _write(path, text, mode))
    return Step(f"create  /{rel}", _write(path, text, mode))


def _directory(root: Path, rel: str, mode: int) -> Step:
    path = root / rel
    if path.is_dir():
        if path.stat().st_mode & 0o777 == mode:
            return Step(f"ok      /{rel}/", None)
        return Step(f"chmod   /{rel}/ {mode:o}", lambda: path.chmod(mode))

    def make() -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)

    return Step(f"create  /{rel}/ (mode {mode:o})", make)


def devices_of(config_text: str) -> dict:
    import yaml

    data = yaml.safe_load(config_text) or {}
    devices = data.get("devices") if isinstance(data, dict) else None
    return devices if isinstance(devices, dict) else {}


def plan(root: Path, *, login_user: str | None = None) -> list[Step]:
    """Every step of an install into ``root``, each either needed or already done."""
    from rig.host.rules import render

    live = root == Path("/")
    chroot = [] if live else ["--root", str(root)]
    steps: list[Step] = []

    groups, users = account_entries(root / "etc/group"), account_entries(root / "etc/passwd")
    if GROUP in groups:
        steps.append(Step(f"ok      group {GROUP}", None))
    else:
        steps.append(
            Step(f"create  system group {GROUP}", _run(["groupadd", *chroot, "--system", GROUP]))
        )
    if USER in users:
        steps.append(Step(f"ok      user {USER}", None))
    else:
        argv = ["useradd", *chroot, "--system", "--gid", GROUP, "--home-dir", HOME]
        argv += ["--no-create-home", "--shell", "/usr/sbin/nologin", USER]
        steps.append(Step(f"create  system user {USER} (group {GROUP}, home {HOME})", _run(argv)))
    if login_user and login_user != "root":
        if login_user not in users:
            raise SystemExit(f"install-flash-host: --user {login_user}: no such user on the host")
        if login_user in group_members(root, GROUP):
            steps.append(Step(f"ok      {login_user} is in group {GROUP}", None))
        else:
            steps.append(
                Step(
                    f"add     {login_user} to group {GROUP} (takes effect at the next login)",
                    _run(["usermod", *chroot, "--append", "--groups", GROUP, login_user]),
                )
            )

    config_path = root / CONFIG
    config_text = (
        config_path.read_text() if config_path.exists() else (SHIPPED / "rig.yaml").read_text()
    )
    steps += [
        _directory(root, "etc/rig", 0o755),
        _file(root, CONFIG, (SHIPPED / "rig.yaml").read_text(), keep=True),
        _file(
            root, "etc/rig/acceptance.json", (SHIPPED / "acceptance.json").read_text(), keep=True
        ),
        _directory(root, CREDENTIALS, 0o700),
        _file(root, RULES, render(devices_of(config_text))),
        _file(root, MODULES, (SHIPPED / "modules-load.conf").read_text()),
        _file(root, UNIT, (SHIPPED / "rig.service").read_text()),
    ]
    if live:
        # make the new rules and the module count now, not at the next boot
        steps += [
            Step("run     modprobe sg", _run(["modprobe", "sg"])),
            Step("run     udevadm control --reload", _run(["udevadm", "control", "--reload"])),
            Step("run     udevadm trigger", _run(["udevadm", "trigger"])),
        ]
        if Path("/run/systemd/system").is_dir():
            steps.append(
                Step("run     systemctl daemon-reload", _run(["systemctl", "daemon-reload"]))
            )
    return steps


def install(root: Path, *, dry_run: bool, login_user: str | None = None, out=print) -> int:
    """Carry out (or, dry, only print) the plan; returns how many changes it made."""
    changes = 0
    for step in plan(root, login_user=login_user):
        if step.make is None:
            out(f"  {step.what}")
            continue
        changes += 1
        out(f"  {'would ' if dry_run else ''}{step.what}")
        if not dry_run:
            step.make()
    return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="rig host install",
        description="install the rig's user, group, udev rules, sg module, unit and config",
    )
    ap.add_argument("--root", type=Path, default=Path("/"), help="install below this directory")
    ap.add_argument("--dry-run", action="store_true", help="print every change, make none")
    ap.add_argument(
        "--user",
        default=os.environ.get("SUDO_USER"),
        help="the person who runs `rig` by hand: added to group rig (default: $SUDO_USER)",
    )
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        ap.error(f"--root {root}: not a directory")
    if not args.dry_run and os.geteuid() != 0:
        ap.error("needs root (or --dry-run to see what it would do)")
    for tool in ("groupadd", "useradd", "usermod"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found: this installer is for Debian / Raspberry Pi OS hosts")
    where = "" if root == Path("/") else f" into {root}"
    print(f"{'dry run: ' if args.dry_run else ''}installing the flash host{where}")
    changes = install(root, dry_run=args.dry_run, login_user=args.user)
    verb = "would make" if args.dry_run else "made"
    print(f"{verb} {changes} change(s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
