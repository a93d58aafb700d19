"""Phase time limits follow the device model and the starting state (issue 13, item 9).

A Pi 3's first boot (resize, OctoPi's reboots, host keys) takes minutes; pinning an
old start version on Python 3.7 builds wheels for longer than prepare's old 900 s.
The pipeline asks the real OctoPrint profile; rig.yaml's run.timeouts still win.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from rig.card.catalog import load_catalog
from rig.events import EventBus, StepLog
from rig.orchestration.pipeline import BOOT_FIRST_WAIT, DeviceKit, Phase, ScenarioPipeline
from rig.product.octoprint.profile import (
    OctoPrintProfile,
    boot_timeout,
    prepare_timeout,
    update_timeout,
)
from rig.product.profile import DeviceAddress, ScenarioContext


class _Power:
    def __init__(self) -> None:
        self.cycles = 0

    def cycle(self) -> None:
        self.cycles += 1


def _pipeline(tmp_path: Path, port: int = 1, timeouts=None, **ctx_args) -> ScenarioPipeline:
    ctx = ScenarioContext(
        device=DeviceAddress("pi3-x", "127.87.0.1"),
        scenario_id="s",
        channel="stable",
        target_version="1.11.8",
        release_channel="stable",
        expect="updated",
        checks=(),
        results=tmp_path,
        log=StepLog(),
        **ctx_args,
    )

    def unused(*_a):
        raise AssertionError("not in this test")

    kit = DeviceKit("pi3-x", _Power(), None, "127.87.0.1", port, unused, unused, unused, unused)
    return ScenarioPipeline(kit, ctx, OctoPrintProfile(), EventBus(), timeouts=timeouts)


def test_a_pi3_first_boot_is_waited_out_before_a_power_cycle(tmp_path):
    """The old boot phase waited 0.4 x 600 s = 240 s, then cut the power of a Pi 3 still
    resizing its card on the first boot (3-5 min)."""
    p = _pipeline(tmp_path, model="pi3")
    assert p.limit(Phase.BOOT) * BOOT_FIRST_WAIT >= boot_timeout("pi3") >= 300
    assert p.limit(Phase.BOOT) > 600
    # a Pi Zero 2 is slower still, a Pi 5 needs no more than the default
    assert _pipeline(tmp_path, model="pizero2").limit(Phase.BOOT) > p.limit(Phase.BOOT)
    assert _pipeline(tmp_path, model="pi5").limit(Phase.BOOT) == 600


def test_prepare_limit_follows_the_pinned_start_version_and_the_image_python(tmp_path):
    """Pinning OctoPrint on OctoPi 0.18.0 (Python 3.7) is a pip run as long as an update;
    prepare's old 900 s ended it before its own 1200 s pip timeout."""
    bookworm, buster = load_catalog().get("octopi-1.1.0"), load_catalog().get("octopi-0.18.0")
    unpinned = _pipeline(tmp_path, model="pi3", image=bookworm)
    pinned = _pipeline(tmp_path, model="pi3", start_version="1.5.2", image=buster)
    assert unpinned.limit(Phase.PREPARE) == 600 + 300 + 60  # settle, prepare, margin
    assert pinned.limit(Phase.PREPARE) >= 600 + update_timeout("pi3", "3.7") > 900
    assert prepare_timeout("pi3", "1.5.2", "3.7") > prepare_timeout("pi3", "1.5.2", "3.11")
    assert prepare_timeout("pi4", "1.5.2", "3.7") < prepare_timeout("pi3", "1.5.2", "3.7")


def test_rig_yaml_limits_win_over_the_product(tmp_path):
    p = _pipeline(
        tmp_path,
        model="pi3",
        timeouts={Phase.BOOT: 6.0, Phase.UPDATE: 30.0},
        image=load_catalog().get("octopi-0.18.0"),
    )
    assert p.limit(Phase.BOOT) == 6.0
    assert p.limit(Phase.UPDATE) == 30.0
    assert p.limit(Phase.PREPARE) == 960  # not set: the product's (no pin)


def _listen_after(delay: float) -> tuple[int, threading.Event]:
    """A port that starts accepting after ``delay`` s: sshd coming up late on a first boot."""
    probe = socket.socket()
    probe.bind(("127.87.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    done = threading.Event()

    def serve() -> None:
        time.sleep(delay)  # the device's boot, not a wait in the rig
        srv = socket.create_server(("127.87.0.1", port))
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                pass
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return port, done


def test_boot_waits_the_first_boot_through_without_cutting_power(tmp_path):
    """Scaled down: a configured 5 s boot phase waits 2 s, a device up after 3 s is power
    cycled (what the 240 s first wait did to a Pi 3); with the product's limit it is not."""
    port, done = _listen_after(3.0)
    started = time.monotonic()
    try:
        short = _pipeline(tmp_path, port=port, timeouts={Phase.BOOT: 5.0}, model="pi3")
        short._boot()  # up in the second wait, but its first boot had the power cut
        assert short.kit.power.cycles == 1
        assert time.monotonic() - started < 5
        port, done2 = _listen_after(3.0)
        product = _pipeline(tmp_path, port=port, model="pi3")
        product._boot()
        assert product.kit.power.cycles == 0
        assert product.ctx.facts["boot_seconds"] >= 2.5
        done2.set()
    finally:
        done.set()
