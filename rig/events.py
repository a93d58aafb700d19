"""One structured event stream for everything the rig does.

Phase starts and ends, log lines and results go through one bus; the terminal
live view, the report timeline and the daemon dashboard are three subscribers,
not three logging paths.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str  # phase-start | phase-end | log | result | device
    message: str = ""
    device: str | None = None
    scenario: str | None = None
    phase: str | None = None
    time: float = field(default_factory=time.time)
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    """Thread-safe fan-out to subscribers; a failing subscriber never stops the run."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._secrets: list[str] = []

    def redact(self, secret: str) -> None:
        """Never let this value reach a subscriber (logs, report, dashboard): shown as ***.

        Values shorter than 4 characters are not masked: they would blank out device
        names and words everywhere, and are no secret anyway."""
        if len(secret) >= 4:
            with self._lock:
                self._secrets.append(secret)

    def _redacted(self, event: Event) -> Event:
        def clean(value: Any) -> Any:
            if isinstance(value, str):
                for secret in self._secrets:
                    value = value.replace(secret, "***")
                return value
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return type(value)(clean(v) for v in value)
            return value

        message, data = clean(event.message), clean(event.data)
        if message == event.message and data == event.data:
            return event
        return dataclasses.replace(event, message=message, data=data)

    def subscribe(self, fn: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(fn)

    def emit(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subscribers)
            secrets = bool(self._secrets)
        if secrets:
            event = self._redacted(event)
        for fn in subs:
            try:
                fn(event)
            except Exception:  # a broken view must not break a run
                import logging

                logging.getLogger(__name__).exception("event subscriber failed")


class StepLog:
    """What a scenario step writes to: log lines and timed sub-steps, as events."""

    def __init__(
        self, bus: EventBus | None = None, *, device: str | None = None, scenario: str | None = None
    ) -> None:
        self.bus = bus or EventBus()
        self.device = device
        self.scenario = scenario
        self.phase: str | None = None

    def __call__(self, message: str, **data: Any) -> None:
        self.bus.emit(Event("log", message, self.device, self.scenario, self.phase, data=data))

    @contextmanager
    def step(self, title: str, **data: Any) -> Iterator[None]:
        """Log a titled action with its duration (labgrid's @step, as a context manager)."""
        start = time.monotonic()
        self(f"{title} ...", **data)
        try:
            yield
        except BaseException as e:
            self(f"{title} failed after {time.monotonic() - start:.1f}s: {e}")
            raise
        self(f"{title} done in {time.monotonic() - start:.1f}s")
