"""A virtual Pi booting from its card: what the firmware, kernel and first boot do.

``boot_card`` reads the card the way a Raspberry Pi 3 does (MBR, FAT boot
partition, cmdline.txt's ``root=PARTUUID``, the ext4 root), runs the first-boot
programs the card's root file system carries (rig.virtual.services) on the
provisioning files it finds, applies their changes to the card exactly as the
real ones would (files deleted or renamed on the boot partition, users, sshd,
hostname and Wi-Fi written to the root), and reports what came up in a
``BootOutcome`` for the device emulation to act on: SSH only when enabled,
only the users that can log in, the network only when Wi-Fi joined.

State lives on the card: a second boot sees what the first one left, and a
reflash starts again from the image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rig.card.mbr import SECTOR
from rig.errors import ConfigError
from rig.virtual.bootfiles import BootFileError
from rig.virtual.bootfiles import cmdline as cmdl
from rig.virtual.bootfiles.cloudinit import parse_cloud_init
from rig.virtual.bootfiles.customtoml import parse_custom_toml
from rig.virtual.bootfiles.firstrun import interpret_firstrun
from rig.virtual.bootfiles.nmconnection import parse_nmconnection
from rig.virtual.bootfiles.userconf import check_password, parse_userconf
from rig.virtual.bootfiles.wifi import AccessPoint, WifiNetwork, network_matches
from rig.virtual.bootfiles.wpa import parse_wpa_supplicant
from rig.virtual.card import (
    MACHINE_ID,
    Card,
    CardError,
    card_state_key,
    mark_card_booted,
)
from rig.virtual.card import (
    first_boot_done as card_first_boot_done,
)
from rig.virtual.services import SERVICES, USERCONFIG_WANTS

__all__ = [
    "AccessPoint",
    "BootOutcome",
    "boot_card",
    "card_state_key",
    "check_password",
    "mark_card_booted",
]

SSH_WANTS = "/etc/systemd/system/multi-user.target.wants/ssh.service"
SSH_UNIT = "/lib/systemd/system/ssh.service"
SSHD_NO_PASSWORD = "/etc/ssh/sshd_config.d/rig-no-password.conf"
NM_DIR = "/etc/NetworkManager/system-connections"
WPA_CONF = "/etc/wpa_supplicant/wpa_supplicant.conf"
CLOUD_IID = "/var/lib/cloud/data/instance-id"
DESCRIPTION = "/etc/rig-virtual/octoprint.json"
FIRMWARE = ("bootcode.bin", "start.elf")
KERNELS = ("kernel7.img", "kernel8.img", "kernel.img", "kernel7l.img")
REGDOM = "cfg80211.ieee80211_regdom"
FIRSTBOOT_INITS = (
    "/usr/lib/raspi-config/init_resize.sh",
    "/usr/lib/raspberrypi-sys-mods/firstboot",
)


@dataclass
class BootOutcome:
    """What a boot of this card brought up, and what it changed on the card."""

    booted: bool
    reason: str = ""  # why not booted (empty when booted)
    generation: str | None = None  # /etc/octopi_version
    base: str | None = None  # buster, bullseye, bookworm, trixie
    hostname: str | None = None
    wifi_joined: bool = False
    wifi_reason: str = ""
    ssh_enabled: bool = False
    ssh_password_auth: bool = True
    ssh_keys: dict[str, list[str]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # name -> crypt hash (can log in)
    homes: dict[str, str] = field(default_factory=dict)
    octoprint_version: str | None = None
    octoprint_requirements: list[str] = field(default_factory=list)
    octoprint_user: str | None = None
    venv: str | None = None
    basedir: str | None = None
    python: str | None = None
    userland: dict[str, str] | None = None  # the card's own Debian (rig.virtual.userland)
    first_boot: bool = False  # this boot was the card's first
    first_boot_changes: list[str] = field(default_factory=list)
    reboots: int = 0  # extra reboots the real boot does (resize, firstrun.sh)
    card_key: str = ""

    @property
    def reachable(self) -> bool:
        return self.booted and self.wifi_joined


class _NotBooted(Exception):
    pass


def boot_card(
    card: Path | str,
    *,
    ap: AccessPoint,
    first_boot_done: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> BootOutcome:
    """Boot the card like a Pi 3 would; changes the card as the real boot does.

    ``first_boot_done`` is the caller's belief; the card decides (its machine
    id is generated at first boot), and a disagreement is logged: a reflash the
    caller missed must still get a first boot.
    """
    say = log or (lambda _msg: None)
    out = BootOutcome(booted=False)
    try:
        _boot(Card(card), ap, first_boot_done, say, out)
    except _NotBooted as e:
        out.booted = False
        out.reason = str(e)
        say(f"boot failed: {e}")
    return out


def _boot(
    c: Card, ap: AccessPoint, believed: bool | None, say: Callable[[str], None], out: BootOutcome
) -> None:
    # -- firmware: the first partition must be FAT with the firmware files
    try:
        table = c.table
    except ConfigError as e:
        raise _NotBooted(f"no bootable partition table: {e.message}") from None
    first = table.partitions[0]
    if first.index != 1 or not first.is_fat:
        raise _NotBooted("partition 1 is not a FAT boot partition; the firmware finds nothing")
    try:
        names = {n.lower() for n in c.boot_names()}
    except CardError as e:
        raise _NotBooted(e.message) from None
    missing = [f for f in FIRMWARE if f not in names]
    if missing:
        raise _NotBooted(f"firmware not found on the boot partition: {', '.join(missing)}")
    if not any(k in names for k in KERNELS):
        raise _NotBooted("no kernel image on the boot partition")
    raw = c.read_boot("cmdline.txt")
    if raw is None:
        raise _NotBooted("no cmdline.txt: the kernel cannot find its root file system")
    cmdline = raw.decode(errors="replace")
    params = cmdl.params(cmdline)
    say(f"kernel command line: {cmdl.first_line(cmdline)}")

    # -- kernel: find root=
    root_arg = params.get("root", "")
    m = re.fullmatch(r"PARTUUID=([0-9a-fA-F]{8})-(\d{2})", root_arg)
    if m:
        if int(m.group(1), 16) != table.disk_id:
            raise _NotBooted(
                f"root=PARTUUID={m.group(1)}-{m.group(2)} not found (this card's disk id is "
                f"{table.partuuid_prefix}); kernel panic: unable to mount root fs"
            )
        index = int(m.group(2))
    else:
        dm = re.fullmatch(r"/dev/mmcblk0p(\d+)", root_arg)
        if not dm:
            raise _NotBooted(f"unusable root={root_arg!r} on the kernel command line")
        index = int(dm.group(1))
    root_part = c.partition(index)
    if root_part is None or not root_part.is_linux:
        raise _NotBooted(f"root partition {index} does not exist or is not Linux")
    if root_part.end > c.size():
        raise _NotBooted("root partition extends past the end of the card")
    if not c.has_ext_root():
        raise _NotBooted("root partition holds no ext4 file system; kernel panic")

    # -- what the root carries (one debugfs run for everything read below)
    c.prefetch(
        [
            "/etc/os-release",
            "/etc/octopi_version",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/passwd",
            "/etc/shadow",
            "/etc/group",
            "/etc/machine-id",
            NM_DIR,
            WPA_CONF,
            SSH_WANTS,
            SSHD_NO_PASSWORD,
            CLOUD_IID,
            DESCRIPTION,
            USERCONFIG_WANTS,
            "/etc/systemd/system/octoprint.service",
            f"{NM_DIR}/wifi.nmconnection",
            *SERVICES.values(),
        ]
    )
    osr = _kv(c.read_root_text("/etc/os-release") or "")
    out.base = osr.get("VERSION_CODENAME")
    out.generation = (c.read_root_text("/etc/octopi_version") or "").strip() or None
    services = {name for name, path in SERVICES.items() if c.root_entry(path) is not None}
    boot_mp = "/boot/firmware" if out.base in ("bookworm", "trixie") else "/boot"
    nm = c.root_entry(NM_DIR) is not None
    say(
        f"root: {osr.get('PRETTY_NAME', '?')}, OctoPi {out.generation}, services {sorted(services)}"
    )

    pristine = not card_first_boot_done(c)
    if believed is not None and believed == pristine:
        say(f"caller thought first boot done={believed}; the card says {not pristine}")
    out.first_boot = pristine
    changes = out.first_boot_changes

    # -- first boot through init= (resize; Bookworm: init_config for custom.toml)
    init = params.get("init")
    if init in FIRSTBOOT_INITS:
        _expand_root(c, root_part.index, changes, say)
        if init.endswith("/firstboot") and "init_config" in services:
            toml = c.read_boot("custom.toml")
            if toml is not None:
                _apply_custom_toml(c, toml.decode(errors="replace"), nm, boot_mp, changes, say)
        cmdline = (c.read_boot("cmdline.txt") or b"").decode(errors="replace")
        cmdline = cmdl.remove_param(cmdline, "init")
        c.write_boot("cmdline.txt", cmdline.encode())
        changes.append(f"cmdline.txt: removed init={init} (root partition resize), reboot")
        out.reboots += 1

    # -- systemd.run= (Imager's firstrun.sh)
    run = cmdl.params(cmdline).get("systemd.run")
    if run:
        _run_firstrun(c, run, cmdline, services, nm, boot_mp, changes, say)
        out.reboots += 1

    # -- normal boot services
    _sshswitch(c, changes, say)
    if "userconf" in services and c.root_entry(USERCONFIG_WANTS) is not None:
        _userconf(c, changes, say)
    if "raspberrypi-net-mods" in services and c.boot_name("wpa_supplicant.conf"):
        data = c.read_boot("wpa_supplicant.conf") or b""
        c.write_root(WPA_CONF, data, mode=0o600)
        c.delete_boot("wpa_supplicant.conf")
        changes.append(f"wpa_supplicant.conf moved to {WPA_CONF}")
    if "change_password" in services and c.boot_name("octopi-password.txt"):
        _change_password(c, changes, say)
    if "change_hostname" in services and c.boot_name("octopi-hostname.txt"):
        out.reboots += _change_hostname(c, changes, say)
    if "cloud-init" in services and c.boot_name("meta-data"):
        _cloud_init(c, nm, changes, say)
    if "copy-network-manager-config" in services and c.boot_name("wifi.nmconnection"):
        text = (c.read_boot("wifi.nmconnection") or b"").decode(errors="replace")
        copy = (
            f"# DO NOT EDIT THIS FILE\n# Edit {boot_mp}/wifi.nmconnection and it will be "
            f"copied here\n{text}"
        )
        target = f"{NM_DIR}/wifi.nmconnection"
        if c.read_root_text(target) != copy:
            c.write_root(target, copy.encode(), mode=0o600)
            say(f"wifi.nmconnection copied to {target}")

    # -- the root is mounted: superblock mount fields; first boot: machine id
    mark_card_booted(c, first=pristine)
    if pristine:
        changes.append("/etc/machine-id generated")

    # -- what came up
    _report(c, ap, nm, boot_mp, out, say)
    out.booted = True
    out.card_key = card_state_key(c)


# ------------------------------------------------------------------ services


def _expand_root(c: Card, index: int, changes: list[str], say: Callable[[str], None]) -> None:
    """init_resize.sh / rpi-resize: grow the last partition and its ext4 to the card's end.

    resize2fs cannot grow a file system inside a regular file at an offset (it
    truncates the file to the file system's size, cutting off its tail), so a
    card that is a plain file is resized through a loop device (root only); a
    card that already is a block device is resized in place. Without either,
    the root is left at the image's size and the log says so.
    """
    part = c.partition(index)
    size = c.size()
    if part is None or part != c.table.partitions[-1] or part.end >= size:
        return
    sectors = size // SECTOR - part.start_lba
    new_bytes = sectors * SECTOR
    if c.path.is_block_device():
        target, loop = f"{c.path}?offset={part.offset}", None
    elif os.geteuid() == 0 and shutil.which("losetup"):
        proc = subprocess.run(
            [
                "losetup",
                "--find",
                "--show",
                "--offset",
                str(part.offset),
                "--sizelimit",
                str(new_bytes),
                str(c.path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if proc.returncode != 0:
            say(f"root not expanded: no loop device ({proc.stderr.strip()})")
            return
        target = loop = proc.stdout.strip()
    else:
        say("root not expanded: growing a file system inside a card file needs root")
        return
    try:
        c.set_partition_sectors(index, sectors)
        proc = subprocess.run(
            ["resize2fs", target, f"{new_bytes // 1024}K"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise _NotBooted(f"resizing the root file system failed: {proc.stderr.strip()}")
    changes.append(f"partition {index} and its file system grown to {new_bytes >> 20} MiB")
    say(f"root partition expanded to the end of the card ({new_bytes >> 20} MiB)")


def _sshswitch(c: Card, changes: list[str], say: Callable[[str], None]) -> None:
    for name in ("ssh", "ssh.txt"):
        if c.boot_name(name):
            _enable_ssh(c)
            c.delete_boot(name)
            changes.append(f"{name}: sshd enabled, file deleted")
            say(f"sshswitch: {name} found, sshd enabled")


def _enable_ssh(c: Card) -> None:
    if c.root_entry(SSH_WANTS) is None:
        _ensure_dir(c, SSH_WANTS.rsplit("/", 1)[0])
        c.root_run([f'symlink "{SSH_WANTS}" "{SSH_UNIT}"'])


def _no_password_ssh(c: Card) -> None:
    _ensure_dir(c, SSHD_NO_PASSWORD.rsplit("/", 1)[0])
    c.write_root(SSHD_NO_PASSWORD, b"PasswordAuthentication no\n")


def _ensure_dir(c: Card, path: str, uid: int = 0) -> None:
    """mkdir -p on the root file system."""
    cmds, current = [], ""
    for part in path.strip("/").split("/"):
        current += "/" + part
        if c.root_entry(current) is None:
            cmds += [
                f'mkdir "{current}"',
                f'sif "{current}" uid {uid}',
                f'sif "{current}" gid {uid}',
            ]
    if cmds:
        c.root_run(cmds)


def _first_line(c: Card, name: str) -> str:
    text = (c.read_boot(name) or b"").decode(errors="replace")
    return text.split("\n", 1)[0].strip()


def _change_hostname(c: Card, changes: list[str], say: Callable[[str], None]) -> int:
    """OctoPi's change_hostname: alphanumerics and '-' only, then delete the file, reboot."""
    name = _first_line(c, "octopi-hostname.txt")
    if not name or not re.fullmatch(r"[A-Za-z0-9-]+", name):
        say(f"change_hostname: refusing host name {name!r}")
        return 0
    _set_hostname(c, name, changes)
    c.delete_boot("octopi-hostname.txt")
    changes.append("octopi-hostname.txt applied and deleted, reboot")
    return 1


def _change_password(c: Card, changes: list[str], say: Callable[[str], None]) -> None:
    """OctoPi's change_password: plain-text password for user pi, then delete the file."""
    password = _first_line(c, "octopi-password.txt")
    if not password or "pi" not in _passwd(c):
        say("change_password: no password or no user pi; file left in place")
        return
    _set_password(c, "pi", _hash(password))
    c.delete_boot("octopi-password.txt")
    changes.append("octopi-password.txt: password of pi changed, file deleted")


def _userconf(c: Card, changes: list[str], say: Callable[[str], None]) -> None:
    raw = c.read_boot("userconf.txt")
    if raw is None:
        return
    try:
        name, hash_ = parse_userconf(raw.decode(errors="replace"))
    except BootFileError as e:
        c.rename_boot("userconf.txt", "failed_userconf.txt")
        changes.append(f"userconf.txt rejected ({e}), renamed failed_userconf.txt")
        say(f"userconf: {e}")
        return
    _set_first_user(c, name, hash_)
    c.delete_boot("userconf.txt")
    changes.append(f"userconf.txt: first user is {name}, file deleted")
    say(f"userconf: user {name}")


def _run_firstrun(
    c: Card,
    run: str,
    cmdline: str,
    services: set[str],
    nm: bool,
    boot_mp: str,
    changes: list[str],
    say: Callable[[str], None],
) -> None:
    base = next((run[len(p) :] for p in ("/boot/firmware/", "/boot/") if run.startswith(p)), None)
    if base is None or "/" in base:
        raise _NotBooted(f"systemd.run={run} is not on the boot partition; boot stops")
    raw = c.read_boot(base)
    if raw is None:
        raise _NotBooted(
            f"systemd.run={run}: no such file; boot stops at kernel-command-line.target"
        )
    passwd = _passwd(c)
    first = next(((n, h) for n, (uid, h) in passwd.items() if uid == 1000), ("pi", "/home/pi"))
    hostname = (c.read_root_text("/etc/hostname") or "").strip()
    try:
        fx = interpret_firstrun(
            raw.decode(errors="replace"),
            exists=lambda p: _exists(c, p, boot_mp),
            hostname=hostname,
            first_user=first,
        )
    except BootFileError as e:
        raise _NotBooted(f"{base} failed: {e}; boot stops at kernel-command-line.target") from None
    say(f"{base}: ran")
    if fx.hostname:
        _set_hostname(c, fx.hostname, changes)
    if fx.user or fx.password_hash:
        _set_first_user(c, fx.user or first[0], fx.password_hash)
        changes.append(f"{base}: first user {fx.user or first[0]}")
    if fx.ran_userconf and c.root_entry(USERCONFIG_WANTS) is not None:
        c.root_run([f'rm "{USERCONFIG_WANTS}"'])
        changes.append(
            f"{base}: userconf disabled userconfig.service (userconf.txt no longer read)"
        )
    if fx.ssh_enabled:
        _enable_ssh(c)
        changes.append(f"{base}: sshd enabled")
    if fx.ssh_password_auth is False:
        _no_password_ssh(c)
    if fx.ssh_keys:
        _authorized_keys(c, fx.user or first[0], fx.ssh_keys)
    if fx.wpa_conf is not None:
        _write_wpa(c, fx.wpa_conf, boot_mp, changes)
    for path, text in fx.nm_files.items():
        if not nm:  # bash: "No such file or directory", and the script goes on (set +e)
            say(f"{base}: cannot create {path}: no such directory")
            continue
        c.write_root(path, text.encode(), mode=0o600)
        changes.append(f"{path} written")
    if fx.wifi_ssid is not None:
        _add_wifi(c, nm, fx.wifi_ssid, fx.wifi_psk, fx.wifi_country, boot_mp, changes)
    elif fx.wifi_country:
        _set_country(c, fx.wifi_country, changes)
    if fx.removed_self:
        c.delete_boot(base)
        changes.append(f"{base} deleted")
    current = (c.read_boot("cmdline.txt") or b"").decode(errors="replace")
    if fx.stripped_cmdline:
        c.write_boot("cmdline.txt", cmdl.strip_systemd_run(current).encode())
        changes.append("cmdline.txt: systemd.run suffix removed, reboot")
    else:
        raise _NotBooted(
            f"{base} does not remove the systemd.run suffix from cmdline.txt: "
            "the Pi runs it again on every boot (boot loop)"
        )


def _exists(c: Card, path: str, boot_mp: str) -> bool:
    """``[ -e path ]`` on the running Pi: boot files under the mount point, else the root."""
    if path.startswith(boot_mp + "/"):
        return c.boot_name(path[len(boot_mp) + 1 :]) is not None
    return c.root_entry(path) is not None


def _apply_custom_toml(
    c: Card, text: str, nm: bool, boot_mp: str, changes: list[str], say: Callable[[str], None]
) -> None:
    try:
        cfg = parse_custom_toml(text)
    except BootFileError as e:
        say(f"init_config: {e}")
        changes.append(f"custom.toml rejected: {e}")
        return
    if cfg.hostname:
        _set_hostname(c, cfg.hostname, changes)
    if cfg.user or cfg.password:
        hash_ = cfg.password
        if hash_ is not None and not cfg.password_encrypted:
            hash_ = _hash(hash_)
        first = next((n for n, (uid, _h) in _passwd(c).items() if uid == 1000), "pi")
        _set_first_user(c, cfg.user or first, hash_)
        changes.append(f"custom.toml: first user {cfg.user or first}")
        if c.root_entry(USERCONFIG_WANTS) is not None:  # init_config runs userconf
            c.root_run([f'rm "{USERCONFIG_WANTS}"'])
    if cfg.ssh_enabled:
        _enable_ssh(c)
        changes.append("custom.toml: sshd enabled")
    if cfg.ssh_password_auth is False:
        _no_password_ssh(c)
    if cfg.ssh_keys:
        first = next((n for n, (uid, _h) in _passwd(c).items() if uid == 1000), "pi")
        _authorized_keys(c, first, cfg.ssh_keys)
    if cfg.wifi_ssid:
        _add_wifi(c, nm, cfg.wifi_ssid, cfg.wifi_psk, cfg.wifi_country, boot_mp, changes)
    elif cfg.wifi_country:
        _set_country(c, cfg.wifi_country, changes)
    c.delete_boot("custom.toml")
    changes.append("custom.toml applied and deleted")
    say("init_config: custom.toml applied")


def _cloud_init(c: Card, nm: bool, changes: list[str], say: Callable[[str], None]) -> None:
    def text(name: str) -> str | None:
        raw = c.read_boot(name)
        return None if raw is None else raw.decode(errors="replace")

    try:
        cfg = parse_cloud_init(text("meta-data") or "", text("user-data"), text("network-config"))
    except BootFileError as e:
        say(f"cloud-init: {e}")
        changes.append(f"cloud-init seed rejected: {e}")
        return
    recorded = (c.read_root_text(CLOUD_IID) or "").strip()
    if recorded == cfg.instance_id:
        say(f"cloud-init: instance {cfg.instance_id} already configured")
        return
    if cfg.hostname:
        _set_hostname(c, cfg.hostname, changes)
    for u in cfg.users:  # `users:` entries are new accounts; `user:` is the default user
        hash_ = u.passwd or (_hash(u.plain_password) if u.plain_password else None)
        if u.lock_passwd and u.passwd is None and u.plain_password is None:
            hash_ = "!"
        if u.default:
            _set_first_user(c, u.name, hash_ or "!")
        elif u.name in _passwd(c):
            _set_password(c, u.name, hash_ or "!")
        else:
            _add_user(c, u.name, hash_)
        if u.ssh_keys:
            _authorized_keys(c, u.name, u.ssh_keys)
        changes.append(f"cloud-init: user {u.name}")
    if cfg.ssh_enabled:
        _enable_ssh(c)
        changes.append("cloud-init: sshd enabled")
    if cfg.ssh_pwauth is False:
        _no_password_ssh(c)
    for ssid, pw in cfg.wifi:
        _add_wifi(c, nm, ssid, pw, cfg.wifi_country, "/boot/firmware", changes)
    if not cfg.wifi and cfg.wifi_country:
        _set_country(c, cfg.wifi_country, changes)
    _ensure_dir(c, "/var/lib/cloud/data")
    c.write_root(CLOUD_IID, f"{cfg.instance_id}\n".encode())
    changes.append(f"cloud-init: instance-id {cfg.instance_id} recorded")
    say(f"cloud-init: instance {cfg.instance_id} configured")


# ------------------------------------------------------------------ root edits


def _kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip().strip('"')
    return out


def _hash(password: str) -> str:
    from passlib.hash import sha512_crypt

    return sha512_crypt.using(rounds=5000).hash(password)


def _passwd(c: Card) -> dict[str, tuple[int, str]]:
    """name -> (uid, home)."""
    out = {}
    for line in (c.read_root_text("/etc/passwd") or "").splitlines():
        f = line.split(":")
        if len(f) >= 7:
            out[f[0]] = (int(f[2]), f[5])
    return out


def _shadow(c: Card) -> dict[str, str]:
    out = {}
    for line in (c.read_root_text("/etc/shadow") or "").splitlines():
        f = line.split(":")
        if len(f) >= 2:
            out[f[0]] = f[1]
    return out


def _set_hostname(c: Card, name: str, changes: list[str]) -> None:
    old = (c.read_root_text("/etc/hostname") or "").strip()
    hosts = c.read_root_text("/etc/hosts") or ""
    hosts = re.sub(r"^127\.0\.1\.1\s+.*$", f"127.0.1.1\t{name}", hosts, flags=re.M)
    c.write_root_many(
        {
            "/etc/hostname": (f"{name}\n".encode(), 0o644, 0, 0),
            "/etc/hosts": (hosts.encode(), 0o644, 0, 0),
        }
    )
    changes.append(f"hostname {old} -> {name}")


def _set_first_user(c: Card, name: str, hash_: str | None) -> None:
    """userconf/usermod semantics: rename the uid-1000 user (and home), set the hash."""
    passwd_lines = (c.read_root_text("/etc/passwd") or "").splitlines()
    shadow_lines = (c.read_root_text("/etc/shadow") or "").splitlines()
    group_lines = (c.read_root_text("/etc/group") or "").splitlines()
    old = None
    for i, line in enumerate(passwd_lines):
        f = line.split(":")
        if len(f) >= 7 and f[2] == "1000":
            old, old_home = f[0], f[5]
            f[0] = name
            f[5] = f"/home/{name}"
            passwd_lines[i] = ":".join(f)
    if old is None:
        _add_user(c, name, hash_)
        return
    for i, line in enumerate(shadow_lines):
        f = line.split(":")
        if f[0] == old:
            f[0] = name
            if hash_ is not None:
                f[1] = hash_
            shadow_lines[i] = ":".join(f)
    for i, line in enumerate(group_lines):
        f = line.split(":")
        if len(f) >= 4:
            if f[0] == old:
                f[0] = name
            f[3] = ",".join(name if m == old else m for m in f[3].split(",") if m)
            group_lines[i] = ":".join(f)
    c.write_root_many(
        {
            "/etc/passwd": (("\n".join(passwd_lines) + "\n").encode(), 0o644, 0, 0),
            "/etc/shadow": (("\n".join(shadow_lines) + "\n").encode(), 0o640, 0, 42),
            "/etc/group": (("\n".join(group_lines) + "\n").encode(), 0o644, 0, 0),
        }
    )
    new_home = f"/home/{name}"
    if old != name and old_home != new_home and c.root_entry(old_home) is not None:
        c.root_run([f'ln "{old_home}" "{new_home}"', f'unlink "{old_home}"'])


def _set_password(c: Card, name: str, hash_: str) -> None:
    lines = (c.read_root_text("/etc/shadow") or "").splitlines()
    for i, line in enumerate(lines):
        f = line.split(":")
        if f[0] == name:
            f[1] = hash_
            lines[i] = ":".join(f)
    c.write_root("/etc/shadow", ("\n".join(lines) + "\n").encode(), mode=0o640, gid=42)


def _add_user(c: Card, name: str, hash_: str | None) -> None:
    passwd = c.read_root_text("/etc/passwd") or ""
    uids = [int(v[0]) for v in _passwd(c).values()]
    uid = max([999, *uids]) + 1
    shadow = c.read_root_text("/etc/shadow") or ""
    c.write_root_many(
        {
            "/etc/passwd": (
                f"{passwd}{name}:x:{uid}:{uid}::/home/{name}:/bin/bash\n".encode(),
                0o644,
                0,
                0,
            ),
            "/etc/shadow": (
                f"{shadow}{name}:{hash_ or '!'}:19675:0:99999:7:::\n".encode(),
                0o640,
                0,
                42,
            ),
        }
    )
    if c.root_entry(f"/home/{name}") is None:
        c.root_run(
            [
                f'mkdir "/home/{name}"',
                f'sif "/home/{name}" uid {uid}',
                f'sif "/home/{name}" gid {uid}',
            ]
        )


def _authorized_keys(c: Card, user: str, keys: list[str]) -> None:
    info = _passwd(c).get(user)
    if info is None:
        return
    uid, home = info
    if c.root_entry(home) is None:
        return
    if c.root_entry(f"{home}/.ssh") is None:
        c.root_run(
            [
                f'mkdir "{home}/.ssh"',
                f'sif "{home}/.ssh" uid {uid}',
                f'sif "{home}/.ssh" gid {uid}',
                f'sif "{home}/.ssh" mode 040700',
            ]
        )
    c.write_root(
        f"{home}/.ssh/authorized_keys",
        ("\n".join(keys) + "\n").encode(),
        mode=0o600,
        uid=uid,
        gid=uid,
    )


def _wpa_target(c: Card, boot_mp: str) -> tuple[str, str]:
    """Where wpa_supplicant.conf really is: ("boot", name) through OctoPi's symlink, or root."""
    entry = c.root_entry(WPA_CONF)
    link = entry.link if entry is not None and entry.kind == "symlink" else None
    if link and link.startswith(boot_mp + "/"):
        return "boot", link[len(boot_mp) + 1 :]
    return "root", WPA_CONF


def _write_wpa(c: Card, text: str, boot_mp: str, changes: list[str]) -> None:
    where, name = _wpa_target(c, boot_mp)
    if where == "boot":
        c.write_boot(name, text.encode())
        changes.append(f"{WPA_CONF} written (through the link to {boot_mp}/{name})")
    else:
        c.write_root(WPA_CONF, text.encode(), mode=0o600)
        changes.append(f"{WPA_CONF} written")


def _set_country(c: Card, country: str, changes: list[str]) -> None:
    current = (c.read_boot("cmdline.txt") or b"").decode(errors="replace")
    c.write_boot("cmdline.txt", cmdl.add_param(current, REGDOM, country).encode())
    changes.append(f"cmdline.txt: {REGDOM}={country}")


def _add_wifi(
    c: Card,
    nm: bool,
    ssid: str,
    psk: str | None,
    country: str | None,
    boot_mp: str,
    changes: list[str],
) -> None:
    """What imager_custom set_wlan does: an NM keyfile, or a wpa_supplicant.conf."""
    if nm:
        security = f"[wifi-security]\nkey-mgmt=wpa-psk\npsk={psk}\n" if psk else ""
        body = (
            f"[connection]\nid=preconfigured\nuuid=00000000-0000-4000-8000-000000000001\n"
            f"type=wifi\n[wifi]\nmode=infrastructure\nssid={ssid}\n"
            f"[ipv4]\nmethod=auto\n{security}"
        )
        c.write_root(f"{NM_DIR}/preconfigured.nmconnection", body.encode(), mode=0o600)
        changes.append(f"{NM_DIR}/preconfigured.nmconnection written for {ssid!r}")
        if country:
            _set_country(c, country, changes)
        return
    if psk is None:
        secret = "key_mgmt=NONE"
    elif re.fullmatch(r"[0-9a-fA-F]{64}", psk):
        secret = f"psk={psk}"
    else:
        secret = f'psk="{psk}"'
    text = (
        "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\nupdate_config=1\n"
        + (f"country={country}\n" if country else "")
        + f'\nnetwork={{\n\tssid="{ssid}"\n\t{secret}\n}}\n'
    )
    _write_wpa(c, text, boot_mp, changes)


# ------------------------------------------------------------------ report


def _report(
    c: Card, ap: AccessPoint, nm: bool, boot_mp: str, out: BootOutcome, say: Callable[[str], None]
) -> None:
    c.prefetch(
        [
            "/etc/hostname",
            "/etc/passwd",
            "/etc/shadow",
            SSH_WANTS,
            SSHD_NO_PASSWORD,
            DESCRIPTION,
            "/etc/systemd/system/octoprint.service",
            WPA_CONF,
            MACHINE_ID,
        ]
    )
    out.hostname = (c.read_root_text("/etc/hostname") or "").strip() or None
    passwd = _passwd(c)
    shadow = _shadow(c)
    for name, (uid, home) in passwd.items():
        hash_ = shadow.get(name, "")
        if 1000 <= uid < 65534 and hash_ and not hash_.startswith(("!", "*")):
            out.users[name] = hash_
            out.homes[name] = home
        keys = c.read_root_text(f"{home}/.ssh/authorized_keys") if uid >= 1000 else None
        if keys:
            out.ssh_keys[name] = [k for k in keys.splitlines() if k.strip()]
    out.ssh_enabled = c.root_entry(SSH_WANTS) is not None
    out.ssh_password_auth = c.root_entry(SSHD_NO_PASSWORD) is None
    desc = c.read_root_text(DESCRIPTION)
    if desc:
        d = json.loads(desc)
        out.octoprint_version = d.get("octoprint")
        out.octoprint_requirements = list(d.get("requirements", []))
        out.python = d.get("python")
        out.userland = d.get("userland") or None
        out.venv = d.get("venv")
        out.basedir = d.get("basedir")
    unit = c.read_root_text("/etc/systemd/system/octoprint.service") or ""
    um = re.search(r"^User=(\S+)", unit, re.M)
    out.octoprint_user = um.group(1) if um else None
    out.wifi_joined, out.wifi_reason = _wifi(c, ap, nm, boot_mp)
    say(
        f"hostname {out.hostname}, users {sorted(out.users)}, ssh "
        f"{'on' if out.ssh_enabled else 'off'}, wifi "
        f"{'joined' if out.wifi_joined else 'not joined: ' + out.wifi_reason}"
    )


def _wifi(c: Card, ap: AccessPoint, nm: bool, boot_mp: str) -> tuple[bool, str]:
    cmdline = (c.read_boot("cmdline.txt") or b"").decode(errors="replace")
    country = cmdl.params(cmdline).get(REGDOM) or None
    networks: list[WifiNetwork] = []
    try:
        if nm:
            for name in _root_ls(c, NM_DIR):
                if name.endswith(".nmconnection"):
                    text = c.read_root_text(f"{NM_DIR}/{name}") or ""
                    net = parse_nmconnection(text, f"{NM_DIR}/{name}")
                    if net is not None:
                        networks.append(net)
        else:
            where, name = _wpa_target(c, boot_mp)
            raw = c.read_boot(name) if where == "boot" else c.read_root(WPA_CONF)
            source = f"{boot_mp}/{name}" if where == "boot" else WPA_CONF
            if raw is not None:
                conf = parse_wpa_supplicant(raw.decode(errors="replace"), source)
                networks = conf.networks
                country = conf.country or country
    except BootFileError as e:
        return False, f"Wi-Fi configuration rejected: {e}"
    if not networks:
        return False, "no Wi-Fi network configured"
    if not country:
        return False, "Wi-Fi is blocked until a country is set (no country= / regdom)"
    if country != ap.country:
        return False, f"Wi-Fi country {country} does not match the access point's {ap.country}"
    reasons = []
    for net in networks:
        ok, why = network_matches(net, ap)
        if ok:
            return True, ""
        reasons.append(why)
    return False, "; ".join(reasons)


def _root_ls(c: Card, path: str) -> list[str]:
    proc = c._debugfs("-R", f'ls -p "{path}"', c._ext())
    names = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        f = line.strip("/").split("/")
        if len(f) >= 5 and f[4] not in (".", ".."):
            names.append(f[4])
    return sorted(names)
