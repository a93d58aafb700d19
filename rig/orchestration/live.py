"""The terminal view of a run: one line per device, or plain lines when piped.

It folds the run's events with :class:`rig.orchestration.eventlog.Fold`, as the
report and the dashboard fold events.jsonl, so all three show the same phases.
"""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from rig.events import Event
from rig.orchestration.eventlog import Fold, Now


class LiveView:
    """Subscribe ``view.on_event`` to the run's bus (or feed it a log's events); use as a
    context manager."""

    def __init__(self, devices: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=False)
        self.interactive = self.console.is_terminal
        self.fold = Fold(devices={d: Now() for d in devices})
        self.lock = threading.Lock()
        self.live: Live | None = None
        self.started = time.time()

    def __enter__(self) -> LiveView:
        if self.interactive:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
            threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(None, None, None)
            self.live = None

    def _tick(self) -> None:
        while self.live is not None:
            with self.lock:
                if self.live is not None:
                    self.live.update(self._table())
            time.sleep(0.5)

    def _table(self) -> Table:
        t = Table(title=f"rig run · {time.time() - self.started:.0f}s", title_justify="left")
        for col in ("device", "scenario", "phase", "elapsed", "last"):
            t.add_column(
                col, overflow="ellipsis", no_wrap=True, max_width=60 if col == "last" else None
            )
        for name, lane in self.fold.devices.items():
            t.add_row(
                name,
                lane.scenario,
                lane.phase,
                f"{time.time() - lane.since:.0f}s" if lane.scenario else "",
                lane.message,
            )
        return t

    def on_event(self, ev: Event) -> None:
        with self.lock:
            self.fold.add(ev)
            if not self.interactive and ev.kind in ("phase-start", "phase-end", "result", "device"):
                stamp = time.strftime("%H:%M:%S", time.localtime(ev.time))
                who = f"{ev.device or '-'} {ev.scenario or ''}".strip()
                extra = ""
                if ev.kind == "phase-end" and "duration" in ev.data:
                    extra = f" ({ev.data['duration']:.1f}s)"
                text = ev.message if ev.kind != "phase-start" else f"{ev.phase} ..."
                print(f"{stamp} {who}: {text}{extra}", file=sys.stdout, flush=True)
