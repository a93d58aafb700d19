"""`rig doctor`'s look at the flash host: is what the installer puts there there, and live?

Each check reads the host (below ``root``, for a throwaway root) and, when something is
missing or stale, says the one command that fixes it.
"""

from __future__ import annotations

import os
import platform
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from rig.hardware.inventory import Finding
from rig.host import CONFIG, CREDENTIALS, GROUP, MODULES, RULES, SHIPPED, UNIT, USER
from rig.host.install import account_entries, devices_of, group_members
from rig.host.rules import render

INSTALL = "sudo scripts/install-flash-host (or: sudo rig host install)"


def _ok(name: str, detail: str) -> Finding:
    return Finding("host", name, detail, True)


def _fail(name: str, detail: str, fix: str = INSTALL) -> Finding:
    return Finding("host", name, detail, False, fix)


def check_platform(machine: str | None = None) -> Finding:
    """Playwright has no 32-bit ARM wheels: the flash host must run a 64-bit OS."""
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64", "x86_64", "amd64"):
        return _ok("platform", f"{machine} (64-bit)")
    return _fail(
        "platform",
        f"{machine}: not supported (Playwright, the browser driver, has no wheels for it)",
        "install the 64-bit Raspberry Pi OS (Bookworm or Trixie) on the flash host",
    )


def check_accounts(root: Path) -> list[Finding]:
    out = []
    groups, users = account_entries(root / "etc/group"), account_entries(root / "etc/passwd")
    if GROUP not in groups:
        return [_fail("group rig", f"no group {GROUP!r}: the udev rules give it the hardware")]
    gid = groups[GROUP][2]
    out.append(_ok("group rig", f"gid {gid}"))
    if USER not in users:
        out.append(_fail("user rig", f"no user {USER!r} to run the service as"))
    elif users[USER][3] != gid:
        out.append(_fail("user rig", f"user {USER!r} is not in group {GROUP!r}"))
    else:
        out.append(_ok("user rig", f"uid {users[USER][2]}, group {GROUP}"))
    if root == Path("/") and os.geteuid() != 0:
        # the person running `rig` by hand needs the group in this very login
        me = pwd.getpwuid(os.geteuid()).pw_name
        if int(gid) in os.getgroups():
            out.append(_ok("your groups", f"{me} is in group {GROUP}"))
        elif me in group_members(root, GROUP):
            out.append(
                _fail(
                    "your groups",
                    f"{me} was added to {GROUP} but this login predates it",
                    "log out and in again (or: newgrp rig)",
                )
            )
        else:
            out.append(
                _fail(
                    "your groups",
                    f"{me} is not in group {GROUP}",
                    f"sudo usermod -aG {GROUP} {me}, then log in again",
                )
            )
    return out


def check_rules(root: Path) -> list[Finding]:
    path = root / RULES
    config = root / CONFIG
    devices = devices_of(config.read_text()) if config.exists() else {}
    if not path.exists():
        return [_fail("udev rules", f"/{RULES} is missing")]
    if path.read_text() != render(devices):
        return [
            _fail(
                "udev rules",
                f"/{RULES} differs from the rules for /{CONFIG} (old rules, or devices changed)",
            )
        ]
    out = [_ok("udev rules", f"/{RULES} matches /{CONFIG}")]
    if root == Path("/") and shutil.which("udevadm"):
        # rules only count once udevd has read them: the file must predate its last reload
        ping = subprocess.run(["udevadm", "control", "--ping"], capture_output=True)
        if ping.returncode != 0:
            out.append(
                _fail(
                    "udevd",
                    "udevd is not running: no rule is applied",
                    "sudo systemctl start systemd-udevd",
                )
            )
    return out


def check_sg(root: Path) -> list[Finding]:
    out = []
    modules = root / MODULES
    if modules.exists() and "sg" in modules.read_text().split():
        out.append(_ok("sg at boot", f"/{MODULES}"))
    else:
        out.append(_fail("sg at boot", f"/{MODULES} does not load sg (USB-SD-Mux control)"))
    if root == Path("/"):
        builtin = Path(f"/lib/modules/{os.uname().release}/modules.builtin")
        if Path("/sys/module/sg").exists():
            out.append(_ok("sg loaded", "/sys/module/sg"))
        elif builtin.exists() and "/sg.ko" in builtin.read_text():
            out.append(_ok("sg loaded", "built into the kernel"))
        else:
            out.append(
                _fail(
                    "sg loaded",
                    "the sg module is not loaded: USB-SD-Muxes have no control node",
                    "sudo modprobe sg",
                )
            )
    return out


def check_unit(root: Path) -> list[Finding]:
    path = root / UNIT
    if not path.exists():
        return [_fail("rig.service", f"/{UNIT} is missing")]
    if path.read_text() != (SHIPPED / "rig.service").read_text():
        return [
            _fail(
                "rig.service",
                f"/{UNIT} differs from this rig version's unit "
                "(put local changes into rig.service.d/ drop-ins)",
            )
        ]
    out = [_ok("rig.service", f"/{UNIT}")]
    exec_line = next(
        line for line in path.read_text().splitlines() if line.startswith("ExecStart=")
    )
    program = exec_line.split("=", 1)[1].split()[0]
    if not (root / program.lstrip("/")).exists():
        if root == Path("/"):
            out.append(_fail("rig program", f"{program} does not exist"))
        else:
            # a throwaway root has no venv: scripts/install-flash-host makes it on the host
            out.append(_ok("rig program", f"{program}: not in this root (made on the host)"))
    if root == Path("/") and Path("/run/systemd/system").is_dir():
        state = subprocess.run(
            ["systemctl", "is-active", "rig.service"], capture_output=True, text=True
        ).stdout.strip()
        enabled = subprocess.run(
            ["systemctl", "is-enabled", "rig.service"], capture_output=True, text=True
        ).stdout.strip()
        # a stopped daemon is a choice (rig run works without it): information, not failure
        out.append(
            Finding(
                "host",
                "rig.service state",
                f"{enabled or 'unknown'}, {state or 'unknown'}",
                True,
                "" if state == "active" else "sudo systemctl enable --now rig",
            )
        )
    return out


def check_credentials(root: Path) -> list[Finding]:
    path = root / CREDENTIALS
    if not path.is_dir():
        return [_fail("credentials", f"/{CREDENTIALS}/ is missing")]
    st = path.stat()
    if st.st_mode & 0o077 or (root == Path("/") and st.st_uid != 0):
        return [
            _fail(
                "credentials",
                f"/{CREDENTIALS}/ is open to others (mode {st.st_mode & 0o777:o})",
                f"sudo chmod 700 /{CREDENTIALS}",
            )
        ]
    loose = [p.name for p in path.iterdir() if p.is_file() and p.stat().st_mode & 0o077]
    if loose:
        return [
            _fail(
                "credentials",
                f"readable by others: {', '.join(sorted(loose))}",
                f"sudo chmod 600 /{CREDENTIALS}/*",
            )
        ]
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    return [_ok("credentials", f"/{CREDENTIALS}/: {', '.join(names) or 'none yet'}")]


def check_config(root: Path) -> Finding:
    """The service's config loads, with its secrets found where the service will find them."""
    from rig.config import load_config
    from rig.errors import RigError

    path = root / CONFIG
    if not path.exists():
        return _fail("config", f"/{CONFIG} is missing")
    saved = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(root / CREDENTIALS)
    try:
        config = load_config(path)
    except RigError as e:
        missing = re.search(r"secret '([^']+)' not found", e.message)
        fix = (
            f"printf %s 'THE-SECRET' | sudo tee /{CREDENTIALS}/{missing[1]} >/dev/null; "
            f"sudo chmod 600 /{CREDENTIALS}/{missing[1]}"
            if missing
            else e.hint or f"edit /{CONFIG}"
        )
        return _fail("config", f"{e.where}: {e.message}".replace("\n", " "), fix)
    finally:
        if saved is None:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = saved
    return _ok("config", f"/{CONFIG}: {len(config.devices)} device(s)")


def check_host(root: Path = Path("/")) -> list[Finding]:
    """Everything the installer set up, read back."""
    out = [check_platform()] if root == Path("/") else []
    out += check_accounts(root)
    out += check_rules(root)
    out += check_sg(root)
    out += check_unit(root)
    out += check_credentials(root)
    out.append(check_config(root))
    return out


def installed(root: Path = Path("/")) -> bool:
    """Has this host been installed as a flash host (so doctor should check it)?"""
    return (root / UNIT).exists() or (root / RULES).exists()
