"""Build the virtual OctoPi images from the recipes in rig/virtual/recipes/.

Each image is a real disk image the production writer can flash and the
virtual Pi can boot: an MBR (disk id, boot partition at the generation's
offset), a FAT32 boot partition made with mkfs.fat + mcopy holding the files
that generation ships, and an ext4 root made with ``mkfs.ext4 -d`` (nothing
is mounted, so no root is needed) holding what the rig and the virtual Pi read:
``/etc/octopi_version``, ``/etc/hostname``, ``/etc/os-release``, users, the
sshd enablement, the OctoPrint venv location and a description of the
installed OctoPrint (``/etc/rig-virtual/octoprint.json``).

Builds are reproducible (fixed ids, seeds and timestamps: the same inputs give
the same bytes), cached by a hash of everything that goes into them, and
atomic (temp file + rename under a file lock) so concurrent callers are safe.
The root file system is built without ``metadata_csum`` so the virtual Pi's
first boot can update the superblock the way a real mount does without having
to recompute checksums (see rig.virtual.card).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.config import parse_yaml
from rig.errors import ConfigError, InfraError
from rig.virtual.services import SERVICES, USERCONFIG_UNIT, USERCONFIG_WANTS
from rig.virtual.userland import (
    UserlandSpec,
    build_userland,
    cache_root,
    describe,
    spec_from_recipe,
)

MIB = 1024 * 1024
SECTOR = 512
EPOCH = 1_700_000_000  # fixed timestamp for every file and superblock (2023-11-14)
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DESCRIPTION_PATH = "/etc/rig-virtual/octoprint.json"
SSH_WANTS = "/etc/systemd/system/multi-user.target.wants/ssh.service"
SSH_UNIT = "/lib/systemd/system/ssh.service"
# The salt of the shipped default password hash: fixed so builds are reproducible.
DEFAULT_SALT = "rigvirtualpi"
_TOOLS = ("mkfs.fat", "mcopy", "mkfs.ext4", "debugfs")


@dataclass(frozen=True)
class Recipe:
    """One generation's recipe: the parsed YAML plus where its boot files live."""

    name: str
    path: Path
    data: dict[str, Any]

    @property
    def boot_dir(self) -> Path:
        return self.path.parent / self.data["boot"]["files"]


def recipe_path(recipe: str) -> Path:
    """A recipe name (``octopi-1.0.0``) or a path to a recipe YAML file."""
    p = Path(recipe)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    p = RECIPES_DIR / f"{recipe}.yaml"
    if not p.exists():
        known = ", ".join(sorted(x.stem for x in RECIPES_DIR.glob("*.yaml")))
        raise ConfigError(
            f"no virtual image recipe {recipe!r} (known: {known})",
            where=str(RECIPES_DIR),
        )
    return p


def load_recipe(recipe: str) -> Recipe:
    path = recipe_path(recipe)
    data = parse_yaml(path.read_text(), str(path))
    for key in ("generation", "base", "disk", "boot", "root", "user", "ssh", "wifi", "octoprint"):
        if key not in data:
            raise ConfigError(f"recipe misses {key!r}", where=str(path))
    return Recipe(path.stem, path, data)


def _octoprint_for(name: str, octoprint: str | None) -> str:
    if octoprint:
        return octoprint
    from rig.card.catalog import load_catalog

    image = load_catalog().get(name)
    if not image.virtual:
        raise ConfigError(
            f"catalogue image {name!r} has no virtual recipe", where=f"images.{name}.virtual"
        )
    return image.virtual.version


def _python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def userland_of(recipe: Recipe, requirements: list[str]) -> UserlandSpec | None:
    """The real Debian userland the recipe's root is made of (None: host userland)."""
    return spec_from_recipe(recipe.data, str(recipe.path), requirements)


def _inputs_digest(recipe: Recipe, octoprint: str, requirements: list[str]) -> str:
    h = hashlib.sha256()
    h.update(recipe.path.read_bytes())
    for f in sorted(recipe.boot_dir.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    spec = userland_of(recipe, requirements)
    python = spec.key() if spec else _python()
    h.update(json.dumps([octoprint, requirements, python]).encode())
    h.update(Path(__file__).read_bytes())  # a builder change rebuilds
    h.update(Path(__file__).with_name("services.py").read_bytes())
    return h.hexdigest()


def build_image(name: str, recipe: str, out_dir: Path, *, octoprint: str | None = None) -> Path:
    """Build (or return the cached) image ``name`` from ``recipe`` into ``out_dir``.

    ``recipe`` is the catalogue's ``virtual.recipe`` (or a recipe file path);
    the OctoPrint version comes from the catalogue's ``virtual.octoprint`` for
    ``name`` unless ``octoprint`` is given. Safe to call concurrently.
    """
    from rig.product.octoprint.constraints import requirements_for

    _check_tools()
    rec = load_recipe(recipe)
    version = _octoprint_for(name, octoprint)
    requirements = requirements_for(version)
    digest = _inputs_digest(rec, version, requirements)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{digest[:12]}.img"
    if target.exists():
        return target
    shared = cache_root() / "virtual-images"
    if userland_of(rec, requirements) is not None and out_dir.resolve() != shared.resolve():
        # a real userland costs minutes: build it once per machine, copy per caller
        cached = build_image(name, recipe, shared, octoprint=octoprint)
        with open(out_dir / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.exists():
                tmp = out_dir / f".{target.name}.copy"
                _run(["cp", "--sparse=always", str(cached), str(tmp)])
                os.replace(tmp, target)
        return target
    with open(out_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another caller built it while we waited
            return target
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.build-") as tmp:
            work = Path(tmp)
            _build(rec, version, requirements, work)
            os.replace(work / "disk.img", target)
    return target


def build_all(out_dir: Path) -> list[Path]:
    """Build every catalogue image that has a virtual recipe."""
    from rig.card.catalog import load_catalog

    return [
        build_image(img.name, img.virtual.recipe, out_dir)
        for img in load_catalog().images.values()
        if img.virtual
    ]


# ---------------------------------------------------------------- building


def _check_tools() -> None:
    missing = [t for t in _TOOLS if not shutil.which(t)]
    if missing:
        raise InfraError(
            f"cannot build virtual images: {', '.join(missing)} not found",
            where="rig.virtual.images",
            hint="install them: apt install dosfstools mtools e2fsprogs",
        )


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH), E2FSPROGS_FAKE_TIME=str(EPOCH))
    env["MTOOLS_SKIP_CHECK"] = "1"
    proc = subprocess.run(cmd, capture_output=True, env=env, check=False, **kw)
    if proc.returncode != 0:
        raise InfraError(
            f"{cmd[0]} failed: {proc.stderr.decode(errors='replace').strip()}",
            where="rig.virtual.images",
        )
    return proc


def default_password_hash(password: str) -> str:
    """SHA-512 crypt with a fixed salt: the shipped default must be reproducible."""
    from passlib.hash import sha512_crypt

    return sha512_crypt.using(salt=DEFAULT_SALT, rounds=5000).hash(password)


def _build(rec: Recipe, octoprint: str, requirements: list[str], work: Path) -> None:
    d = rec.data
    disk, boot = d["disk"], d["boot"]
    disk_id = int(disk["disk_id"])
    boot_start = int(boot["start_mib"]) * MIB
    boot_size = int(boot["size_mib"]) * MIB
    root_start = boot_start + boot_size
    total = int(disk["size_mib"]) * MIB
    root_size = total - root_start
    if root_size < 16 * MIB:
        raise ConfigError("disk too small for the root partition", where=str(rec.path))

    boot_img = work / "boot.img"
    _build_boot(rec, disk_id, boot_size, boot_img, work / "boot")
    root_img = work / "root.img"
    _build_root(rec, octoprint, requirements, root_size, root_img, work / "root")

    disk_img = work / "disk.img"
    with open(disk_img, "wb") as f:
        f.truncate(total)
        f.write(_mbr(disk_id, boot_start, boot_size, root_start, root_size, boot["fat"]))
        _copy_sparse(boot_img, f, boot_start)
        _copy_sparse(root_img, f, root_start)
    os.utime(disk_img, (EPOCH, EPOCH))


def _mbr(disk_id: int, b_start: int, b_size: int, r_start: int, r_size: int, fat: int) -> bytes:
    mbr = bytearray(SECTOR)
    mbr[0x1B8:0x1BC] = disk_id.to_bytes(4, "little")
    entries = [(0x0C if fat == 32 else 0x0E, b_start, b_size), (0x83, r_start, r_size)]
    for i, (ptype, start, size) in enumerate(entries):
        e = 0x1BE + 16 * i
        mbr[e] = 0x00
        mbr[e + 1 : e + 4] = b"\xfe\xff\xff"  # CHS unused (LBA)
        mbr[e + 4] = ptype
        mbr[e + 5 : e + 8] = b"\xfe\xff\xff"
        mbr[e + 8 : e + 12] = (start // SECTOR).to_bytes(4, "little")
        mbr[e + 12 : e + 16] = (size // SECTOR).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def _copy_sparse(src: Path, dst: Any, offset: int, chunk: int = 64 * 1024) -> None:
    """Copy ``src`` into ``dst`` at ``offset`` leaving all-zero chunks as holes."""
    zero = bytes(chunk)
    with open(src, "rb") as s:
        pos = offset
        while block := s.read(chunk):
            if block != zero[: len(block)]:
                dst.seek(pos)
                dst.write(block)
            pos += len(block)


def _build_boot(rec: Recipe, disk_id: int, size: int, img: Path, tree: Path) -> None:
    d = rec.data
    tree.mkdir()
    for f in sorted(rec.boot_dir.iterdir()):
        text = f.read_bytes()
        if f.name == "cmdline.txt":
            text = text.replace(b"{partuuid}", f"{disk_id:08x}".encode())
        (tree / f.name).write_bytes(text)
    # Firmware the Pi 3 needs before Linux starts; the virtual Pi checks they exist.
    for fw in ("bootcode.bin", "start.elf", "fixup.dat", "kernel7.img"):
        (tree / fw).write_bytes(f"virtual Raspberry Pi firmware placeholder: {fw}\n".encode())
    user = d["user"]
    if user.get("password_in") == "userconf":
        # The image ships userconf.txt with the default user; first boot applies it.
        pw = default_password_hash(user["password"])
        (tree / "userconf.txt").write_text(f"{user['name']}:{pw}\n")
    if d["ssh"] == "enabled" and d.get("ssh_file_shipped"):
        (tree / "ssh").write_bytes(b"")
    files = sorted(tree.iterdir())
    for f in files:
        os.utime(f, (EPOCH, EPOCH))
    fat = int(d["boot"]["fat"])
    _run(
        [
            "mkfs.fat",
            "-F",
            str(fat),
            "-s",
            "1",
            "-n",
            str(d["boot"]["label"]).upper()[:11],
            "-i",
            f"{int(d['boot']['volume_id']):08X}",
            "--invariant",
            "-C",
            str(img),
            str(size // 1024),
        ]
    )
    _run(["mcopy", "-m", "-i", str(img), *map(str, files), "::"])


def _root_files(
    rec: Recipe, octoprint: str, requirements: list[str], facts: dict[str, str] | None = None
) -> dict[str, Any]:
    """Path -> content (str), or ("link", target), or ("dir",); plus owners/modes.

    ``facts`` describe a real userland the files go onto (rig.virtual.userland): its
    own os-release, users and venv stay; the OctoPi files are added."""
    d = rec.data
    user = d["user"]
    name, uid = user["name"], int(user["uid"])
    home = f"/home/{name}"
    boot_mp = d["boot"]["mount_point"]
    osr = d["os_release"]
    base = d["base"]
    if user.get("password_in") == "shadow":
        pw_field = default_password_hash(user["password"])
    else:
        pw_field = "!"  # locked until first boot applies userconf.txt
    files: dict[str, Any] = {
        "/etc/octopi_version": f"{d['generation']}\n",
        "/etc/hostname": "octopi\n",
        "/etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\toctopi\n",
        "/etc/os-release": (
            f'PRETTY_NAME="{osr["pretty_name"]}"\n'
            f'NAME="Raspbian GNU/Linux"\n'
            f'VERSION_ID="{osr["version_id"]}"\n'
            f"VERSION_CODENAME={base}\n"
            f"ID={osr['id']}\nID_LIKE=debian\n"
        ),
        "/etc/passwd": (
            f"root:x:0:0:root:/root:/bin/bash\n{name}:x:{uid}:{uid}:,,,:{home}:/bin/bash\n"
        ),
        "/etc/shadow": f"root:*:19675:0:99999:7:::\n{name}:{pw_field}:19675:0:99999:7:::\n",
        "/etc/group": (
            f"root:x:0:\nsudo:x:27:{name}\nshadow:x:42:\ndialout:x:20:{name}\n"
            f"video:x:44:{name}\n{name}:x:{uid}:\n"
        ),
        # Empty until first boot: systemd writes a fresh id then.
        "/etc/machine-id": "uninitialized\n" if base in ("bookworm", "trixie") else "",
        SSH_UNIT: "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\n"
        "ExecStart=/usr/sbin/sshd -D\n\n[Install]\nWantedBy=multi-user.target\n",
        "/etc/systemd/system/octoprint.service": (
            "[Unit]\nDescription=The snappy web interface for your 3D printer\n"
            "After=network-online.target\nWants=network-online.target\n\n"
            f'[Service]\nEnvironment="LC_ALL=C.UTF-8"\nType=exec\nUser={name}\n'
            f"ExecStart={d['octoprint']['venv']}/bin/octoprint serve\n\n"
            "[Install]\nWantedBy=multi-user.target\n"
        ),
        "/etc/sudoers.d/010_pi-nopasswd": f"{name} ALL=(ALL) NOPASSWD: ALL\n",
        f"{home}/.octoprint/config.yaml": (
            "server:\n  commands:\n"
            "    serverRestartCommand: sudo service octoprint restart\n"
            "    systemRestartCommand: sudo shutdown -r now\n"
            "    systemShutdownCommand: sudo shutdown -h now\n"
            "webcam:\n  stream: /webcam/?action=stream\n"
            "  snapshot: http://127.0.0.1:8080/?action=snapshot\n"
        ),
        DESCRIPTION_PATH: json.dumps(
            {
                "octoprint": octoprint,
                "requirements": requirements,
                "python": facts["venv_python"] if facts else _python(),
                "userland": facts or None,
                "venv": d["octoprint"]["venv"],
                "basedir": d["octoprint"]["basedir"],
                "user": name,
                "generation": d["generation"],
            },
            indent=2,
        )
        + "\n",
        f"{d['octoprint']['venv']}/pyvenv.cfg": (
            f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {_python()}\n"
        ),
        "/var/lib/cloud": ("dir",),
    }
    if facts:  # the userland's own files, made by Debian, useradd and the venv build
        for own in ("/etc/os-release", "/etc/passwd", "/etc/group", "/etc/shadow"):
            files.pop(own)
        files.pop(f"{d['octoprint']['venv']}/pyvenv.cfg")
    files[SSH_WANTS.rsplit("/", 1)[0]] = ("dir",)
    if d["ssh"] == "enabled":
        files[SSH_WANTS] = ("link", SSH_UNIT)
    if d["wifi"] == "wpa_supplicant":
        files["/etc/wpa_supplicant/wpa_supplicant.conf"] = (
            "link",
            f"{boot_mp}/octopi-wpa-supplicant.txt",
        )
    elif d["wifi"] == "networkmanager":
        files["/etc/NetworkManager/system-connections"] = ("dir",)
    if d["octoprint"].get("venv_link"):
        files[d["octoprint"]["venv_link"]] = ("link", d["octoprint"]["venv"])
    files[boot_mp] = ("dir",)
    if d["generation"] is None:  # not an OctoPi image
        files.pop("/etc/octopi_version")
    if "cloud-init" not in d.get("system", []):
        files.pop("/var/lib/cloud")
    for service in d.get("system", []):
        if service not in SERVICES:
            raise ConfigError(f"unknown boot-time program {service!r}", where=f"{rec.path}: system")
        files[SERVICES[service]] = f"# virtual OctoPi: {service} runs at boot on this image\n"
    if "userconf" in d.get("system", []):
        files[USERCONFIG_UNIT] = "[Unit]\nDescription=User configuration\n"
        files[USERCONFIG_WANTS] = ("link", USERCONFIG_UNIT)
    return files


def _build_root(
    rec: Recipe, octoprint: str, requirements: list[str], size: int, img: Path, tree: Path
) -> None:
    d = rec.data
    user = d["user"]
    uid = int(user["uid"])
    home = f"/home/{user['name']}"
    spec = userland_of(rec, requirements)
    facts = None
    if spec is not None:
        # the cached userland, hard-linked: every file changed below is replaced, never
        # written in place, so the cache stays as built
        base = build_userland(spec)
        _run(["cp", "-al", str(base), str(tree)])
        (tree / ".rig-complete").unlink()
        facts = describe(tree, d["octoprint"]["venv"])
        _check_python(rec, facts)
    else:
        tree.mkdir()
    written: list[Path] = []
    for path, content in _root_files(rec, octoprint, requirements, facts).items():
        p = tree / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple) and content[0] == "link":
            if p.is_symlink() or p.exists():
                p.unlink()
            p.symlink_to(content[1])
        elif isinstance(content, tuple):
            p.mkdir(parents=True, exist_ok=True)
        else:
            if p.is_symlink() or p.exists():
                p.unlink()
            p.write_text(content)
        written.append(p)
    if spec is not None:
        _set_shipped_password(tree, user)
        for p in written:
            rel = "/" + str(p.relative_to(tree))
            if rel.startswith(d["octoprint"]["venv"] + "/"):
                os.chown(p, uid, uid, follow_symlinks=False)
            elif rel.startswith(home + "/"):
                os.chown(p, uid, uid, follow_symlinks=False)
                for parent in p.parents:  # directories made on the way (~/.octoprint)
                    if parent == tree / home.lstrip("/") or parent == tree:
                        break
                    os.chown(parent, uid, uid)
    (tree / "etc/shadow").chmod(0o640)
    (tree / "etc/sudoers.d/010_pi-nopasswd").chmod(0o440)
    for p in (tree / "tmp", tree / "root"):
        p.mkdir(exist_ok=True)
    # Fixed timestamps; owners and the remaining ctimes are set with debugfs below
    # (mkfs.ext4 -d copies the source's ctime, which cannot be set with utime).
    entries = sorted(tree.rglob("*")) if spec is None else sorted(written)
    for p in [*entries, tree]:
        os.utime(p, (EPOCH, EPOCH), follow_symlinks=False)
    if spec is not None:
        used = _tree_bytes(tree)
        if used + 64 * MIB > size:
            raise ConfigError(
                f"the root partition ({size // MIB} MiB) cannot hold the userland "
                f"({used // MIB} MiB) with room to update: raise disk.size_mib",
                where=str(rec.path),
            )
    uuid = str(d["root"]["uuid"])
    seed = hashlib.sha256(uuid.encode()).hexdigest()
    hash_seed = f"{seed[:8]}-{seed[8:12]}-{seed[12:16]}-{seed[16:20]}-{seed[20:32]}"
    with open(img, "wb") as f:
        f.truncate(size)
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-b",
            "4096",
            "-O",
            "^metadata_csum,^64bit,uninit_bg",
            "-U",
            uuid,
            "-E",
            f"hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
            "-L",
            str(d["root"]["label"]),
            "-d",
            str(tree),
            str(img),
        ]
    )
    cmds = []
    # every inode's times fixed (a real userland's too: ~20k entries take debugfs 2 s),
    # so the same cached userland always assembles into the same bytes
    stamped = entries if spec is None else sorted(tree.rglob("*"))
    for p in [tree, *stamped, tree / "lost+found"]:
        rel = "/" + str(p.relative_to(tree)) if p != tree else "/"
        cmds += [f'sif "{rel}" ctime @{EPOCH}', f'sif "{rel}" atime @{EPOCH}']
        cmds.append(f'sif "{rel}" mtime @{EPOCH}')
        owned = rel.startswith(home) or rel.startswith(d["octoprint"]["venv"])
        if spec is None and owned and rel != "/home":  # a userland's owners are its own
            cmds += [f'sif "{rel}" uid {uid}', f'sif "{rel}" gid {uid}']
    cmds.append('sif "/etc/shadow" gid 42')
    script = img.parent / "root.debugfs"
    script.write_text("\n".join(cmds) + "\n")
    _run(["debugfs", "-w", "-f", str(script), str(img)])
    if spec is not None:
        shutil.rmtree(tree)  # hard links into the cache: the work dir goes at once


def _check_python(rec: Recipe, facts: dict[str, str]) -> None:
    """The recipe says which Python its userland has; the built userland must agree."""
    want = str(rec.data["userland"].get("python", ""))
    if want and want != facts["python"]:
        raise ConfigError(
            f"userland.python says {want}, but the {rec.data['userland']['suite']} userland "
            f"has Python {facts['python']}",
            where=str(rec.path),
        )


def _set_shipped_password(tree: Path, user: dict[str, Any]) -> None:
    """The default user's shadow entry as the image ships it (set, or locked for userconf)."""
    shipped = user.get("password_in") == "shadow"
    field = default_password_hash(user["password"]) if shipped else "!"
    shadow = tree / "etc/shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        f = line.split(":")
        if f[0] == user["name"]:
            f[1] = field
            lines[i] = ":".join(f)
    shadow.unlink()
    shadow.write_text("\n".join(lines) + "\n")
    os.chown(shadow, 0, 42)


def _tree_bytes(tree: Path) -> int:
    proc = subprocess.run(
        ["du", "-sb", str(tree)], capture_output=True, text=True, check=False, timeout=300
    )
    return int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rig.virtual.images OUT_DIR``: build every catalogue image."""
    import time

    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0]) if args else Path("build/virtual-images")
    t0 = time.monotonic()
    for p in build_all(out):
        print(f"{p}  {p.stat().st_size // MIB} MiB")
    print(f"done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
