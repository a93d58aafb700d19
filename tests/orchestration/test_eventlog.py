"""events.jsonl: one subscriber writes it, and the report, the live view and the dashboard
are all drawn from it, so the three show the same phases for a run."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import time
from pathlib import Path

from rich.console import Console

from rig.daemon import pages
from rig.daemon.app import scenario_phases
from rig.events import Event, EventBus
from rig.orchestration import eventlog
from rig.orchestration.live import LiveView
from rig.orchestration.report import PHASE_COLOURS, RunReport, ScenarioReport, render_html

SECRET = "hunter2-admin-password"


def _phase(device: str, scenario: str, phase: str, outcome: str = "ok") -> list[Event]:
    """A phase's events in the shape the pipeline emits them (pipeline._run_phase)."""
    message = f"{phase} ok" if outcome == "ok" else f"{phase} {outcome}: it broke"
    return [
        Event("phase-start", phase, device, scenario, phase),
        Event("log", f"{phase}: working", device, scenario, phase),
        Event(
            "phase-end", message, device, scenario, phase, data={"outcome": outcome, "duration": 0}
        ),
    ]


def _result(device: str, scenario: str, outcome: str) -> Event:
    return Event("result", f"{scenario}: {outcome}", device, scenario, data={"outcome": outcome})


def test_every_event_is_one_flushed_redacted_line_and_scenario_log_is_rendered_from_it(
    tmp_path: Path,
) -> None:
    bus = EventBus()
    bus.redact(SECRET)
    log = eventlog.EventLog(tmp_path)
    bus.subscribe(log)
    results = tmp_path / "scenarios" / "s1"
    results.mkdir(parents=True)
    log.attempt("s1", "pi3-a", results)

    bus.emit(Event("phase-start", "boot", "pi3-a", "s1", "boot"))
    bus.emit(Event("log", f"login with {SECRET}", "pi3-a", "s1", "boot", data={"pw": SECRET}))
    bus.emit(Event("log", "another scenario's line", "pi3-b", "s2", "write"))
    # read while the writer still holds the file open: each event is on disk already
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["phase-start", "log", "log"]
    assert SECRET not in "\n".join(lines)
    assert json.loads(lines[1])["data"] == {"pw": "***"}
    assert json.loads(lines[1])["message"] == "login with ***"

    text = (results / "scenario.log").read_text().splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in text] == [
        "[boot] boot",
        "[boot] login with ***",
    ]
    log.end_attempt("s1", "pi3-a")
    bus.emit(Event("log", "after the attempt", "pi3-a", "s1", "boot"))
    assert "after the attempt" not in (results / "scenario.log").read_text()
    log.close()
    bus.emit(Event("log", "after the run", "pi3-a", "s1", "boot"))
    events = eventlog.read(tmp_path / "events.jsonl")
    assert [e.message for e in events][-1] == "after the attempt"
    assert events[1] == Event(
        "log", "login with ***", "pi3-a", "s1", "boot", events[1].time, {"pw": "***"}
    )


def test_a_torn_last_line_and_foreign_lines_are_not_events(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = eventlog.to_json(Event("log", "fine", "pi3-a", "s1", "boot"))
    path.write_text(f'{good}\n[1, 2]\nnot json\n{{"kind": "log", "time": "x"}}\n{good[:20]}')
    assert [e.message for e in eventlog.read(path)] == ["fine"]
    assert eventlog.read(tmp_path / "missing.jsonl") == []


def _run_events() -> list[Event]:
    """One run on two devices in parallel; no-boot fails to boot and is retried."""
    events: list[Event] = []
    for ph in ("to-host", "write", "provision", "to-dut", "boot"):
        a = _phase("pi3-a", "update", ph)
        b = _phase("pi3-b", "no-boot", ph, "error" if ph == "boot" else "ok")
        events += [a[0], b[0], a[1], b[1], a[2], b[2]]  # both devices inside the phase
    events.append(_result("pi3-b", "no-boot", "error"))
    for ph in ("prepare", "update", "verify"):
        events += _phase("pi3-a", "update", ph)
    events += _phase("pi3-b", "no-boot", "to-host")  # the retry
    events.append(_result("pi3-a", "update", "passed"))
    events += _phase("pi3-b", "no-boot", "write") + _phase("pi3-b", "no-boot", "boot", "error")
    events.append(_result("pi3-b", "no-boot", "error"))
    return events


def _run_log(directory: Path, upto: int | None = None) -> list[Event]:
    """The run's events through a bus to the EventLog; ``upto``: the run so far."""
    bus = EventBus()
    log = eventlog.EventLog(directory)
    bus.subscribe(log)
    emitted = _run_events()[:upto]
    for ev in emitted:
        bus.emit(ev)
    log.close()
    return emitted


def _report(started: float, finished: float) -> RunReport:
    def scenario(sid: str, outcome: str) -> ScenarioReport:
        return ScenarioReport(
            sid, "", "octopi-1.0.0", "stable", None, "updated", [], outcome, "", "pi3-a", 1.0, ""
        )

    return RunReport(
        "run",
        "m.json",
        {"version": "1.11.0"},
        "rig run m.json",
        started,
        finished,
        "error",
        3,
        ["pi3-a", "pi3-b"],
        [scenario("update", "passed"), scenario("no-boot", "error")],
    )


def _timeline(page: str) -> list[tuple[str, str, str]]:
    """(scenario, phase, outcome) of each bar of the report's timeline, in order."""
    tips = re.findall(r"<rect [^>]*><title>([^<]*)</title>", page)
    bars = []
    for tip in tips:
        scenario, phase, _took, outcome = html.unescape(tip).split(" · ", 3)
        bars.append((scenario, phase, outcome.split(": ", 1)[0]))
    return bars


def _phase_table(page: str) -> dict[str, list[str]]:
    """scenario -> phases with a time in the report's per-phase table."""
    part = page.split("<h2>Time per phase</h2>", 1)[1].split("<h2>Scenarios</h2>", 1)[0]
    head = re.findall(r"<th>([^<]*)</th>", part)[1:]
    out = {}
    for row in re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", part):
        cells = re.findall(r"<td>([^<]*)</td>", row[1])
        out[row[0]] = [h for h, c in zip(head, cells, strict=True) if c]
    return out


def _live_lanes(events: list[Event]) -> dict[str, tuple[str, str]]:
    """device -> (scenario, phase) as the terminal's live table shows it."""
    view = LiveView(["pi3-a", "pi3-b"], Console(file=io.StringIO(), force_terminal=False))
    for ev in events:
        view.on_event(ev)
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False).print(view._table())
    lanes = {}
    for line in out.getvalue().splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 4 and cells[1] in ("pi3-a", "pi3-b"):
            lanes[cells[1]] = (cells[2], cells[3])
    return lanes


def _dashboard(report_dir: Path) -> dict[str, str]:
    """scenario -> phase in the dashboard's live table, from the report directory."""
    page = pages.dashboard([], [], [], [], "", scenario_phases(str(report_dir)))
    rows = re.findall(r"<tr><td>([^<]*)</td><td><strong>([^<]*)</strong></td>", page)
    return {html.unescape(s): html.unescape(p) for s, p in rows}


def test_report_live_view_and_dashboard_show_the_same_phases_mid_run(tmp_path: Path) -> None:
    """Stopped in the middle: each view says the same phase for each scenario."""
    started = time.time()
    _run_log(tmp_path, upto=6 * 2 + 4)  # both inside provision: started, logged, not ended
    events = eventlog.read(tmp_path / "events.jsonl")
    lanes = _live_lanes(events)
    dashboard = _dashboard(tmp_path)
    bars = _timeline(render_html(_report(started, time.time()), tmp_path))
    last_bar = {s: p for s, p, _ in bars}
    running = {s: p for s, p, outcome in bars if outcome == "running"}

    assert lanes == {"pi3-a": ("update", "provision"), "pi3-b": ("no-boot", "provision")}
    assert dashboard == {"update": "provision", "no-boot": "provision"}
    assert last_bar == dashboard and running == dashboard


def test_report_live_view_and_dashboard_show_the_same_phases_for_the_whole_run(
    tmp_path: Path,
) -> None:
    started = time.time()
    emitted = _run_log(tmp_path)
    events = eventlog.read(tmp_path / "events.jsonl")
    assert len(events) == len(emitted)  # the log holds everything the bus carried
    page = render_html(_report(started, time.time()), tmp_path)

    # the plain live view (piped): one line per phase start, end and result
    out = io.StringIO()
    view = LiveView(["pi3-a", "pi3-b"], Console(file=out, force_terminal=False))
    with contextlib.redirect_stdout(out):
        for ev in events:
            view.on_event(ev)
    started_lines = re.findall(r"^\S+ (\S+) (\S+): (\S+) \.\.\.$", out.getvalue(), re.M)
    live = [(scenario, phase) for _, scenario, phase in started_lines]
    report = [(s, p) for s, p, _ in _timeline(page)]
    assert live == report
    assert report.count(("no-boot", "boot")) == 2  # both attempts are in both views
    assert ("no-boot", "boot", "error") in _timeline(page)

    table = _phase_table(page)
    for sid in ("update", "no-boot"):
        assert table[sid] == [p for p in PHASE_COLOURS if (sid, p) in report]
    assert table["no-boot"] == ["to-host", "write", "provision", "to-dut", "boot"]
    # finished: the dashboard shows each scenario's result, the live view idle devices
    assert _dashboard(tmp_path) == {"update": "passed", "no-boot": "error"}
    assert _live_lanes(events) == {"pi3-a": ("", "idle"), "pi3-b": ("", "idle")}
