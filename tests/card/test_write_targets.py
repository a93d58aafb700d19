"""Write targets a careless user (or a race) hands to `rig flash --target` and
`rig provision --image`, on real loop devices: never a disk of the machine (issue 16, item 5).

The loop devices stand for disks the rig must not write: they report no removable
media (like the flash host's own SD card or an SSD), can be mounted, and can be
swapped in under a symlink between the check and the write.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.card.writer import write_image
from rig.cli import main
from rig.events import StepLog

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None or cards.tools_missing() is not None,
    reason="needs root, losetup and the card tools (real loop devices)",
)


def _sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Loop:
    """A loop device over a file in tmp_path; detached at the end."""

    def __init__(self, backing: Path, partscan: bool = False) -> None:
        self.backing = backing
        argv = ["losetup", "-f", "--show", *(["-P"] if partscan else []), str(backing)]
        self.dev = Path(
            subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
        )
        self.mounted: Path | None = None

    def mount(self, where: Path) -> None:
        where.mkdir(exist_ok=True)
        subprocess.run(["mount", str(self.dev), str(where)], check=True, capture_output=True)
        self.mounted = where

    def close(self) -> None:
        if self.mounted is not None:
            subprocess.run(["umount", str(self.mounted)], check=False)
        subprocess.run(["losetup", "-d", str(self.dev)], check=False)


@pytest.fixture
def loops():
    made: list[Loop] = []

    def make(backing: Path, partscan: bool = False) -> Loop:
        loop = Loop(backing, partscan)
        made.append(loop)
        return loop

    yield make
    for loop in reversed(made):
        loop.close()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    work = tmp_path / "image"
    work.mkdir()
    return cards.build_card(work, generation="octopi-1.0.0", name="octopi.img").path


def _blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_flash_target_refuses_a_fixed_disk_unless_told_and_then_writes_it(
    tmp_path, image, loops, capsys
):
    disk = loops(_blank(tmp_path / "fixed.bin", image.stat().st_size + (1 << 20)))
    before = _sha(disk.backing)
    assert main(["flash", "--target", str(disk.dev), str(image), "--no-verify"]) == 2
    assert "is not a removable disk" in capsys.readouterr().err
    assert _sha(disk.backing) == before
    # the same disk, named on purpose
    assert main(["flash", "--target", str(disk.dev), str(image), "--allow-fixed"]) == 0
    with open(disk.backing, "rb") as got, open(image, "rb") as want:
        assert got.read(image.stat().st_size) == want.read()


def test_flash_target_refuses_missing_paths_and_creates_nothing_in_dev(tmp_path, image, capsys):
    missing = Path(f"/dev/rig-test-{uuid.uuid4().hex[:8]}")
    assert main(["flash", "--target", str(missing), str(image)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not os.path.lexists(missing)
    elsewhere = tmp_path / "not-yet.img"
    assert main(["flash", "--target", str(elsewhere), str(image)]) == 2
    assert not elsewhere.exists()


def test_flash_target_refuses_a_mounted_disk_char_devices_and_directories(
    tmp_path, image, loops, capsys
):
    fs = _blank(tmp_path / "mounted.bin", 32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    disk = loops(fs)
    disk.mount(tmp_path / "mnt")
    before = _sha(fs)
    for target, why in (
        (disk.dev, "is mounted on"),
        (Path("/dev/zero"), "not a block device"),
        (tmp_path, "not a block device"),
    ):
        argv = ["flash", "--target", str(target), str(image), "--allow-fixed"]
        assert main(argv) == 2, target
        assert why in capsys.readouterr().err, target
    assert _sha(fs) == before


def test_flash_target_refuses_a_partition(tmp_path, image, loops, capsys):
    work = tmp_path / "card"
    work.mkdir()
    card = cards.build_card(work, generation="octopi-1.0.0")
    disk = loops(card.path, partscan=True)
    parts = sorted(Path(f"/sys/block/{disk.dev.name}").glob(f"{disk.dev.name}p*"))
    if not parts:
        pytest.skip("this kernel does not scan loop devices' partition tables")
    node = tmp_path / parts[0].name  # no udev here: make the node where we may
    major, minor = (int(x) for x in (parts[0] / "dev").read_text().split(":"))
    os.mknod(node, 0o600 | 0o060000, os.makedev(major, minor))
    before = _sha(card.path)
    assert main(["flash", "--target", str(node), str(image), "--allow-fixed"]) == 2
    assert "is a partition" in capsys.readouterr().err
    assert _sha(card.path) == before


def test_a_symlink_swapped_after_the_check_does_not_redirect_the_write(tmp_path, image, loops):
    """The race: the target is checked, then (before the write) its symlink is pointed at
    another disk. The writer must write what it checked, or nothing."""
    meant = _blank(tmp_path / "meant.img", image.stat().st_size)
    other = loops(_blank(tmp_path / "other-disk.bin", image.stat().st_size + (1 << 20)))
    other_before = _sha(other.backing)
    link = tmp_path / "card"
    link.symlink_to(meant)

    class Swapping(StepLog):
        def __call__(self, message: str, **data: object) -> None:
            if message.startswith("writing") and link.resolve() == meant:
                swapped = tmp_path / "card.new"
                swapped.symlink_to(other.dev)
                os.replace(swapped, link)
            super().__call__(message, **data)

    try:
        write_image(image, link, log=Swapping())
    except Exception as e:  # refusing is fine too; writing the other disk is not
        print("refused:", e)
    assert _sha(other.backing) == other_before, "the swapped-in disk was written"
    assert link.resolve() == other.dev  # the swap really happened during the write


def test_provision_image_refuses_a_fixed_or_mounted_disk(tmp_path, loops, capsys):
    work = tmp_path / "card"
    work.mkdir()
    card = cards.build_card(work, generation="octopi-1.0.0")
    disk = loops(card.path)
    before = _sha(card.path)
    assert main(["provision", "--image", str(disk.dev)]) == 2
    assert "is not a removable disk" in capsys.readouterr().err
    assert _sha(card.path) == before

    fs = _blank(tmp_path / "mounted.bin", 32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    mounted = loops(fs)
    mounted.mount(tmp_path / "mnt")
    fs_before = _sha(fs)
    assert main(["provision", "--image", str(mounted.dev), "--allow-fixed"]) == 2
    assert "is mounted on" in capsys.readouterr().err
    assert _sha(fs) == fs_before

    # named on purpose, a card in a fixed reader is provisioned, through the checked inode
    assert main(["provision", "--image", str(disk.dev), "--allow-fixed"]) == 0
    assert f"{disk.dev}" in capsys.readouterr().out
    assert _sha(card.path) != before


def _race_at_the_open(monkeypatch, make_it: object) -> None:
    """Let the look say "missing" and have `make_it` create the path before the open, as
    another writer of the same card would."""
    from rig.card import target as target_mod

    real_open = os.open
    done = []

    def open_after_the_other(path, flags, *args):
        if not done and flags & os.O_CREAT:
            done.append(True)
            make_it()
        return real_open(path, flags, *args)

    monkeypatch.setattr(target_mod.os, "open", open_after_the_other)


def test_a_target_file_created_by_another_writer_before_the_open_is_written(
    tmp_path, image, monkeypatch
):
    """Two writers of one new image file: both see it missing, one creates it first. The
    second opens what is there (and waits for the card lock) instead of failing with
    'File exists' (a CI failure of test_one_writer_per_card_different_cards_in_parallel)."""
    target = tmp_path / "new.img"
    _race_at_the_open(monkeypatch, lambda: target.write_bytes(b""))
    result = write_image(image, target)
    assert result.verified and result.bytes_written > 0
    assert target.read_bytes()[: 1 << 20] == image.read_bytes()[: 1 << 20]


def test_a_symlink_planted_before_the_open_of_a_new_target_is_not_followed(
    tmp_path, image, loops, monkeypatch
):
    other = loops(_blank(tmp_path / "other-disk.bin", image.stat().st_size + (1 << 20)))
    before = _sha(other.backing)
    target = tmp_path / "new.img"
    _race_at_the_open(monkeypatch, lambda: target.symlink_to(other.dev))
    from rig.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot open") as e:
        write_image(image, target)
    assert str(target) in str(e.value)
    assert _sha(other.backing) == before
