"""The write limit follows the measured bus throughput (issue 17, item 4).

Unit tests feed synthetic (bytes, seconds, concurrency) samples; one test runs
real threads whose writes are real file writes, rate-limited here like cards on a
shared bus; one runs real pipelines to show a slot is held for the write only.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from rig.errors import ConfigError
from rig.events import EventBus, StepLog
from rig.orchestration.pipeline import DeviceKit, Phase, ScenarioPipeline
from rig.orchestration.writeslots import Sample, WriteSlots, parse_maximum
from rig.product.profile import DeviceAddress, ScenarioContext

MB = 1_000_000
GB = 1_000 * MB


def _card(rate_mb: float, k: int) -> Sample:
    """A 1 GB write at ``rate_mb`` per card while k writes ran."""
    return Sample(GB, GB / (rate_mb * MB), k)


def test_a_saturated_bus_lowers_the_limit_and_says_why_with_the_numbers() -> None:
    said: list[str] = []
    slots = WriteSlots(3, said.append)
    assert slots.record(_card(18, 1)) is None  # one card alone: 18 MB/s
    assert slots.record(_card(18, 2)) is None  # two: 36 MB/s, scales: kept
    decision = slots.record(_card(12.5, 3))  # three: 37.5 MB/s on a ~38 MB/s bus
    assert slots.limit == 2
    assert said == [decision]
    assert decision == (
        "card writes: 3 at once moved 37.5 MB/s, 2 writes 36.0 MB/s "
        "(one more must add 15%): at most 2 at once from now on"
    )
    # two still scale over one: the limit stays, and nothing more is said
    assert slots.record(_card(18, 2)) is None and slots.limit == 2 and len(said) == 1


def test_a_bus_that_scales_keeps_every_write() -> None:
    slots = WriteSlots(3)
    for k in (1, 2, 3, 3, 2, 1):
        slots.record(_card(15, k))  # a fast bus: every card its own 15 MB/s
    assert slots.limit == 3 and slots.decisions == []


def test_without_a_lower_level_measured_nothing_is_decided() -> None:
    slots = WriteSlots(3)
    for _ in range(5):
        slots.record(_card(5, 3))  # slow, but nothing to compare with
    assert slots.limit == 3


def test_the_nearest_lower_level_is_compared_and_the_limit_steps_down_one() -> None:
    slots = WriteSlots(3)
    slots.record(_card(36, 1))  # one card alone fills the bus
    slots.record(_card(12.3, 3))  # three share it
    assert slots.limit == 2
    slots.record(_card(18.2, 2))
    assert slots.limit == 1  # two are no better than one either
    assert "2 at once moved 36.4 MB/s, 1 write 36.0 MB/s" in slots.decisions[-1]


def test_small_or_quick_writes_and_missing_facts_are_not_samples() -> None:
    slots = WriteSlots(2)
    slots.record(Sample(10 * MB, 1.0, 1))  # under MIN_BYTES: latency, not throughput
    slots.record(Sample(GB, 0.1, 2))  # under MIN_SECONDS
    assert slots.rates == {}
    with slots.slot() as slot:
        slot.measured({"outcome": "no write facts"})  # a kit without the writer's facts
    assert slots.rates == {}


def test_the_median_of_recent_writes_damps_one_odd_sample() -> None:
    slots = WriteSlots(2)
    for rate in (18, 18, 2):  # one write on a card that was slow for its own reasons
        slots.record(_card(rate, 1))
    slots.record(_card(17, 2))
    assert slots.limit == 2  # 34 MB/s vs the median 18: two scale


def test_max_parallel_writes_is_a_positive_number_or_auto() -> None:
    assert parse_maximum(2, 3, "rig.yaml: run.max_parallel_writes") == 2
    assert parse_maximum("auto", 3, "rig.yaml: run.max_parallel_writes") == 3
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ConfigError) as e:
            parse_maximum(bad, 3, "rig.yaml: run.max_parallel_writes")
        assert e.value.where == "rig.yaml: run.max_parallel_writes"


# --- real threads, real file writes, a bus rate-limited here ---------------------------


class Bus:
    """A shared bus of ``total`` bytes/s; each card takes at most ``card`` bytes/s of it.

    Time slices of 10 ms: in each, every writer may move its share of the bus."""

    def __init__(self, total: float, card: float) -> None:
        self.total, self.card = total, card
        self.lock = threading.Lock()
        self.active = 0

    def write(self, path: Path, size: int) -> dict[str, float | int]:
        chunk = 16 * 1024
        data = os.urandom(chunk)
        with self.lock:
            self.active += 1
        start = time.monotonic()
        done = 0
        try:
            with open(path, "wb") as f:
                while done < size:
                    with self.lock:
                        rate = min(self.card, self.total / self.active)
                    n = min(chunk, size - done)
                    f.write(data[:n])
                    done += n
                    # pace: this writer may have moved done bytes by now at this rate
                    ahead = done / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                f.flush()  # no fsync: the rate is the bus's here, not this host's disk
        finally:
            with self.lock:
                self.active -= 1
        return {
            "bytes_written": size,
            "bytes_unchanged": 0,
            "write_seconds": time.monotonic() - start,
        }


def _write_rounds(slots: WriteSlots, bus: Bus, tmp_path: Path, rounds: list[int], size: int):
    """Rounds of writes started together (each round waits for the last)."""
    for r, writers in enumerate(rounds):

        def one(i: int, r: int = r) -> None:
            with slots.slot() as slot:
                slot.measured(bus.write(tmp_path / f"card-{r}-{i}.img", size))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)


def test_real_writes_on_a_saturated_bus_stop_admitting_the_third(tmp_path: Path) -> None:
    # cards of 4 MB/s on a 6 MB/s bus: two move 6, three also 6 (each slower)
    bus = Bus(total=6 * MB, card=4 * MB)
    said: list[str] = []
    slots = WriteSlots(3, said.append, min_bytes=MB, min_seconds=0.2)
    size = 2 * MB
    _write_rounds(slots, bus, tmp_path, [1, 2, 3], size)
    assert slots.limit == 2, slots.rates
    assert len(said) == 1 and "3 at once moved" in said[0] and "2 writes" in said[0], said
    slots.peak = 0
    _write_rounds(slots, bus, tmp_path, [3], size)  # three ask; two are let in at a time
    assert slots.peak == 2
    assert slots.limit == 2  # two over one still scale (6 vs 4 MB/s)
    assert (tmp_path / "card-0-2.img").stat().st_size == size  # the third write happened too


def test_real_writes_on_a_bus_that_scales_keep_all_three(tmp_path: Path) -> None:
    bus = Bus(total=100 * MB, card=4 * MB)
    slots = WriteSlots(3, min_bytes=MB, min_seconds=0.2)
    _write_rounds(slots, bus, tmp_path, [1, 3, 3], 2 * MB)
    assert slots.limit == 3 and slots.decisions == [] and slots.peak == 3


# --- the pipeline holds the slot for the write phase only ------------------------------


class _Power:
    def off(self) -> None:
        pass

    def cycle(self) -> None:
        pass


class _Profile:
    """Prepare waits until told: it proves the devices' work runs beside a write."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.preparing: list[str] = []

    def prepare(self, ctx: ScenarioContext) -> None:
        self.preparing.append(ctx.device.name)
        assert self.release.wait(10), "the other device's write never came"

    def collect(self, ctx: ScenarioContext) -> None:
        pass


def test_a_device_boots_and_prepares_while_another_writes(tmp_path: Path) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    slots = WriteSlots(1)
    release = threading.Event()
    profile = _Profile(release)
    writing: list[str] = []

    def kit(name: str) -> DeviceKit:
        def write(disk: Path, log: StepLog) -> dict[str, object]:
            writing.append(name)
            if name == "b":  # b writes while a, out of its write slot, still prepares
                assert profile.preparing == ["a"] and not release.is_set()
                release.set()
            return {}

        return DeviceKit(
            name,
            _Power(),
            None,
            "127.0.0.1",
            port,
            lambda log: tmp_path,
            lambda log: None,
            write,
            lambda disk, log: {},
        )

    def pipeline(name: str) -> ScenarioPipeline:
        ctx = ScenarioContext(
            device=DeviceAddress(name, "127.0.0.1"),
            scenario_id=f"s-{name}",
            channel="stable",
            target_version="1.0",
            release_channel="stable",
            expect="updated",
            checks=(),
            results=tmp_path,
            log=StepLog(),
        )
        return ScenarioPipeline(
            kit(name), ctx, profile, EventBus(), write_slots=slots, stop_after_prepare=True
        )

    try:
        a = pipeline("a")
        first = threading.Thread(target=lambda: setattr(a, "result", a.run()))
        first.start()
        deadline = time.monotonic() + 10
        while "a" not in profile.preparing and time.monotonic() < deadline:
            time.sleep(0.01)
        b = pipeline("b").run()  # a single write slot: free again while a prepares
        first.join(10)
    finally:
        listener.close()
    assert writing == ["a", "b"]
    assert a.result.outcome == "passed", a.result.message
    assert b.outcome == "passed", b.message
    a_prepare = next(p for p in a.attempt.phases if p.phase == Phase.PREPARE.value)
    b_write = next(p for p in b.phases if p.phase == Phase.WRITE.value)
    assert a_prepare.start <= b_write.start  # and a's prepare waited for b's write
