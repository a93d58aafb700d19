"""Finding and checking the card's disk against a fake sysfs tree (real loop devices below)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.errors import InfraError
from rig.hardware import blockdev
from rig.hardware.blockdev import Sysfs
from rig.hardware.mux import UsbDiskFinder, UsbSdMuxDriver, find_sdmux_sg
from rig.virtual.hw.sdmux import EmulatedUsbSdMux, open_emulated
from rig.virtual.hw.state import loop_available

USB = "devices/pci0000:00/0000:00:14.0/usb1/1-1"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _usb_device(sys: Path, loc: str, **attrs: str) -> Path:
    d = sys / USB / loc
    for k, v in {"idVendor": "0424", "idProduct": "4041", "busnum": "1", **attrs}.items():
        _write(d / k, v)
    return d


def _disk(sys: Path, parent: Path, name: str, *, dev: str, size: int, removable: str = "1") -> Path:
    d = parent / "host0" / "target0:0:0" / "0:0:0:0" / "block" / name
    _write(d / "size", str(size))
    _write(d / "removable", removable)
    _write(d / "dev", dev)
    (d / "holders").mkdir()
    part = d / f"{name}1"
    _write(part / "partition", "1")
    _write(part / "dev", dev.split(":")[0] + ":" + str(int(dev.split(":")[1]) + 1))
    (part / "holders").mkdir()
    (sys / "class" / "block").mkdir(parents=True, exist_ok=True)
    (sys / "class" / "block" / name).symlink_to(d)
    (sys / "class" / "block" / f"{name}1").symlink_to(part)
    return d


def _sg(sys: Path, usb_iface: Path, name: str) -> None:
    sdev = usb_iface / "host0" / "target0:0:0" / "0:0:0:0"
    node = sdev / "scsi_generic" / name
    node.mkdir(parents=True)
    (node / "device").symlink_to(sdev)
    (sys / "class" / "scsi_generic").mkdir(parents=True, exist_ok=True)
    (sys / "class" / "scsi_generic" / name).symlink_to(node)


class Tree:
    """Two USB-SD-Muxes (sda, sdb) and the host's own NVMe disk."""

    def __init__(self, root: Path, loop: Path | None = None) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.dev.mkdir(parents=True)
        self.mountinfo = root / "mountinfo"
        self.mountinfo.write_text("22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n")
        self.fs = Sysfs(sys=self.sys, dev=self.dev, mountinfo=self.mountinfo)
        maj_min = "7:0"
        if loop is not None:
            st = loop.stat()
            maj_min = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        self.maj_min = maj_min
        self.mux41 = _usb_device(
            self.sys,
            "1-1.3",
            product="usb-sd-mux_rev4",
            serial="000000000041",
            manufacturer="Linux Automation GmbH",
        )
        iface = self.mux41 / "1-1.3:1.0"
        self.sda = _disk(self.sys, iface, "sda", dev=maj_min, size=4096)
        _sg(self.sys, iface, "sg0")
        self.mux42 = _usb_device(
            self.sys,
            "1-1.4",
            product="usb-sd-mux_rev4",
            serial="000000000042",
            manufacturer="Linux Automation GmbH",
        )
        iface42 = self.mux42 / "1-1.4:1.0"
        _disk(self.sys, iface42, "sdb", dev="8:16", size=4096)
        _sg(self.sys, iface42, "sg1")
        nvme = self.sys / "devices/pci0000:00/0000:00:1d.0/nvme/nvme0"
        _disk(self.sys, nvme, "nvme0n1", dev="259:0", size=1 << 30, removable="0")
        target = loop if loop is not None else self.dev / "sda.img"
        if loop is None:
            target.write_bytes(b"\0" * 4096)
        (self.dev / "sda").symlink_to(target)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Path]:
    if not loop_available():
        pytest.skip("needs root and /dev/loop-control for a real block device")
    img = tmp_path / "card.img"
    img.write_bytes(b"\0" * (1 << 20))
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(img)], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield Path(dev)
    subprocess.run(["losetup", "-d", dev], check=False)


def test_mux_found_by_serial_through_sysfs(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    assert find_sdmux_sg("000000000042", t.fs) == t.dev / "sg1"
    with pytest.raises(InfraError) as e:
        find_sdmux_sg("000000000099", t.fs)
    assert "000000000041" in str(e.value) and "000000000042" in str(e.value)


def test_mux_found_through_the_udev_link(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    (t.dev / "sg7").touch()
    (t.dev / "usb-sd-mux").mkdir()
    (t.dev / "usb-sd-mux" / "id-000000000041").symlink_to(t.dev / "sg7")
    assert find_sdmux_sg("000000000041", t.fs) == (t.dev / "sg7").resolve()


def test_disk_below_the_mux_not_the_others(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    assert blockdev.disks_below(t.mux41, t.fs) == ["sda"]
    assert blockdev.disks_below(t.mux42, t.fs) == ["sdb"]
    assert UsbDiskFinder(lambda: t.mux41, t.fs).find() == t.dev / "sda"


def test_disk_never_appearing_times_out(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    (t.sda / "size").write_text("0\n")  # reader present, no medium
    start = time.monotonic()
    with pytest.raises(InfraError) as e:
        blockdev.wait_for_disk(
            UsbDiskFinder(lambda: t.mux41, t.fs).find, 0.3, what="mux 41", where="test", fs=t.fs
        )
    assert 0.3 <= time.monotonic() - start < 2
    assert "did not appear within" in str(e.value) and "size 0" in str(e.value)


def test_disk_appearing_late_is_waited_for(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    (t.sda / "size").write_text("0\n")
    threading.Timer(0.2, lambda: (t.sda / "size").write_text("8\n")).start()
    got = blockdev.wait_for_disk(
        UsbDiskFinder(lambda: t.mux41, t.fs).find, 3, what="mux 41", where="test", fs=t.fs
    )
    assert got == t.dev / "sda"


def test_the_mux_card_passes_all_checks(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    assert blockdev.check_card(t.dev / "sda", below=t.mux41, where="t", fs=t.fs) == t.dev / "sda"


def test_a_disk_below_another_mux_is_refused(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    with pytest.raises(InfraError, match="not below the mux"):
        blockdev.check_card(t.dev / "sda", below=t.mux42, where="t", fs=t.fs)


def test_non_removable_is_refused(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    (t.sda / "removable").write_text("0\n")
    with pytest.raises(InfraError, match="not a removable disk"):
        blockdev.check_card(t.dev / "sda", below=t.mux41, where="t", fs=t.fs)


def test_mounted_partition_is_refused(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    part = (t.sda / "sda1" / "dev").read_text().strip()
    t.mountinfo.write_text(t.mountinfo.read_text() + f"40 22 {part} / /media/boot rw - vfat x rw\n")
    with pytest.raises(InfraError, match="mounted at /media/boot"):
        blockdev.check_card(t.dev / "sda", below=t.mux41, where="t", fs=t.fs)


def test_held_by_device_mapper_is_refused(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    (t.sda / "holders" / "dm-0").mkdir()
    with pytest.raises(InfraError, match="in use by dm-0"):
        blockdev.check_card(t.dev / "sda", below=t.mux41, where="t", fs=t.fs)


def test_busy_disk_is_refused_by_o_excl(tmp_path: Path, loop: Path) -> None:
    t = Tree(tmp_path, loop)
    fd = blockdev.open_card(loop, os.O_RDONLY)  # somebody else has it exclusively
    try:
        with pytest.raises(InfraError, match="busy"):
            blockdev.check_card(t.dev / "sda", below=t.mux41, where="t", fs=t.fs)
    finally:
        os.close(fd)


def test_usb_sd_mux_driver_resolves_its_own_disk(tmp_path: Path, loop: Path, hw) -> None:
    t = Tree(tmp_path, loop)
    device = EmulatedUsbSdMux(hw, "000000000041")
    driver = UsbSdMuxDriver(
        "000000000041", open_mux=lambda _sg: open_emulated(device), wait=False, fs=t.fs
    )
    driver.host()
    assert driver.disk(1.0) == t.dev / "sda"


def test_image_file_is_locked_while_open(tmp_path: Path) -> None:
    card = tmp_path / "card.img"
    card.write_bytes(b"\0" * 1024)
    fd = blockdev.open_card(card)
    try:
        with pytest.raises(InfraError, match="busy"):
            blockdev.check_card(card, below=None, where="t")
    finally:
        os.close(fd)
    assert blockdev.check_card(card, below=None, where="t") == card


def test_doctor_lists_muxes_with_their_disks_and_the_rule_for_missing_access(
    tmp_path: Path,
) -> None:
    from rig.hardware.inventory import scan_sdmuxes

    t = Tree(tmp_path)
    (t.dev / "sg0").touch()
    found = {f.name: f for f in scan_sdmuxes(t.fs)}
    assert found["000000000041"].ok and "card disk: sda" in found["000000000041"].detail
    bad = found["000000000042"]  # no /dev/sg1, no /dev/sdb: as good as no access
    assert not bad.ok and "sdb" in bad.detail
    assert 'SUBSYSTEM=="block"' in bad.fix and 'GROUP="rig"' in bad.fix
    (t.dev / "sdb").touch()
    bad = {f.name: f for f in scan_sdmuxes(t.fs)}["000000000042"]
    assert not bad.ok and 'SUBSYSTEM=="scsi_generic"' in bad.fix
