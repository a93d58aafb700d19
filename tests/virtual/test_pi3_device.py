"""A pi3 device end to end: everything it runs is in its Pi 3 sized cgroup, and the
groups go with the power."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from twin_support import flash, image, provision, run, ssh, wait_phase, write_config

from rig.virtual import pi3, throttle
from rig.virtual.cardroot import loop_of
from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import access_point

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_a_pi3_device_runs_everything_in_its_cgroup_and_leaves_none(tmp_path: Path) -> None:
    require_sandbox()
    # fast enough for a test (time_scale), a fixed share so nothing is calibrated
    config = write_config(tmp_path, {"profile": "pi3", "time_scale": 20, "pi3_core": 0.125})
    settings = settings_from_config(config)
    card = tmp_path / "card.img"
    flash(image("octopi-1.0.0"), card)
    provision(card, config, "pi3-c")
    spec = DeviceSpec.from_config(config.devices["pi3-c"])
    state = config.paths.state / "virtual"
    limits = pi3.for_settings(settings, state, sweep=True)
    assert limits is not None
    pi = VirtualPi(
        spec,
        card=lambda: card,
        state_dir=state,
        ap=access_point(config),
        settings=settings,
        throttle=limits,
    )
    cg = limits.cg
    pi.power_on()
    try:
        wait_phase(pi, ("up", "unreachable", "failed"))
        assert pi.phase == "up", pi.reason
        group = pi.cgroup
        assert group is not None and pi.sandbox is not None and pi._card_root is not None
        rel = group.rel
        assert pi.sandbox.pid in cg.pids(f"{rel}/init")
        deadline = time.monotonic() + 60
        while pi.octoprint_pid() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pi.octoprint_pid() in cg.pids(f"{rel}/octoprint")
        loop = loop_of(pi._card_root)
        assert loop is not None
        if isinstance(cg, throttle.V1):
            base = {c: cg.bases[c] / rel for c in ("cpu", "memory", "blkio")}
            assert int((base["cpu"] / "cpu.cfs_quota_us").read_text()) == 4 * 12_500 * 20
            assert int((base["memory"] / "memory.limit_in_bytes").read_text()) == 1 << 30
            rules = (base["blkio"] / "blkio.throttle.write_bps_device").read_text()
            assert f"{throttle.device_number(loop)} {13_600_000 * 20}" in rules
        # an SSH command runs in a session group of its own while it runs
        seen: list[int] = []
        with ssh(spec.host, spec.ssh_port, "pi", config.user.password.reveal()) as c:
            t = threading.Thread(target=run, args=(c, "sleep 3"))
            t.start()
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                for d in cg.dirs(rel)[0].glob("session-*"):
                    seen += cg.pids(str(d.relative_to(cg.dirs("")[0])))
                time.sleep(0.05)
            t.join()
        assert seen
    finally:
        pi.power_cut()
    assert not any(d.exists() for d in cg.dirs(rel))
