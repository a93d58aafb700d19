"""How many cards are written at once: a limit that follows the bus throughput measured.

The muxes share the flash host's USB bus. A second card written beside the
first usually doubles what moves (an SD card takes 10-20 MB/s, a USB 2 bus
~35-40 MB/s); a third on a saturated bus only makes all three slower, and the
devices then wait for their cards instead of booting. So the limit starts at
the configured maximum and every finished write reports (bytes, seconds, how
many writes ran beside it). The aggregate throughput at k writes is k times the
median of the last per-write rates measured at k. When k writes move no more
than ``GAIN`` above what fewer writes moved, the k-th is not admitted any more:
the limit drops to k-1, and says why with the numbers. It never rises again
within a run (a run is short; the next run measures afresh).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rig.errors import ConfigError

GAIN = 0.15  # one more write must add at least this share of aggregate throughput
KEEP = 3  # per-write rates remembered per concurrency level (median of these)
MIN_BYTES = 32 << 20  # a write smaller than this measures latency, not throughput
MIN_SECONDS = 0.5
MB = 1e6


@dataclass
class Sample:
    """One finished write: what it moved, how long, beside how many writes (itself included)."""

    bytes: int
    seconds: float
    concurrency: int

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds


@dataclass
class Slot:
    """A held slot; it integrates the concurrency it ran at over its time."""

    started: float
    last: float
    area: float = 0.0  # integral of the number of running writes over time
    facts: dict[str, Any] | None = field(default=None)

    def measured(self, facts: dict[str, Any] | None) -> None:
        """The write's facts (bytes_written, bytes_unchanged, write_seconds): its sample."""
        self.facts = facts


def sample_bytes_seconds(facts: dict[str, Any] | None) -> tuple[int, float] | None:
    """(bytes over the bus, seconds) from the writer's facts; None when they have neither.

    Bytes the card already held were read and compared instead of written: they
    crossed the bus too."""
    if not isinstance(facts, dict):
        return None
    moved = facts.get("bytes_written")
    seconds = facts.get("write_seconds")
    if not isinstance(moved, int) or not isinstance(seconds, int | float):
        return None
    same = facts.get("bytes_unchanged")
    return moved + (same if isinstance(same, int) else 0), float(seconds)


class WriteSlots:
    """Admits at most ``limit`` concurrent card writes; the limit adapts down from samples."""

    def __init__(
        self,
        maximum: int,
        on_change: Callable[[str], None] | None = None,
        *,
        min_bytes: int = MIN_BYTES,
        min_seconds: float = MIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1:
            raise ValueError(f"at least one write at a time, not {maximum}")
        self.maximum = maximum
        self.limit = maximum
        self.on_change = on_change or (lambda _message: None)
        self.min_bytes = min_bytes
        self.min_seconds = min_seconds
        self.clock = clock
        self.rates: dict[int, list[float]] = {}  # concurrency -> last per-write rates
        self.decisions: list[str] = []
        self.peak = 0  # the most writes that ever ran at once (for tests and the report)
        self._running: list[Slot] = []
        self._cond = threading.Condition()

    # --- admission -------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Add the time since the last change, at today's concurrency, to every running slot."""
        for slot in self._running:
            slot.area += len(self._running) * (now - slot.last)
            slot.last = now

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """Hold a write slot for the length of one write; report its facts on the slot."""
        with self._cond:
            while len(self._running) >= self.limit:
                self._cond.wait()
            now = self.clock()
            self._advance(now)
            held = Slot(now, now)
            self._running.append(held)
            self.peak = max(self.peak, len(self._running))
        try:
            yield held
        finally:
            with self._cond:
                now = self.clock()
                self._advance(now)
                self._running.remove(held)
                took = now - held.started
                self._cond.notify_all()
            measured = sample_bytes_seconds(held.facts)
            if measured is not None and took > 0:  # the mean number of writes it ran beside
                level = max(1, int(held.area / took + 0.5))
                self.record(Sample(measured[0], measured[1], level))

    # --- learning ----------------------------------------------------------------------

    def aggregate(self, level: int) -> float | None:
        """Bytes/s moved with ``level`` writes running: level x the median per-write rate."""
        rates = self.rates.get(level)
        return level * statistics.median(rates) if rates else None

    def record(self, sample: Sample) -> str | None:
        """Learn from one write; returns the decision when the limit changed."""
        with self._cond:
            if sample.bytes < self.min_bytes or sample.seconds < self.min_seconds:
                return None
            k = sample.concurrency
            rates = self.rates.setdefault(k, [])
            rates.append(sample.rate)
            del rates[:-KEEP]
            if k < 2 or k > self.limit:
                return None
            now = self.aggregate(k)
            lower = [j for j in range(k - 1, 0, -1) if self.rates.get(j)]
            if now is None or not lower:
                return None
            j = lower[0]  # the nearest fewer writes measured
            before = self.aggregate(j) or 0.0
            if now >= before * (1 + GAIN):
                return None
            self.limit = k - 1
            word = "write" if j == 1 else "writes"
            decision = (
                f"card writes: {k} at once moved {now / MB:.1f} MB/s, {j} {word} "
                f"{before / MB:.1f} MB/s (one more must add {GAIN:.0%}): "
                f"at most {self.limit} at once from now on"
            )
            self.decisions.append(decision)
            self._cond.notify_all()
        self.on_change(decision)
        return decision


def parse_maximum(value: Any, devices: int, where: str) -> int:
    """run.max_parallel_writes: a positive integer, or ``auto`` (every device at once)."""
    if value == "auto":
        return max(1, devices)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{value!r} is not a positive number of writes or 'auto'",
            where=where,
            hint="e.g. max_parallel_writes: 2, or auto to start with every device and let "
            "the measured bus throughput lower it",
        )
    return value
