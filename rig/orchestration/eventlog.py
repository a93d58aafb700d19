"""A run's event log, ``events.jsonl`` in its report directory, and what is drawn from it.

One subscriber of the run's bus writes every event as one JSON object per line
(already redacted by the bus), flushed per event so a reader sees it at once;
the same subscriber renders each attempt's ``scenario.log`` for people. The
report's timeline and per-phase table, the terminal live view and the daemon's
dashboard all fold the same events with :class:`Fold`, so they show the same
phases. This module is the only one that knows the file's format.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rig.events import Event

FILE = "events.jsonl"
FIELDS = tuple(f.name for f in dataclasses.fields(Event))


def to_json(event: Event) -> str:
    """One line of the log (no newline); values JSON cannot hold are written as text."""
    return json.dumps(dataclasses.asdict(event), default=str, ensure_ascii=False)


def from_json(line: str) -> Event | None:
    """The event a line holds, or None for a line that is not one (a torn last line)."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        return None
    values = {k: raw[k] for k in FIELDS if k in raw}
    if not isinstance(values.get("data", {}), dict):
        values["data"] = {}
    try:
        values["time"] = float(values.get("time", 0.0))
    except (TypeError, ValueError):
        return None
    return Event(**values)


def read(path: Path) -> list[Event]:
    """Every complete event in a log; a missing file is an empty run so far.

    The writer may be half-way through its last line: only lines that end in a
    newline count."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            event = from_json(line)
            if event is not None:
                events.append(event)
    return events


def log_line(event: Event) -> str:
    """The event as people read it in scenario.log: ``19:14:12 [boot] waiting for ssh``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    return f"{stamp} [{event.phase or '-'}] {event.message}"


class EventLog:
    """The run's one writing subscriber: every event to events.jsonl, and the events of
    each running attempt to that attempt's scenario.log."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._attempts: dict[tuple[str, str], IO[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = to_json(event) + "\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._file.flush()
            attempt = self._attempts.get((event.scenario or "", event.device or ""))
            if attempt is not None:
                attempt.write(log_line(event) + "\n")
                attempt.flush()

    def attempt(self, scenario: str, device: str, results: Path) -> None:
        """From now on this scenario's events on this device also go to results/scenario.log."""
        handle = (results / "scenario.log").open("a", encoding="utf-8")
        with self._lock:
            old = self._attempts.pop((scenario, device), None)
            self._attempts[(scenario, device)] = handle
        if old is not None:
            old.close()

    def end_attempt(self, scenario: str, device: str) -> None:
        with self._lock:
            handle = self._attempts.pop((scenario, device), None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Later events are dropped: the run is over and its report written."""
        with self._lock:
            handles = [*self._attempts.values(), *([self._file] if self._file else [])]
            self._attempts.clear()
            self._file = None
        for handle in handles:
            handle.close()


@dataclass
class Span:
    """One phase of one scenario on one device, from its phase-start to its phase-end."""

    scenario: str
    device: str
    phase: str
    start: float
    end: float | None = None  # None: still running (or the run stopped inside it)
    outcome: str = "running"  # ok | failed | error | interrupted | running
    message: str = ""

    def duration(self, until: float) -> float:
        return max(0.0, (self.end if self.end is not None else until) - self.start)


@dataclass
class Now:
    """What a device (or a scenario) is doing at the latest event."""

    scenario: str = ""
    phase: str = "idle"
    since: float = 0.0
    last: str = ""  # the latest event's line, as scenario.log shows it
    message: str = ""  # the latest log line's or result's text, without stamp and phase
    outcome: str = ""  # the scenario's result, once there is one


@dataclass
class Fold:
    """The events folded into phases per scenario and device; add events as they come."""

    spans: list[Span] = field(default_factory=list)
    devices: dict[str, Now] = field(default_factory=dict)
    scenarios: dict[str, Now] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        device, scenario = event.device or "", event.scenario or ""
        if event.kind == "phase-start" and event.phase:
            self.spans.append(Span(scenario, device, event.phase, event.time))
        elif event.kind == "phase-end" and event.phase:
            for span in reversed(self.spans):
                if (span.scenario, span.device, span.phase) == (scenario, device, event.phase):
                    if span.end is None:
                        span.end = event.time
                        span.outcome = str(event.data.get("outcome", "ok"))
                        head = f"{event.phase} {span.outcome}"
                        span.message = event.message.removeprefix(head).removeprefix(": ")
                    break
        lanes = []
        if device:
            lanes.append(self.devices.setdefault(device, Now()))
        if scenario:
            lanes.append(self.scenarios.setdefault(scenario, Now(scenario=scenario)))
        first_line = event.message.splitlines()[0] if event.message else ""
        for now in lanes:
            if event.kind == "phase-start":
                now.scenario, now.phase, now.since = scenario, event.phase or "", event.time
                now.outcome = ""
            elif event.kind == "result":
                now.outcome = str(event.data.get("outcome", ""))
                if now is not self.scenarios.get(scenario):
                    now.scenario, now.phase, now.since = "", "idle", event.time
            now.last = log_line(dataclasses.replace(event, message=first_line))
            if event.kind in ("log", "result"):
                now.message = first_line

    def phases_of(self, scenario: str) -> list[str]:
        """The phases the scenario went through, in order (over all its attempts)."""
        return [s.phase for s in self.spans if s.scenario == scenario]

    def totals(self, until: float) -> dict[str, dict[str, float]]:
        """Seconds per phase per scenario (over all attempts), for the per-phase table."""
        out: dict[str, dict[str, float]] = {}
        for s in self.spans:
            per = out.setdefault(s.scenario, {})
            per[s.phase] = per.get(s.phase, 0.0) + s.duration(until)
        return out

    def scenario_rows(self, limit: int = 50) -> list[tuple[str, str, str]]:
        """(scenario, phase, last log line) per scenario: the dashboard's live table."""
        rows = []
        for sid, now in sorted(self.scenarios.items())[:limit]:
            rows.append((sid, now.outcome or now.phase, now.last))
        return rows


def fold(events: Iterable[Event]) -> Fold:
    out = Fold()
    for event in events:
        out.add(event)
    return out


def fold_file(path: Path) -> Fold:
    """The fold of a log on disk (a run that is still going, or one long finished)."""
    return fold(read(path))
