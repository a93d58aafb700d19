"""The virtual hardware state: shared across processes, loop devices cleaned up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rig.virtual.hw import VirtualHardware, cleanup
from rig.virtual.hw.state import loop_available, write_fault_available


def test_port_power_and_version(tmp_path: Path) -> None:
    hw = VirtualHardware(tmp_path, use_loop=False)
    assert hw.port_power("1-1", 2) is False
    v0 = hw.version()
    hw.set_port_power("1-1", 2, True)
    assert hw.port_power("1-1", 2) is True
    assert hw.port_power("1-1", 1) is False
    assert hw.version() == v0 + 1
    hw.set_port_power("1-1", 2, True)  # no change, no new version
    assert hw.version() == v0 + 1


def test_state_is_shared_with_another_process(tmp_path: Path) -> None:
    hw = VirtualHardware(tmp_path, use_loop=False)
    code = (
        "import sys; from pathlib import Path; from rig.virtual.hw import VirtualHardware;"
        "hw = VirtualHardware(Path(sys.argv[1]), use_loop=False);"
        "hw.set_port_power('1-1', 3, True); hw.set_mux_side('000000000043', 'dut')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert hw.port_power("1-1", 3) is True
    assert hw.mux_side("000000000043") == "dut"


def test_file_disk_without_loop(tmp_path: Path) -> None:
    hw = VirtualHardware(tmp_path, use_loop=False, card_size=1 << 20)
    assert hw.host_disk("s1") is None
    hw.set_mux_side("s1", "host")
    disk = hw.host_disk("s1")
    assert disk == hw.card_path("s1")
    assert disk is not None and disk.stat().st_size == 1 << 20
    hw.set_mux_side("s1", "dut")
    assert hw.host_disk("s1") is None


def test_bad_side_is_refused(tmp_path: Path) -> None:
    from rig.errors import ConfigError

    with pytest.raises(ConfigError):
        VirtualHardware(tmp_path, use_loop=False).set_mux_side("s1", "sideways")


def _loops_for(path: Path) -> str:
    return subprocess.run(
        ["losetup", "-j", str(path.resolve())], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(not loop_available(), reason="needs root and /dev/loop-control")
def test_loop_device_follows_the_mux(tmp_path: Path) -> None:
    hw = VirtualHardware(tmp_path, card_size=4 << 20)
    try:
        hw.set_mux_side("s1", "host")
        disk = hw.host_disk("s1")
        assert disk is not None and str(disk).startswith("/dev/loop")
        with open(disk, "r+b") as f:
            f.write(b"written through the loop device")
        hw.set_mux_side("s1", "dut")  # flushes and detaches
        assert hw.card_path("s1").read_bytes()[:31] == b"written through the loop device"
        assert _loops_for(hw.card_path("s1")) == ""
        hw.set_mux_side("s1", "host")
        hw.set_mux_side("s2", "host")
        assert _loops_for(hw.card_path("s2")) != ""
    finally:
        removed = cleanup(tmp_path)
    assert len(removed) >= 2
    assert _loops_for(hw.card_path("s1")) == "" and _loops_for(hw.card_path("s2")) == ""
    assert hw.mux_side("s1") == "off"


@pytest.mark.skipif(not loop_available(), reason="needs root and /dev/loop-control")
def test_loop_lost_behind_our_back_is_reattached(tmp_path: Path) -> None:
    hw = VirtualHardware(tmp_path, card_size=4 << 20)
    try:
        hw.set_mux_side("s1", "host")
        first = hw.host_disk("s1")
        subprocess.run(["losetup", "-d", str(first)], check=True)
        again = hw.host_disk("s1")
        assert again is not None and str(again).startswith("/dev/loop")
        assert str(hw.card_path("s1").resolve()) in _loops_for(hw.card_path("s1"))
    finally:
        cleanup(tmp_path)


@pytest.mark.skipif(
    not write_fault_available(), reason="needs loop devices and device-mapper or FUSE"
)
def test_write_error_at_really_fails_writes_from_that_offset(tmp_path: Path) -> None:
    import errno
    import os

    hw = VirtualHardware(tmp_path, card_size=16 << 20, faults={"s1": {"write_error_at": 8 << 20}})
    try:
        hw.set_mux_side("s1", "host")
        disk = hw.host_disk("s1")
        assert disk is not None and disk.is_block_device()
        fd = os.open(disk, os.O_RDWR | os.O_EXCL)
        try:
            os.pwrite(fd, b"A" * 65536, 0)
            os.fsync(fd)
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"B" * 65536, (8 << 20) - 4096)
                os.fsync(fd)
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
        hw.set_mux_side("s1", "dut")
        card = hw.card_path("s1").read_bytes()
        assert card[:65536] == b"A" * 65536
        assert card[8 << 20 : (8 << 20) + 4096] == bytes(4096)  # nothing landed past the fault
        assert hw.host_disk("s1") is None
        assert not os.path.ismount(tmp_path / "faultfs" / "s1")
    finally:
        cleanup(tmp_path)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts
