"""What a virtual Pi sees of its card: partition table, boot files, root files.

Deliberately independent of the rig's own card code above the MBR parser: the
boot partition is read and changed with mtools (``mtype``/``mdir``/``mcopy``/
``mdel``/``mren`` on ``card@@offset``) and the root file system with e2fsprogs'
``debugfs`` on ``card?offset=N``, so a bug in the provisioning writer's FAT code
cannot be hidden by the same bug in the reader. Works on image files and on
block devices alike; nothing is mounted, so no root is needed.

FAT lookups are case-insensitive, as on the Pi (``SSH`` enables sshd like ``ssh``).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rig.card.mbr import SECTOR, Partition, PartitionTable, parse_mbr
from rig.errors import InfraError

EXT_MAGIC = 0xEF53
SB_OFFSET = 1024  # the ext superblock starts 1 KiB into the partition
MACHINE_ID = "/etc/machine-id"


def _env() -> dict[str, str]:
    return dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0", LC_ALL="C")


@dataclass(frozen=True)
class RootEntry:
    kind: str  # "file", "dir", "symlink", "other"
    uid: int
    gid: int
    mode: int
    link: str | None = None


class CardError(InfraError):
    """The card cannot be read the way the Pi would read it."""


class Card:
    """A card (image file or block device) as its virtual Pi reads it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        # Caches (each tool call costs ~10 ms); any write through this object clears them.
        self._names: list[str] | None = None
        self._entries: dict[str, RootEntry | None] = {}
        self._files: dict[str, bytes | None] = {}

    # -------------------------------------------------------------- layout

    @cached_property
    def table(self) -> PartitionTable:
        """The MBR; ConfigError (from rig.card.mbr) when there is none."""
        with open(self.path, "rb") as f:
            return parse_mbr(f.read(SECTOR), str(self.path))

    @property
    def boot(self) -> Partition:
        return self.table.boot(str(self.path))

    def partition(self, index: int) -> Partition | None:
        for p in self.table.partitions:
            if p.index == index:
                return p
        return None

    @property
    def root(self) -> Partition | None:
        return self.table.root()

    def size(self) -> int:
        """Bytes on the card (file or block device)."""
        with open(self.path, "rb") as f:
            return f.seek(0, os.SEEK_END)

    def set_partition_sectors(self, index: int, sectors: int) -> None:
        """Rewrite one MBR entry's sector count (what parted resizepart does)."""
        entry = 0x1BE + 16 * (index - 1)
        with open(self.path, "r+b") as f:
            f.seek(entry + 12)
            f.write(struct.pack("<I", sectors))
        self.__dict__.pop("table", None)

    # -------------------------------------------------------------- boot (FAT)

    def _fat(self) -> str:
        return f"{self.path}@@{self.boot.offset}"

    def _mtools(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            list(args), capture_output=True, input=input, env=_env(), check=False, timeout=30
        )

    def boot_names(self) -> list[str]:
        """Names in the boot partition's root directory (as stored)."""
        if self._names is not None:
            return list(self._names)
        proc = self._mtools("mdir", "-b", "-i", self._fat(), "::")
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip()
            if "not found" in msg.lower() or "no files" in msg.lower():
                return []
            raise CardError(
                f"boot partition is not a readable FAT file system: {msg}",
                where=f"{self.path}@{self.boot.offset}",
            )
        names = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("::/"):
                name = line[3:].rstrip("/")
                if name and "/" not in name:
                    names.append(name)
        self._names = names
        return list(names)

    def boot_name(self, name: str) -> str | None:
        """The stored name matching ``name`` case-insensitively, or None."""
        for n in self.boot_names():
            if n.lower() == name.lower():
                return n
        return None

    def read_boot(self, name: str) -> bytes | None:
        stored = self.boot_name(name)
        if stored is None:
            return None
        proc = self._mtools("mcopy", "-n", "-i", self._fat(), f"::{stored}", "-")
        if proc.returncode != 0:
            raise CardError(
                f"cannot read {stored} from the boot partition: "
                f"{proc.stderr.decode(errors='replace').strip()}",
                where=str(self.path),
            )
        return proc.stdout

    def write_boot(self, name: str, data: bytes) -> None:
        self._names = None
        stored = self.boot_name(name)
        if stored is not None:
            self.delete_boot(stored)
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            proc = self._mtools("mcopy", "-o", "-i", self._fat(), tmp.name, f"::{name}")
        self._names = None
        if proc.returncode != 0:
            raise CardError(
                f"cannot write {name} to the boot partition: "
                f"{proc.stderr.decode(errors='replace').strip()}",
                where=str(self.path),
            )

    def delete_boot(self, name: str) -> bool:
        stored = self.boot_name(name)
        if stored is None:
            return False
        proc = self._mtools("mdel", "-i", self._fat(), f"::{stored}")
        self._names = None
        if proc.returncode != 0:
            raise CardError(
                f"cannot delete {stored}: {proc.stderr.decode(errors='replace')}",
                where=str(self.path),
            )
        return True

    def rename_boot(self, old: str, new: str) -> None:
        stored = self.boot_name(old)
        if stored is None:
            raise CardError(f"cannot rename {old}: not on the boot partition", where=str(self.path))
        self.delete_boot(new)
        proc = self._mtools("mren", "-i", self._fat(), f"::{stored}", f"::{new}")
        self._names = None
        if proc.returncode != 0:
            raise CardError(
                f"cannot rename {stored}: {proc.stderr.decode(errors='replace')}",
                where=str(self.path),
            )

    # -------------------------------------------------------------- root (ext4)

    def _ext(self) -> str:
        root = self.root
        if root is None:
            raise CardError("no Linux root partition", where=str(self.path))
        return f"{self.path}?offset={root.offset}"

    def _debugfs(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["debugfs", *args], capture_output=True, env=_env(), check=False, timeout=60
        )

    def prefetch(self, paths: list[str]) -> None:
        """Stat and read many root paths in one debugfs run (fills the caches)."""
        todo = [p for p in dict.fromkeys(paths) if p not in self._entries]
        if not todo:
            return
        with tempfile.TemporaryDirectory() as tmp:
            cmds = []
            for i, p in enumerate(todo):
                cmds += [f'stat "{p}"', f'dump "{p}" "{tmp}/{i}"']
            script = Path(tmp) / "cmds"
            script.write_text("\n".join(cmds) + "\n")
            proc = self._debugfs("-f", str(script), self._ext())
            blocks = re.split(r"^debugfs: ", proc.stdout.decode(errors="replace"), flags=re.M)
            stats = {}
            for block in blocks:
                m = re.match(r'stat "(.*)"\n', block)
                if m:
                    stats[m.group(1)] = block
            for i, p in enumerate(todo):
                entry = self._parse_stat(p, stats.get(p, ""))
                self._entries[p] = entry
                dumped = Path(tmp) / str(i)
                if entry is not None and entry.kind == "file" and dumped.exists():
                    self._files[p] = dumped.read_bytes()
                elif entry is None or entry.kind != "file":
                    self._files[p] = None

    def root_entry(self, path: str) -> RootEntry | None:
        """Type, owner and mode of ``path`` (not following a final symlink)."""
        if path in self._entries:
            return self._entries[path]
        proc = self._debugfs("-R", f'stat "{path}"', self._ext())
        entry = self._parse_stat(path, proc.stdout.decode(errors="replace"))
        self._entries[path] = entry
        return entry

    def _parse_stat(self, path: str, out: str) -> RootEntry | None:
        m = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", out)
        if not m:
            return None
        owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", out)
        uid, gid = (int(owner.group(1)), int(owner.group(2))) if owner else (0, 0)
        kind = {"regular": "file", "directory": "dir", "symlink": "symlink"}.get(
            m.group(1), "other"
        )
        link = None
        if kind == "symlink":
            lm = re.search(r'Fast link dest: "(.*)"', out)
            link = lm.group(1) if lm else self._slow_link(path)
        return RootEntry(kind, uid, gid, int(m.group(2), 8), link)

    def _slow_link(self, path: str) -> str | None:
        proc = self._debugfs("-R", f'cat "{path}"', self._ext())
        return proc.stdout.decode(errors="replace") or None

    def read_root(self, path: str) -> bytes | None:
        """Contents of a regular file on the root file system, or None if absent."""
        if path in self._files:
            return self._files[path]
        entry = self.root_entry(path)
        if entry is None or entry.kind != "file":
            return None
        proc = self._debugfs("-R", f'cat "{path}"', self._ext())
        if proc.returncode != 0:
            raise CardError(f"cannot read {path} from the root file system", where=str(self.path))
        self._files[path] = proc.stdout
        return proc.stdout

    def read_root_text(self, path: str) -> str | None:
        data = self.read_root(path)
        return None if data is None else data.decode(errors="replace")

    def root_run(self, commands: list[str]) -> None:
        """Run debugfs write commands in one session (one open, one close)."""
        self._entries.clear()
        self._files.clear()
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
            script.write("\n".join(commands) + "\n")
            script.flush()
            proc = self._debugfs("-w", "-f", script.name, self._ext())
        err = proc.stderr.decode(errors="replace")
        bad = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("debugfs ")]
        if proc.returncode != 0 or bad:
            raise CardError(
                f"cannot change the root file system: {'; '.join(bad) or err}", where=str(self.path)
            )

    def write_root(
        self, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        """Create or replace a regular file on the root file system."""
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            cmds = []
            if self.root_entry(path) is not None:
                cmds.append(f'rm "{path}"')
            cmds += [
                f'write "{tmp.name}" "{path}"',
                f'sif "{path}" mode 0{0o100000 | mode:o}',
                f'sif "{path}" uid {uid}',
                f'sif "{path}" gid {gid}',
            ]
            self.root_run(cmds)

    def write_root_many(self, files: dict[str, tuple[bytes, int, int, int]]) -> None:
        """Several files at once: path -> (data, mode, uid, gid)."""
        with tempfile.TemporaryDirectory() as tmp:
            cmds = []
            for i, (path, (data, mode, uid, gid)) in enumerate(files.items()):
                src = Path(tmp) / str(i)
                src.write_bytes(data)
                if self.root_entry(path) is not None:
                    cmds.append(f'rm "{path}"')
                cmds += [
                    f'write "{src}" "{path}"',
                    f'sif "{path}" mode 0{0o100000 | mode:o}',
                    f'sif "{path}" uid {uid}',
                    f'sif "{path}" gid {gid}',
                ]
            if cmds:
                self.root_run(cmds)

    # -------------------------------------------------------------- superblock

    def superblock(self) -> dict[str, object]:
        """The root's ext superblock fields a mount changes, read directly."""
        root = self.root
        if root is None:
            raise CardError("no Linux root partition", where=str(self.path))
        with open(self.path, "rb") as f:
            f.seek(root.offset + SB_OFFSET)
            sb = f.read(1024)
        if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT_MAGIC:
            raise CardError(
                "the root partition holds no ext2/3/4 file system",
                where=f"{self.path}@{root.offset}",
            )
        return {
            "uuid": sb[0x68:0x78].hex(),
            "mtime": struct.unpack_from("<I", sb, 0x2C)[0],
            "wtime": struct.unpack_from("<I", sb, 0x30)[0],
            "mnt_count": struct.unpack_from("<H", sb, 0x34)[0],
            "last_mounted": sb[0x88:0xC8].split(b"\0", 1)[0].decode(errors="replace"),
            "mkfs_time": struct.unpack_from("<I", sb, 0x108)[0],
        }

    def has_ext_root(self) -> bool:
        try:
            self.superblock()
        except (CardError, OSError):
            return False
        return True


def _card(card: Card | Path | str) -> Card:
    return card if isinstance(card, Card) else Card(card)


def card_state_key(card: Card | Path | str) -> str:
    """Identity of "this card since it was last written".

    Hash of the disk id, the root file system's UUID and the machine id the
    first boot generated. A fresh flash has an uninitialised machine id (the
    image's own, identical for every flash of that image); the first boot
    writes a random one, so the key changes at first boot and again on every
    reflash + boot. Call it after ``boot_card`` to key device state.
    """
    c = _card(card)
    sb = c.superblock()
    mid = (c.read_root(MACHINE_ID) or b"").strip()
    h = hashlib.sha256(f"{c.table.disk_id:08x}|{sb['uuid']}|".encode() + mid)
    return h.hexdigest()[:16]


def first_boot_done(card: Card | Path | str) -> bool:
    """True when a first boot has already generated this card's machine id."""
    mid = (_card(card).read_root(MACHINE_ID) or b"").strip()
    return bool(re.fullmatch(rb"[0-9a-f]{32}", mid))


def mark_card_booted(
    card: Card | Path | str, *, now: int | None = None, first: bool = False
) -> None:
    """What mounting the root does to the card: the superblock's mount fields.

    Every boot bumps the mount count and the mount/write times and records
    ``/`` as last mount point (debugfs ``ssv`` keeps a metadata checksum valid
    when the file system has one). The first boot also writes /etc/machine-id.
    """
    import time

    c = _card(card)
    sb = c.superblock()
    t = int(now if now is not None else time.time())
    cmds = [
        f"ssv mnt_count {int(sb['mnt_count']) + 1}",
        f"ssv mtime @{t}",
        f"ssv wtime @{t}",
        "ssv last_mounted /",
    ]
    if first and not first_boot_done(c):
        mid = os.urandom(16).hex() + "\n"
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(mid.encode())
            tmp.flush()
            if c.root_entry(MACHINE_ID) is not None:
                cmds.insert(0, f'rm "{MACHINE_ID}"')
            cmds += [f'write "{tmp.name}" "{MACHINE_ID}"', f'sif "{MACHINE_ID}" mode 0100444']
            c.root_run(cmds)
        return
    c.root_run(cmds)
