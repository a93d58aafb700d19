"""Booting at all: partition table, firmware, root=PARTUUID, and the card's identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from virtual_cards import AP, ENV, FIXTURES, cached_image, flash, fsck_root, put, read

from rig.card.mbr import read_partition_table
from rig.virtual.card import card_state_key, first_boot_done
from rig.virtual.firstboot import boot_card


@pytest.fixture(scope="module")
def image() -> Path:
    return cached_image("octopi-1.0.0")


def test_no_partition_table(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    with open(card, "r+b") as f:
        f.seek(510)
        f.write(b"\0\0")
    out = boot_card(card, ap=AP)
    assert not out.booted and "partition table" in out.reason


def test_root_partuuid_mismatch(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    line = read(card, "cmdline.txt")
    disk = read_partition_table(str(card)).disk_id
    put(card, "cmdline.txt", line.replace(f"{disk:08x}-02", "deadbeef-02"), tmp_path)
    out = boot_card(card, ap=AP)
    assert not out.booted
    assert "PARTUUID=deadbeef-02 not found" in out.reason


def test_root_on_missing_partition(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    disk = read_partition_table(str(card)).disk_id
    put(
        card,
        "cmdline.txt",
        read(card, "cmdline.txt").replace(f"{disk:08x}-02", f"{disk:08x}-03"),
        tmp_path,
    )
    out = boot_card(card, ap=AP)
    assert not out.booted and "partition 3" in out.reason


def test_missing_firmware(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    boot = read_partition_table(str(card)).boot()
    subprocess.run(["mdel", "-i", f"{card}@@{boot.offset}", "::start.elf"], check=True, env=ENV)
    out = boot_card(card, ap=AP)
    assert not out.booted and "start.elf" in out.reason


def test_wiped_root_file_system(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    root = read_partition_table(str(card)).root()
    assert root is not None
    with open(card, "r+b") as f:
        f.seek(root.offset)
        f.write(bytes(1024 * 1024))
    out = boot_card(card, ap=AP)
    assert not out.booted and "ext4" in out.reason


def test_boot_partition_at_8_mib(tmp_path) -> None:  # type: ignore[no-untyped-def]
    img = cached_image(
        "plain-trixie", str(FIXTURES / "recipes/plain-trixie.yaml"), octoprint="1.11.7"
    )
    assert read_partition_table(str(img)).boot().start_lba == 16384
    card = flash(img, tmp_path / "card.img")
    assert boot_card(card, ap=AP).booted


def _mount_count(card: Path, tmp_path: Path) -> int:
    root = read_partition_table(str(card)).root()
    assert root is not None
    out = subprocess.run(
        ["dumpe2fs", "-h", f"{card}?offset={root.offset}"], capture_output=True, text=True
    ).stdout
    return int(next(ln for ln in out.splitlines() if ln.startswith("Mount count:")).split()[-1])


def test_card_state_key_follows_flashes_not_boots(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    pristine = card_state_key(card)
    assert not first_boot_done(card)
    assert card_state_key(flash(image, tmp_path / "other.img")) == pristine  # same image

    first = boot_card(card, ap=AP)
    assert first.first_boot and first_boot_done(card)
    booted = card_state_key(card)
    assert booted != pristine and booted == first.card_key

    second = boot_card(card, ap=AP, first_boot_done=True)
    assert not second.first_boot and second.card_key == booted
    assert _mount_count(card, tmp_path) == 2
    assert fsck_root(card, tmp_path).returncode == 0

    flash(image, card)  # reflash
    assert card_state_key(card) == pristine
    third = boot_card(card, ap=AP)
    assert third.first_boot and third.card_key not in (pristine, booted)
    assert _mount_count(card, tmp_path) == 1


def test_card_wins_over_callers_belief(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = flash(image, tmp_path / "card.img")
    lines: list[str] = []
    out = boot_card(card, ap=AP, first_boot_done=True, log=lines.append)
    assert out.first_boot
    assert any("caller thought" in ln for ln in lines)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="growing ext4 inside a card file needs a loop device")
def test_first_boot_grows_root_to_the_card(image, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = tmp_path / "card.img"
    with open(card, "wb") as f:
        f.truncate(2 * 1024**3)  # a 2 GiB card, like the virtual muxes' sparse cards
    subprocess.run(
        ["dd", f"if={image}", f"of={card}", "bs=1M", "conv=notrunc,sparse", "status=none"],
        check=True,
    )
    before = read_partition_table(str(card)).root()
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    root = read_partition_table(str(card)).root()
    assert before is not None and root is not None
    assert root.start_lba == before.start_lba and root.end == 2 * 1024**3
    assert any("grown" in ch for ch in out.first_boot_changes)
    info = subprocess.run(
        ["dumpe2fs", "-h", f"{card}?offset={root.offset}"], capture_output=True, text=True
    ).stdout
    blocks = int(next(ln for ln in info.splitlines() if ln.startswith("Block count:")).split()[-1])
    assert blocks * 4096 == root.size
    assert fsck_root(card, tmp_path).returncode == 0
    again = boot_card(card, ap=AP)
    assert again.booted and not any("grown" in ch for ch in again.first_boot_changes)


def _write_data_extents(image: Path, card: Path) -> None:
    """Copy only the image's data extents, as a bmap-style writer does."""
    with open(image, "rb") as src, open(card, "r+b") as dst:
        size = os.fstat(src.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(src.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(data)
            dst.write(src.read(hole - data))
            pos = hole


@pytest.mark.parametrize("gen", ["0.18.0", "1.1.0"])
def test_image_holes_may_hold_garbage(tmp_path, gen) -> None:  # type: ignore[no-untyped-def]
    """Unused ext4 metadata is flagged uninitialised, so a writer may skip the holes."""
    image = cached_image(f"octopi-{gen}")
    card = tmp_path / "card.img"
    card.write_bytes(b"\xa5" * (image.stat().st_size + 32 * 1024 * 1024))
    _write_data_extents(image, card)
    out = boot_card(card, ap=AP)
    assert out.booted, out.reason
    assert list(out.users) == ["pi"]
    assert fsck_root(card, tmp_path).returncode == 0
