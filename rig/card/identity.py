"""Fresh per-flash identity for a card written from a starting-state snapshot.

A snapshot is a card after its first boot, so it carries the identity that boot
made for the device it was captured on. On the real images nothing makes it
again: raspberrypi-sys-mods' ``regenerate_ssh_host_keys`` (``rm -f
/etc/ssh/ssh_host_*_key*; ssh-keygen -A``) runs once and disables its own
service (CustomPiOS keeps that service and only re-runs it when a key came out
empty); ``/etc/machine-id`` is written once by systemd's first boot; Imager's
firstrun.sh and OctoPi's ``change_hostname`` set ``/etc/hostname`` and the
``127.0.1.1`` line of ``/etc/hosts``. So the rig writes them itself, into the
root file system on the card, before the card is switched to the device:

- every ``/etc/ssh/ssh_host_<type>_key`` the card has is replaced by a new key
  of the same type (OpenSSH format, as ``ssh-keygen -A`` writes), its ``.pub``
  beside it; the public keys are returned so the rig knows them before the
  first connection;
- ``/etc/machine-id`` gets 32 new hex digits (a valid id: systemd does not treat
  the boot as a first boot), and so does ``/var/lib/dbus/machine-id`` where it
  is a file of its own;
- ``/etc/hostname`` and ``/etc/hosts`` name the device this card is for.

Everything goes through e2fsprogs' ``debugfs -w`` on the root partition at its
offset of the card (file or block device), in one session.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from rig.card.mbr import SECTOR, parse_mbr
from rig.errors import InfraError

SSH_DIR = "/etc/ssh"
KEY_NAME = re.compile(r"^ssh_host_(rsa|ecdsa|ed25519|dsa)_key$")
MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"


@dataclass
class Identity:
    hostname: str
    machine_id: str
    host_keys: dict[str, str] = field(default_factory=dict)  # type -> "ssh-ed25519 AAAA..."
    removed: list[str] = field(default_factory=list)


def root_offset(disk: Path) -> int:
    """Byte offset of the card's first Linux partition (its root file system)."""
    with open(disk, "rb") as f:
        table = parse_mbr(f.read(SECTOR), str(disk))
    for p in table.partitions:
        if p.is_linux:
            return p.offset
    raise InfraError("the card has no Linux root partition", where=str(disk))


def _debugfs(disk: Path, offset: int, commands: list[str], write: bool = False) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
        script.write("\n".join(commands) + "\n")
        script.flush()
        args = ["debugfs", *(["-w"] if write else []), "-f", script.name, f"{disk}?offset={offset}"]
        proc = subprocess.run(
            args, capture_output=True, check=False, timeout=120, env=dict(os.environ, LC_ALL="C")
        )
    err = proc.stderr.decode(errors="replace")
    bad = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("debugfs ")]
    if proc.returncode != 0 or (write and bad):
        raise InfraError(
            f"debugfs could not {'change' if write else 'read'} the root file system: "
            + ("; ".join(bad) or err.strip()),
            where=f"card {disk} at byte {offset}",
        )
    return proc.stdout.decode(errors="replace")


def _cat(disk: Path, offset: int, path: str) -> str | None:
    out = _debugfs(disk, offset, [f'stat "{path}"'])
    if "Type: regular" not in out:
        return None
    return _debugfs(disk, offset, [f'cat "{path}"'])


def new_host_key(kind: str, comment: str) -> tuple[bytes, str]:
    """(private key in OpenSSH format, public key line) of a new host key, as ssh-keygen -A."""
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"no new {kind} host keys (OpenSSH no longer makes them)")
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, f"{public.decode()} {comment}"


def refresh_identity(disk: Path, hostname: str) -> Identity:
    """Write new SSH host keys, machine id and the hostname into the card's root fs."""
    offset = root_offset(disk)
    listing = _debugfs(disk, offset, [f'ls -l "{SSH_DIR}"'])
    in_ssh = set(listing.split())
    names = sorted({m.group(0) for ln in in_ssh if (m := KEY_NAME.match(ln))})
    old_host = (_cat(disk, offset, "/etc/hostname") or "").strip()
    hosts = _cat(disk, offset, "/etc/hosts") or "127.0.0.1\tlocalhost\n"
    dbus_id = _debugfs(disk, offset, [f'stat "{DBUS_MACHINE_ID}"'])
    present = {
        path
        for path in (MACHINE_ID, "/etc/hostname", "/etc/hosts")
        if "Type: regular" in _debugfs(disk, offset, [f'stat "{path}"'])
    } | {f"{SSH_DIR}/{n}" for n in in_ssh}
    identity = Identity(hostname=hostname, machine_id=os.urandom(16).hex())
    cmds: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:

        def put(path: str, data: bytes, mode: int) -> None:
            local = Path(tmp) / f"f{len(cmds)}"
            local.write_bytes(data)
            if path in present:
                cmds.append(f'rm "{path}"')
            cmds.extend(
                [
                    f'write "{local}" "{path}"',
                    f'sif "{path}" mode 0{0o100000 | mode:o}',
                    f'sif "{path}" uid 0',
                    f'sif "{path}" gid 0',
                ]
            )

        for name in names:
            kind = KEY_NAME.match(name).group(1)  # type: ignore[union-attr]
            if kind == "dsa":  # ssh-keygen -A makes none any more: the old one goes
                cmds += [f'rm "{SSH_DIR}/{n}"' for n in (name, f"{name}.pub") if n in in_ssh]
                identity.removed.append(name)
                continue
            private, public = new_host_key(kind, f"root@{hostname}")
            put(f"{SSH_DIR}/{name}", private, 0o600)
            put(f"{SSH_DIR}/{name}.pub", (public + "\n").encode(), 0o644)
            identity.host_keys[kind] = public
        put(MACHINE_ID, (identity.machine_id + "\n").encode(), 0o444)
        if "Type: regular" in dbus_id:
            put(DBUS_MACHINE_ID, (identity.machine_id + "\n").encode(), 0o444)
        put("/etc/hostname", (hostname + "\n").encode(), 0o644)
        put("/etc/hosts", _hosts(hosts, old_host, hostname).encode(), 0o644)
        _debugfs(disk, offset, cmds, write=True)
    return identity


def _hosts(text: str, old: str, new: str) -> str:
    """/etc/hosts with the device's name on 127.0.1.1 (as firstrun.sh's sed and OctoPi's
    change_hostname leave it)."""
    lines = text.splitlines()
    out, done = [], False
    for line in lines:
        fields = line.split()
        if fields and fields[0] == "127.0.1.1":
            if not done:
                out.append(f"127.0.1.1\t{new}")
                done = True
            continue
        if old and old != "localhost" and old in fields[1:]:
            line = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, line)
        out.append(line)
    if not done:
        out.append(f"127.0.1.1\t{new}")
    return "\n".join(out) + "\n"
