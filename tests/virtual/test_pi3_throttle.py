"""The pi3 profile: a virtual Pi as slow as a Raspberry Pi 3, by cgroups (rig.virtual.pi3).

CPU is checked as wall time over the CPU time the work needed (a ceiling the
kernel enforces whatever else the machine runs), I/O as the rate dd reaches
on a throttled loop device. The v2 file writes are checked on a fake cgroup2
tree: this machine has cgroup v1.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.config import load_config
from rig.errors import InfraError, RigError
from rig.virtual import pi3, throttle
from rig.virtual.faults import settings_from_config
from rig.virtual.hw.state import VirtualHardware
from rig.virtual.sandbox import Sandbox, require_sandbox
from rig.virtual.throttle import IoLimit

# -- configuration ------------------------------------------------------------------------


def _config(tmp_path: Path, virtual: str) -> object:
    path = tmp_path / "rig.yaml"
    path.write_text(f"paths: {{state: {tmp_path / 'state'}}}\nvirtual:\n" + virtual)
    return load_config(path, search=False)


def test_pi3_delays_are_pi3_seconds_divided_by_time_scale(tmp_path: Path) -> None:
    s = settings_from_config(_config(tmp_path, "  profile: pi3\n  time_scale: 4\n"))
    assert s.throttled and s.time_scale == 4.0 and s.pi3_core is None
    assert s.boot_delay == pytest.approx(pi3.BOOT_SECONDS / 4)
    assert s.first_boot_reboot  # the real first boot resizes and reboots
    # numbers set by hand are wall seconds
    s = settings_from_config(_config(tmp_path, "  profile: pi3\n  boot_delay: 2\n"))
    assert s.boot_delay == 2.0 and s.time_scale == 1.0


def test_fast_profile_is_unchanged(tmp_path: Path) -> None:
    s = settings_from_config(_config(tmp_path, "  profile: fast\n"))
    assert not s.throttled
    assert (s.boot_delay, s.first_boot_reboot, s.time_scale) == (1.0, False, 1.0)
    assert pi3.for_settings(s, tmp_path) is None
    assert VirtualHardware.from_config(_config(tmp_path, "  boot_delay: 1\n")).mux_limit is None


@pytest.mark.parametrize(
    ("virtual", "where", "says"),
    [
        ("  profile: pi3\n  time_scale: 0.5\n", "virtual.time_scale", "minimum of 1"),
        ("  profile: pi3\n  pi3_core: 2\n", "virtual.pi3_core", "maximum of 1"),
        ("  time_scale: 2\n", "virtual.time_scale", "pi3 profile only"),
        ("  profile: fast\n  pi3_core: 0.2\n", "virtual.pi3_core", "pi3 profile only"),
        ("  card_sizes: {pi3-z: 8388608}\n", "virtual.card_sizes.pi3-z", "unknown device"),
        ("  card_sizes: {pi3-a: 12}\n", "virtual.card_sizes.pi3-a", "minimum of 1048576"),
    ],
)
def test_config_errors_are_located(tmp_path: Path, virtual: str, where: str, says: str) -> None:
    with pytest.raises(RigError) as e:
        settings_from_config(_config(tmp_path, virtual))
    text = str(e.value) + str(getattr(e.value, "where", ""))
    assert "rig.yaml" in text and where in text and says in text


# -- detection and the v2 interface (fake trees) -------------------------------------------


def test_detect_picks_v1_under_the_rig_s_own_group_and_never_nests_itself(tmp_path: Path) -> None:
    mountinfo = "".join(
        f"3{i} 1 0:{i} / /sys/fs/cgroup/{c} rw - cgroup cgroup rw,{c}\n"
        for i, c in enumerate(("cpu,cpuacct", "memory", "blkio"))
    )
    own = "4:memory:/job/7/rig-virtual/0123abcd/host\n2:cpu,cpuacct:/\n7:blkio:/\n0::/\n"
    cg = throttle.detect(mountinfo, own, root=True)
    assert isinstance(cg, throttle.V1)
    assert cg.bases["memory"] == Path("/sys/fs/cgroup/memory/job/7/rig-virtual")
    assert cg.bases["cpu"] == Path("/sys/fs/cgroup/cpu,cpuacct/rig-virtual")


def test_detect_says_what_is_missing_and_how_to_fix_it() -> None:
    with pytest.raises(InfraError) as e:
        throttle.detect("", "0::/\n", root=False)
    assert "not root" in str(e.value) and "profile: fast" in (e.value.hint or "")


def _fake_v2(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return root


def test_v2_writes_cpu_max_memory_max_io_max_and_enables_controllers(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path)
    mountinfo = f"30 1 0:26 / {root} rw - cgroup2 cgroup2 rw\n"
    cg = throttle.detect(mountinfo, "0::/\n", root=True)
    assert isinstance(cg, throttle.V2)
    group = pi3.DeviceGroup(cg, tmp_path / "state", "pi3-a", pi3.Speed(core=0.125, time_scale=2))
    tag = throttle.tag_of(tmp_path / "state")
    (tmp_path / "loop").touch()
    group.start(None)
    cg.set_io(group.rel, "7:3", group.speed.card)
    leaf = group.leaf("session")
    base = root / "rig-virtual" / tag / "dev-pi3-a"
    assert (base / "cpu.max").read_text() == "100000 100000"  # 4 x 0.125 x 2 cores
    assert (base / "memory.max").read_text() == str(1 << 30)
    assert (base / "io.max").read_text() == (
        "7:3 rbps=40000000 wbps=27200000 riops=4600 wiops=1340"
    )
    assert (base / "session-1" / "cpu.max").read_text() == "25000 100000"
    for d in (root, root / "rig-virtual", root / "rig-virtual" / tag, base):
        assert (d / "cgroup.subtree_control").read_text() == "+cpu +io +memory"
    assert not (base / "session-1" / "cgroup.subtree_control").exists()  # a leaf
    assert cg.procs_files(leaf) == [base / "session-1" / "cgroup.procs"]
    cg.set_io(group.rel, "7:3", None)
    assert (base / "io.max").read_text() == "7:3 rbps=max wbps=max riops=max wiops=max"


def test_join_argv_runs_the_command_only_inside_the_group(tmp_path: Path) -> None:
    cg = throttle.V2(tmp_path)
    (tmp_path / "rig-virtual" / "g").mkdir(parents=True)
    argv = throttle.join_argv(cg, "g", ["/bin/sh", "-c", "echo ran $$"])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == (tmp_path / "rig-virtual" / "g" / "cgroup.procs").read_text().strip()
    # a group it cannot join: nothing runs, and it says why
    bad = throttle.join_argv(cg, "missing", ["/bin/echo", "ran"])
    proc = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert proc.returncode == 125 and "ran" not in proc.stdout
    assert "cannot join cgroup" in proc.stderr


# -- the real kernel (cgroup v1 here) -------------------------------------------------------


@pytest.fixture
def cg() -> throttle.Cgroups:
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    return throttle.detect()


def _cpu_factor(argv: list[str]) -> float:
    """Wall seconds over the CPU seconds the command used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(argv, check=True, timeout=120, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall / cpu


@pytest.fixture
def box(tmp_path: Path, cg: throttle.Cgroups) -> Iterator[tuple[Sandbox, pi3.DeviceGroup]]:
    require_sandbox()
    root = tmp_path / "dev"
    for d in ("home/pi", "etc"):
        (root / d).mkdir(parents=True)
    group = pi3.DeviceGroup(cg, tmp_path / "state", "pi3-t", pi3.Speed(core=0.1))
    group.start(None)
    sandbox = Sandbox(
        name="pi3-t",
        root=root,
        hostname="pi3-t",
        mounts={"/home": root / "home", "/etc": root / "etc"},
        cgroup=group,
    )
    sandbox.start()
    yield sandbox, group
    sandbox.kill()
    group.stop()


WORK = "n = 0\nfor i in range(2_000_000): n += i\n"


@pytest.mark.root
def test_cpu_bound_work_in_the_sandbox_is_slowed_to_a_pi3_core_and_scales(
    box: tuple[Sandbox, pi3.DeviceGroup], cg: throttle.Cgroups, tmp_path: Path
) -> None:
    sandbox, group = box
    env = {"PATH": "/usr/bin:/bin"}
    argv = ["/usr/bin/python3", "-S", "-c", WORK]
    # the sandbox itself (its pid 1) is in the device's init group
    assert sandbox.pid in cg.pids(f"{group.rel}/init")
    free = _cpu_factor(argv)
    leaf = group.leaf("session")
    slow = _cpu_factor(sandbox.command(argv, env=env, group=leaf))
    # one Pi 3 core = 0.1 host core: >= 10x the CPU time in wall time (7x: generous)
    assert slow >= 7, (free, slow)
    group.release(leaf)
    assert not any(d.exists() for d in cg.dirs(leaf))
    # time_scale 4: four times the quota
    fast = pi3.DeviceGroup(cg, tmp_path / "state", "pi3-t", pi3.Speed(core=0.1, time_scale=4))
    assert fast.rel == group.rel
    leaf4 = fast.leaf("session")
    scaled = _cpu_factor(sandbox.command(argv, env=env, group=leaf4))
    assert 1.7 <= scaled <= slow / 2, (slow, scaled)


@pytest.fixture
def loop(tmp_path: Path, cg: throttle.Cgroups) -> Iterator[str]:
    image = tmp_path / "card.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


def _dd_rate(argv: list[str]) -> float:
    """Bytes per second of a dd of 12 MiB (direct I/O: what reaches the device)."""
    t = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return (12 << 20) / (time.monotonic() - t)


def _dd(dev: str, write: bool) -> list[str]:
    if write:
        return ["dd", "if=/dev/zero", f"of={dev}", "bs=1M", "count=12", "oflag=direct"]
    return ["dd", f"if={dev}", "of=/dev/null", "bs=1M", "count=12", "iflag=direct"]


@pytest.mark.root
@pytest.mark.parametrize("time_scale", [1.0, 2.0])
def test_card_io_of_a_device_is_limited_to_the_pi3_sd_rates(
    tmp_path: Path, cg: throttle.Cgroups, loop: str, time_scale: float
) -> None:
    group = pi3.DeviceGroup(cg, tmp_path, "pi3-io", pi3.Speed(core=1.0, time_scale=time_scale))
    group.start(loop)
    try:
        leaf = group.leaf("session")
        want = pi3.scaled(pi3.CARD, time_scale)
        assert want.write_bps and want.read_bps
        wrote = _dd_rate(group.argv(leaf, _dd(loop, write=True)))
        read = _dd_rate(group.argv(leaf, _dd(loop, write=False)))
        assert want.write_bps * 0.5 < wrote <= want.write_bps * 1.2, wrote
        assert want.read_bps * 0.5 < read <= want.read_bps * 1.2, read
        # outside the group the same device is not throttled
        assert _dd_rate(_dd(loop, write=False)) > want.read_bps * 2
    finally:
        group.stop()
    assert not any(d.exists() for d in cg.dirs(group.rel))


WRITER = """
import os, sys
from pathlib import Path
from rig.card.writer import write_image
from rig.virtual import pi3, throttle
pi3.join_host(throttle.detect(), Path(sys.argv[3]), os.getpid())  # what the backend does
r = write_image(Path(sys.argv[1]), Path(sys.argv[2]), skip_same=False)
print(r.bytes_written / r.write_seconds, r.verified)
"""


@pytest.mark.root
def test_the_writer_writes_the_host_side_card_at_the_mux_rate(
    tmp_path: Path, cg: throttle.Cgroups
) -> None:
    """The production writer (buffered writes, fdatasync every 32 MiB) in the host group:
    on v1 its writes are throttled because its own fdatasync submits them."""
    limit = IoLimit(read_bps=40_000_000, write_bps=20_000_000)
    hw = VirtualHardware(tmp_path / "virtual", card_size=64 << 20, mux_limit=limit)
    image = tmp_path / "image.img"
    image.write_bytes(os.urandom(40 << 20))
    hw.set_mux_side("000000000001", "host")
    try:
        disk = hw.host_disk("000000000001")
        assert disk is not None and str(disk).startswith("/dev/loop")
        number = throttle.device_number(disk)
        out = subprocess.run(
            [sys.executable, "-c", WRITER, str(image), str(disk), str(hw.state_dir)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        rate = float(out[0])
        assert out[1] == "True"
        assert limit.write_bps * 0.5 < rate <= limit.write_bps * 1.2, rate
    finally:
        hw.set_mux_side("000000000001", "off")
    rel = pi3.host_rel(hw.state_dir)
    if isinstance(cg, throttle.V1):  # the mux went off: no rule names the loop device any more
        rules = (cg.bases["blkio"] / rel / "blkio.throttle.write_bps_device").read_text()
        assert number not in rules
    assert cg.pids(rel) == []  # the writer has exited; its empty group goes
    assert throttle.remove(cg, rel)


@pytest.mark.root
def test_stale_device_groups_of_a_killed_run_are_swept(
    tmp_path: Path, cg: throttle.Cgroups
) -> None:
    tag = throttle.tag_of(tmp_path)
    cg.create(f"{tag}/dev-pi3-a/session-9")
    cg.create(f"{tag}/dev-pi3-b/init")
    gone = throttle.sweep(cg, tag)
    assert len(gone) >= 2
    assert not any(d.exists() for d in cg.dirs(tag + "/dev-pi3-a"))
    throttle.remove(cg, tag)
    assert not any(d.exists() for d in cg.dirs(tag))
