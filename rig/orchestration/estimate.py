"""How long a matrix will take on real devices: a schedule simulation.

Uses per-phase durations (from a timing profile such as the virtual rig's
``pi3`` profile, or from measured runs) and replays the scheduler's policy —
longest scenario first, one scenario per device, at most N card writes at a
time — to estimate wall time and compare it with the lower bound (the devices'
own work spread perfectly over the devices).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Work:
    scenario: str
    write: float  # seconds that need a write slot (to host + write + verify)
    rest: float  # seconds on the device after the write (boot, prepare, update, checks)

    @property
    def total(self) -> float:
        return self.write + self.rest


@dataclass(frozen=True)
class Estimate:
    wall: float
    lower_bound: float
    devices: int

    @property
    def ratio(self) -> float:
        return self.wall / self.lower_bound if self.lower_bound else 1.0


def simulate(work: list[Work], devices: int, write_slots: int) -> Estimate:
    """Event simulation of the scheduler: longest first, bounded concurrent writes."""
    pending = sorted(work, key=lambda w: -w.total)
    free_at = [0.0] * devices  # when each device can start its next scenario
    slots = [0.0] * max(1, write_slots)  # when each write slot is free
    heapq.heapify(slots)
    finish = 0.0
    for w in pending:
        d = min(range(devices), key=lambda i: free_at[i])
        ready = free_at[d]
        slot_free = heapq.heappop(slots)
        write_start = max(ready, slot_free)
        write_end = write_start + w.write
        heapq.heappush(slots, write_end)
        free_at[d] = write_end + w.rest
        finish = max(finish, free_at[d])
    total = sum(w.total for w in work)
    bound = max(
        total / devices,
        max((w.total for w in work), default=0.0),
        sum(w.write for w in work) / max(1, write_slots),
    )
    return Estimate(finish, bound, devices)


# Magnitudes for a Raspberry Pi 3 with a USB2 SD mux, from shared/reference
# (flashing.md, provisioning.md): a ~3 GB image with ~1.9 GB in use at 15 MB/s
# write and 25 MB/s read-back, first boot 3-5 min. What the product does on the
# device (prepare, update, checks) comes from its profile's phase_seconds and
# checks. Replace with measured values when available.
PI3_SECONDS = {
    "to-host": 5,
    "write": 1900 / 15 + 1900 / 25,
    "provision": 2,
    "boot": 240,
    "boot-again": 60,  # a boot that is not the first (from a snapshot, after a capture)
    "prepare-pinned": 240,
    "prepare": 60,
    "snapshot": 15 + 1900 / 30,  # halt, then the used blocks read back through the mux
    "update": 240,
    "verify": 20,
}


def pi3_work(
    scenario_id: str,
    pinned: bool,
    checks: tuple[str, ...],
    expect: str,
    product: Any = None,
    snapshot: str = "none",
) -> Work:
    """A scenario's device time on a real Pi 3, by phase: PI3_SECONDS, with the product
    profile's own magnitudes (``phase_seconds``, ``checks``) where it has them.

    ``snapshot``: ``none`` (the pristine image), ``keep`` (the image, then the prepared
    card is captured: halt, read back, boot again, prepare without the pin) or ``use``
    (a starting-state snapshot: no first boot, no pin)."""
    s = {**PI3_SECONDS, **dict(getattr(product, "phase_seconds", {}))}
    costs = dict(getattr(product, "checks", {}))
    write = s["to-host"] + s["write"]
    if snapshot == "use":
        rest = s["provision"] + s["boot-again"] + s["prepare"]
    else:
        rest = s["provision"] + s["boot"] + (s["prepare-pinned"] if pinned else s["prepare"])
    if snapshot == "keep":
        rest += s["snapshot"] + s["boot-again"] + s["prepare"]
    rest += s["update"] if expect == "updated" else 30
    if expect == "updated":
        rest += s["verify"] + sum(costs.get(c, 60) for c in checks)
    return Work(scenario_id, write, rest)
