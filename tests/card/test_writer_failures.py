"""The writer under failure: corruption caught by read-back, I/O errors with their offset,
unsafe targets refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _writer_images import fill_random, have_tools, make_image, sample_trees

from rig.card.target import check_writable, open_checked
from rig.card.usedmap import derive_map
from rig.card.writer import _chunks, card_records, write_image
from rig.errors import ConfigError, InfraError

pytestmark = pytest.mark.skipif(not have_tools(), reason="needs mkfs.fat, mtools, e2fsprogs")
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("img")
    boot, root = sample_trees(work)
    return make_image(work, boot, root)


def _where_byte(e: InfraError) -> int:
    assert " at byte " in e.where, e.where
    return int(e.where.rsplit(" at byte ", 1)[1])


def test_corruption_during_write_is_caught_with_its_offset(image, tmp_path):
    """Something else flips a byte on the card while the writer is busy: verify names it."""
    target = tmp_path / "card.bin"
    m = derive_map(image)
    victim = m.extents[-1].start + 4097  # a used byte outside the held-back first chunk
    # the writer reports progress after each chunk, before syncing and verifying it:
    # flip the byte as soon as the chunk holding it has been written
    done_at = 0
    for off, n, _ in _chunks(m):
        if off == 0:
            continue  # written last
        done_at += n
        if off <= victim < off + n:
            break
    flipped = False

    def tamper(phase, done, total):
        nonlocal flipped
        if phase == "write" and not flipped and done == done_at:
            with open(target, "r+b") as f:
                f.seek(victim)
                old = f.read(1)
                f.seek(victim)
                f.write(bytes([old[0] ^ 0xFF]))
            flipped = True

    with pytest.raises(InfraError, match="verification failed") as err:
        write_image(image, target, progress=tamper, state_dir=tmp_path, card_identity="c1")
    assert flipped
    assert _where_byte(err.value) == victim
    assert str(target) in err.value.where
    rec = card_records(tmp_path)[0]
    assert rec["verify_failures"] == 1 and rec["last_result"] == "verify"


def test_no_verify_does_not_catch_it(image, tmp_path):
    target = tmp_path / "card.bin"
    r = write_image(image, target, verify=False)
    assert not r.verified and r.verify_seconds is None


@pytest.fixture
def small_tmpfs(tmp_path):
    if not ROOT:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_write_error_on_a_file_reports_its_offset(image, small_tmpfs):
    target = small_tmpfs / "card.bin"
    with pytest.raises(InfraError, match="write failed") as err:
        write_image(image, target)
    at = _where_byte(err.value)
    assert 0 < at < image.stat().st_size
    # everything before the reported byte that the map wrote made it
    with open(target, "rb") as t, open(image, "rb") as s:
        for e in derive_map(image).extents:
            if e.start >= at:
                break
            end = min(e.end, at)
            if e.start == 0:
                continue  # the MBR chunk is held back until the end
            t.seek(e.start)
            s.seek(e.start)
            assert t.read(end - e.start) == s.read(end - e.start)


def test_io_error_on_a_block_device_reports_its_offset(image, small_tmpfs):
    """A loop device whose backing file cannot grow: the kernel fails the write-back with
    EIO; the writer finds the first refused sector."""
    backing = small_tmpfs / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(image.stat().st_size)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        with pytest.raises(InfraError, match="write failed") as err:
            write_image(image, Path(loop))
        at = _where_byte(err.value)
        assert at % 512 == 0 and 0 < at < image.stat().st_size
        assert loop in err.value.where
        # the card holds what was written up to (about) the reported byte and not beyond:
        # the loop driver accepts the odd partial page, so allow one page of slack
        with open(loop, "rb") as t, open(image, "rb") as s:
            t.seek(at - 8192)
            s.seek(at - 8192)
            assert t.read(4096) == s.read(4096)
            t.seek(at)
            s.seek(at)
            assert t.read(512) != s.read(512)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_running_system_disk_is_refused():
    root_dev = os.stat("/").st_dev
    sys_block = Path(f"/sys/dev/block/{os.major(root_dev)}:{os.minor(root_dev)}")
    if not sys_block.exists():
        pytest.skip("root file system is not on a block device here")
    node = Path("/dev") / sys_block.resolve().name
    if not node.exists():
        pytest.skip(f"{node} has no device node here")
    with pytest.raises(ConfigError, match=r"mounted|running system"):
        check_writable(node)  # never write_image: a bug here must not touch the disk
    # the descriptor-based check the writer uses (it opens read-only to check)
    with pytest.raises(ConfigError, match=r"mounted|running system|partition|cannot open"):
        open_checked(node, allow_fixed=True)


def test_mounted_disk_is_refused(tmp_path):
    if not ROOT:
        pytest.skip("needs root for loop devices and mount")
    fs = tmp_path / "fs.ext4"
    with open(fs, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(fs)], check=True, capture_output=True, text=True
    ).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        if subprocess.run(["mount", loop, str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot mount ext4 here")
        try:
            with pytest.raises(ConfigError, match="mounted"):
                write_image(fs, Path(loop))
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        check_writable(Path(loop))  # unmounted again: fine
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_loop_device_write_and_verify(image, tmp_path):
    if not ROOT:
        pytest.skip("needs root for loop devices")
    backing = tmp_path / "backing.img"
    fill_random(backing, image.stat().st_size + (1 << 20))
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        r = write_image(image, Path(loop))
        assert r.verified and r.origin == "derived"
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    with open(backing, "rb") as t, open(image, "rb") as s:
        for e in derive_map(image).extents:
            t.seek(e.start)
            s.seek(e.start)
            assert t.read(e.size) == s.read(e.size)
