"""Real disk images for the writer tests: mkfs.fat + mcopy and mkfs.ext4 -d, no mounting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rig.card.compose import compose_image

MIB = 1 << 20
TOOLS = ("mkfs.fat", "mcopy", "mkfs.ext4", "debugfs", "e2fsck", "fsck.fat")


def have_tools() -> bool:
    return all(shutil.which(t) for t in TOOLS)


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True)


def make_fat(out: Path, tree: Path, mib: int = 32) -> Path:
    run("mkfs.fat", "-F", "32" if mib >= 33 else "16", "-C", str(out), str(mib * 1024))
    entries = [str(p) for p in sorted(tree.iterdir())]
    if entries:
        run("mcopy", "-s", "-i", str(out), *entries, "::/")
    return out


def make_ext4(out: Path, tree: Path, mib: int = 48, opts: tuple[str, ...] = ()) -> Path:
    with open(out, "wb") as f:
        f.truncate(mib * MIB)
    run("mkfs.ext4", "-q", "-F", *opts, "-d", str(tree), str(out))
    return out


def make_image(
    work: Path, boot_tree: Path, root_tree: Path, *, boot_mib: int = 33, root_mib: int = 48
) -> Path:
    """MBR + FAT boot + ext4 root, like a Raspberry Pi image (boot at 4 MiB)."""
    fat = make_fat(work / "boot.fat", boot_tree, boot_mib)
    ext = make_ext4(work / "root.ext4", root_tree, root_mib)
    img = compose_image(work / "disk.img", [(0x0C, fat), (0x83, ext)])
    fat.unlink()
    ext.unlink()
    return img


def sample_trees(work: Path) -> tuple[Path, Path]:
    """A boot tree and a root tree with real files, a zero-filled file and an empty one."""
    boot, root = work / "boot-tree", work / "root-tree"
    (boot / "overlays").mkdir(parents=True)
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (boot / "config.txt").write_text("dtparam=audio=on\n" * 50)
    (boot / "kernel8.img").write_bytes(os.urandom(3 * MIB + 123))
    (boot / "overlays" / "zeros.dtbo").write_bytes(bytes(256 << 10))  # zeros inside a file
    (root / "etc" / "hostname").write_text("octopi\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "usr" / "bin" / "blob").write_bytes(os.urandom(5 * MIB + 7))
    (root / "usr" / "bin" / "zeros").write_bytes(bytes(2 * MIB))
    for i in range(30):
        (root / "etc" / f"f{i}.conf").write_text(f"setting={i}\n" * (i * 40 + 1))
    return boot, root


def fill_random(path: Path, size: int) -> None:
    """A target full of garbage: anything the writer skips and should not have stays visible."""
    with open(path, "wb") as f:
        block = os.urandom(MIB)
        for _ in range(size // MIB):
            f.write(block)
        f.write(block[: size % MIB])


def extract_partitions(disk: Path, work: Path) -> tuple[Path, Path]:
    from rig.card.mbr import read_partition_table

    table = read_partition_table(str(disk))
    boot, root = table.boot(), table.root()
    assert root is not None
    out = []
    with open(disk, "rb") as f:
        for p, name in ((boot, "p1.fat"), (root, "p2.ext4")):
            dst = work / name
            f.seek(p.offset)
            dst.write_bytes(f.read(p.size))
            out.append(dst)
    return out[0], out[1]


def check_trees(disk: Path, boot_tree: Path, root_tree: Path, work: Path) -> None:
    """fsck both file systems of ``disk`` and compare every file with the trees."""
    fat, ext = extract_partitions(disk, work)
    subprocess.run(["fsck.fat", "-n", str(fat)], check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fn", str(ext)], check=True, capture_output=True)
    out_boot, out_root = work / "out-boot", work / "out-root"
    for d in (out_boot, out_root):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    if any(boot_tree.iterdir()):
        run("mcopy", "-s", "-n", "-i", str(fat), "::/*", str(out_boot))
    run("debugfs", "-R", f"rdump / {out_root}", str(ext))
    _same_tree(boot_tree, out_boot)
    _same_tree(root_tree, out_root)


def _same_tree(want: Path, got: Path) -> None:
    for p in want.rglob("*"):
        rel = p.relative_to(want)
        q = got / rel
        if p.is_file():
            assert q.is_file(), f"{rel} missing"
            assert q.read_bytes() == p.read_bytes(), f"{rel} differs"
