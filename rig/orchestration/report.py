"""A run's report directory: results.json, junit.xml and report.html.

Written from the same result objects at the end of a run (and on Ctrl-C, as a
partial report); :func:`assemble_report` makes them from the scheduler's jobs.
The HTML is one self-contained file: results table, per-phase timings and a
timeline of what each device did when (both folded from the run's event log,
events.jsonl, as the live view and the dashboard fold it), screenshots, logs and
the exact command line that re-runs each scenario. The same objects also render
the Markdown summary a CI job shows on its page ($GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import html
import json
import os
import re
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rig.errors import EXIT_INFRA, EXIT_OK, EXIT_PRODUCT
from rig.orchestration import eventlog

if TYPE_CHECKING:
    from rig.orchestration.matrix import Matrix, Scenario
    from rig.orchestration.scheduler import Job

OUTCOME_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "error": "#ef6c00",
    "interrupted": "#6d4c41",
    "not-run": "#757575",
}
PHASE_COLOURS = {
    "to-host": "#90a4ae",
    "write": "#42a5f5",
    "provision": "#26c6da",
    "to-dut": "#90a4ae",
    "boot": "#ab47bc",
    "prepare": "#ffca28",
    "snapshot": "#8d6e63",
    "update": "#66bb6a",
    "verify": "#9ccc65",
    "checks": "#ff7043",
    "collect": "#bdbdbd",
    "power-off": "#78909c",
}


@dataclass
class ScenarioReport:
    id: str
    description: str
    image: str
    channel: str
    start_version: str | None
    expect: str
    checks: list[str]
    outcome: str
    message: str
    device: str
    duration: float
    command: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # relative to the report directory
    representative: str = ""  # why not, when the device differs from the real image
    # the starting-state snapshot the card was written from / kept as (keys, or None)
    snapshot: dict[str, Any] = field(default_factory=lambda: {"used": None, "captured": None})


@dataclass
class RunReport:
    run_id: str
    matrix: str
    release: dict[str, Any]
    command: str
    started: float
    finished: float
    outcome: str  # passed | failed | error | interrupted
    exit_code: int
    devices: list[str]
    scenarios: list[ScenarioReport]
    host: str = field(default_factory=socket.gethostname)  # the flash host that ran it

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.scenarios:
            out[s.outcome] = out.get(s.outcome, 0) + 1
        return out


def run_outcome(outcomes: list[str], interrupted: bool) -> tuple[str, int]:
    """The run's verdict and exit code from its scenarios' outcomes."""
    if interrupted or any(o in ("error", "interrupted", "not-run") for o in outcomes):
        return ("interrupted" if interrupted else "error"), EXIT_INFRA
    if any(o == "failed" for o in outcomes):
        return "failed", EXIT_PRODUCT
    return "passed", EXIT_OK


def assemble_report(
    *,
    run_id: str,
    matrix: Matrix,
    jobs: list[Job],
    directory: Path,
    started: float,
    interrupted: bool,
    command: str,
    devices: list[str],
    start_version: Callable[[Scenario], str | None],
    representative: Callable[[Scenario, dict], str] | None = None,
    lease_lost: str = "",
) -> RunReport:
    """The scheduler's jobs as the report: one ScenarioReport per scenario, in matrix order.

    ``lease_lost`` (why the run was cancelled) becomes the message of every scenario
    it stopped; ``start_version`` says what a scenario's card started from;
    ``representative`` why a scenario's device was not like the real image ("": it was)."""
    scenario_reports = []
    for job in jobs:
        s = job.scenario
        attempts = [asdict(a) for a in job.attempts]
        last = attempts[-1] if attempts else {"device": "-", "outcome": "not-run"}
        message = last.get("message", "not started")
        results = directory / "scenarios" / s.id
        files = (
            sorted(str(p.relative_to(directory)) for p in results.rglob("*") if p.is_file())
            if results.exists()
            else []
        )
        scenario_reports.append(
            ScenarioReport(
                id=s.id,
                description=s.description,
                image=s.image,
                channel=s.channel,
                start_version=start_version(s),
                expect=s.expect,
                checks=list(s.checks),
                outcome=last["outcome"],
                message=f"cancelled: {lease_lost}"
                if lease_lost and last["outcome"] in ("interrupted", "not-run")
                else message,
                device=last["device"],
                duration=(job.finished or time.time()) - (job.started or started)
                if job.started
                else 0.0,
                command=matrix.command_line(s),
                attempts=attempts,
                facts=job.facts,
                files=files,
                representative=representative(s, job.facts) if representative else "",
                snapshot={
                    k: (job.facts.get("snapshot") or {}).get(k) for k in ("used", "captured")
                },
            )
        )
    order = {s.id: i for i, s in enumerate(matrix.scenarios)}
    scenario_reports.sort(key=lambda r: order.get(r.id, 0))
    outcome, code = run_outcome([r.outcome for r in scenario_reports], interrupted)
    return RunReport(
        run_id=run_id,
        matrix=str(matrix.path),
        release=asdict(matrix.release),
        command=command,
        started=started,
        finished=time.time(),
        outcome=outcome,
        exit_code=code,
        devices=list(devices),
        scenarios=scenario_reports,
    )


def write_report(report: RunReport, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    data["passed"] = report.outcome == "passed"
    data["counts"] = report.counts
    _atomic_write(directory / "results.json", json.dumps(data, indent=2, default=str))
    _atomic_write(directory / "junit.xml", junit_xml(report))
    _atomic_write(directory / "report.html", render_html(report, directory))
    return directory / "report.html"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# JUnit <failure>/<error> type per outcome: reporters print "type: message"
JUNIT_TYPES = {
    "failed": "product-failure",
    "error": "infrastructure-error",
    "interrupted": "interrupted",
}
# characters XML 1.0 forbids: an ANSI colour from a captured log would make the file unparsable
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", _ANSI.sub("", text))


def junit_classname(matrix: str) -> str:
    """The matrix file's stem, dots replaced: reporters take the part after the last dot."""
    stem = Path(matrix).name.removesuffix(".json")
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "matrix"


def scenario_lines(matrix: str) -> dict[str, int]:
    """Line of each scenario's `"id": ...` in the matrix file, for annotations on that line."""
    try:
        text = Path(matrix).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for found in re.finditer(r'"id"\s*:\s*"([^"]+)"', line):
            lines.setdefault(found.group(1), number)
    return lines


def junit_xml(report: RunReport) -> str:
    """One <testsuite> of one <testcase> per scenario, shaped for the common CI reporters.

    Product failures are <failure>, infrastructure problems <error>, each with a
    `type`; `classname` has no dots (reporters split it on the last one); `file`
    and `line` point at the scenario in the matrix, where reporters annotate.
    """
    counts = report.counts
    totals = {
        "tests": str(len(report.scenarios)),
        "failures": str(counts.get("failed", 0)),
        "errors": str(counts.get("error", 0) + counts.get("interrupted", 0)),
        "skipped": str(counts.get("not-run", 0)),
        "time": f"{max(0.0, report.finished - report.started):.3f}",
    }
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started))
    classname = junit_classname(report.matrix)
    version = report.release.get("version")
    suites = ET.Element("testsuites", name=f"rig {classname}", **totals)
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"{classname} release {version}",
        **totals,
        timestamp=timestamp,
        hostname=report.host or socket.gethostname(),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in (
        ("release", version),
        ("channel", report.release.get("channel")),
        ("run", report.run_id),
        ("matrix", report.matrix),
        ("devices", " ".join(report.devices)),
        ("command", report.command),
    ):
        ET.SubElement(props, "property", name=key, value=_xml_text(str(value or "")))
    lines = scenario_lines(report.matrix)
    for s in report.scenarios:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=classname,
            name=s.id,
            time=f"{s.duration:.3f}",
            file=report.matrix,
        )
        if s.id in lines:
            case.set("line", str(lines[s.id]))
        message = _xml_text(s.message) or s.outcome
        if s.outcome in JUNIT_TYPES:
            tag = "failure" if s.outcome == "failed" else "error"
            element = ET.SubElement(case, tag, message=message[:500], type=JUNIT_TYPES[s.outcome])
            element.text = message
        elif s.outcome == "not-run":
            ET.SubElement(case, "skipped", message=message[:500])
        if s.representative:
            case.set("name", f"{s.id} [NOT REPRESENTATIVE]")
            cprops = ET.SubElement(case, "properties")
            ET.SubElement(cprops, "property", name="representative", value="false")
            ET.SubElement(cprops, "property", name="why", value=_xml_text(s.representative))
        ET.SubElement(case, "system-out").text = _xml_text(
            (f"{s.representative}\n" if s.representative else "")
            + f"device: {s.device}\nre-run: {s.command}\n"
        )
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


STEP_SUMMARY_LIMIT = 1_000_000  # GitHub refuses a step summary over 1024k
OUTCOME_MARKS = {
    "passed": "✅",
    "failed": "❌",
    "error": "⚠️",
    "interrupted": "⏹️",
    "not-run": "⏭️",
}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline markup in a table cell


def _md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no markup, no HTML."""
    one_line = " ".join(_NOT_XML.sub("", _ANSI.sub("", text)).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", one_line), quote=False)


def summary_markdown(report: RunReport, report_path: Path | None = None) -> str:
    """The run as GitHub-flavoured Markdown: verdict, counts, one row per scenario, re-runs."""
    rel = report.release
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "no scenarios"
    head = [
        f"### {OUTCOME_MARKS.get(report.outcome, '')} rig: release "
        f"{_md_cell(str(rel.get('version')))} ({_md_cell(str(rel.get('channel')))}) "
        f"{report.outcome}",
        "",
        f"`{report.matrix}` · run `{report.run_id}` · {counts} · "
        f"{_fmt(report.finished - report.started)} · host `{report.host}` · "
        f"devices {_md_cell(', '.join(report.devices) or '-')} · exit code {report.exit_code}",
        "",
        "| scenario | outcome | device | time | message |",
        "|---|---|---|---|---|",
    ]
    tail = []
    reruns = [s.command for s in report.scenarios if s.outcome != "passed"]
    if reruns:
        tail += ["", "<details><summary>re-run what did not pass</summary>", "", "```sh"]
        tail += [*reruns, "```", "", "</details>"]
    if report_path is not None:
        tail += ["", f"Report: `{report_path}`"]
    size = sum(len(line.encode()) + 1 for line in head + tail) + 200
    rows = []
    for i, s in enumerate(report.scenarios):
        note = f"{s.representative}; " if s.representative else ""
        row = (
            f"| `{s.id}` | {OUTCOME_MARKS.get(s.outcome, '')} {s.outcome}"
            f"{' (NOT REPRESENTATIVE)' if s.representative else ''} | "
            f"{_md_cell(s.device)} | {_fmt(s.duration)} | "
            f"{_md_cell(note + s.message[:300])} |"
        )
        size += len(row.encode()) + 1
        if size > STEP_SUMMARY_LIMIT:
            rows.append(f"| … | {len(report.scenarios) - i} more in results.json | | | |")
            break
        rows.append(row)
    return "\n".join(head + rows + tail) + "\n"


def append_step_summary(report: RunReport, summary_file: Path, report_path: Path) -> None:
    """Append, never overwrite: the file collects every step of the job."""
    with open(summary_file, "a+", encoding="utf-8") as f:
        # a previous step's text that did not end its line would swallow our heading
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            ends_line = f.read(1) == "\n"
            f.seek(end)
            if not ends_line:
                f.write("\n\n")
        f.write(summary_markdown(report, report_path))


def _fmt(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def timeline_svg(report: RunReport, spans: list[eventlog.Span]) -> str:
    """One lane per device, one bar per phase, coloured by phase, outlined by outcome."""
    lanes = sorted({p.device for p in spans if p.device})
    if not lanes:
        return "<p>No device did anything.</p>"
    t0 = report.started
    span = max(1.0, report.finished - t0)
    width, left, lane_h = 1000, 90, 28
    height = lane_h * len(lanes) + 40
    scale = (width - left - 10) / span
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'class="timeline" role="img" aria-label="timeline of the devices">'
    ]
    for i, lane in enumerate(lanes):
        y = 10 + i * lane_h
        parts.append(f'<text x="4" y="{y + 17}" font-size="13">{html.escape(lane)}</text>')
    for p in spans:
        if p.device not in lanes:
            continue
        y = 10 + lanes.index(p.device) * lane_h
        x = left + (p.start - t0) * scale
        took = p.duration(report.finished)
        w = max(1.5, took * scale)
        colour = PHASE_COLOURS.get(p.phase, "#999")
        stroke = "#c62828" if p.outcome in ("failed", "error") else "none"
        tip = html.escape(
            f"{p.scenario} · {p.phase} · {_fmt(took)} · {p.outcome}"
            + (f": {p.message}" if p.message else "")
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 8}" '
            f'fill="{colour}" stroke="{stroke}" stroke-width="2">'
            f"<title>{tip}</title></rect>"
        )
    ticks = 6
    for k in range(ticks + 1):
        x = left + (width - left - 10) * k / ticks
        parts.append(
            f'<text x="{x:.0f}" y="{height - 8}" font-size="11" text-anchor="middle">'
            f"{_fmt(span * k / ticks)}</text>"
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="chip" style="background:{c}">{html.escape(n)}</span>'
        for n, c in PHASE_COLOURS.items()
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#555;margin-top:0}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} code{background:#f3f3f3;padding:0 .25rem;border-radius:3px}
.badge{color:#fff;border-radius:4px;padding:.1rem .5rem;font-weight:600}
.chip{color:#000;border-radius:3px;padding:0 .4rem;margin-right:.2rem;font-size:.8rem}
.timeline{width:100%;border:1px solid #eee} details{margin:.5rem 0 1rem}
pre{background:#111;color:#eee;padding:.75rem;overflow:auto;max-height:30rem;font-size:.8rem}
.warn{color:#b26a00}
img.shot{max-width:420px;border:1px solid #ccc;margin:.25rem}
"""


def _badge(outcome: str) -> str:
    colour = OUTCOME_COLOURS.get(outcome, "#555")
    return f'<span class="badge" style="background:{colour}">{html.escape(outcome)}</span>'


def _log_tail(directory: Path | None, name: str, lines: int = 300) -> str:
    if directory is None:
        return ""
    try:
        text = (directory / name).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _snapshot_line(snapshot: dict[str, Any]) -> str:
    used, captured = snapshot.get("used"), snapshot.get("captured")
    if used:
        return f"from snapshot {used[:12]} (first boot and pin skipped; identity fresh)"
    if captured:
        return f"from the image; kept as snapshot {captured[:12]}"
    return "from the image"


def render_html(report: RunReport, directory: Path | None = None) -> str:
    """The report page; its timeline and per-phase table come from directory/events.jsonl."""
    e = html.escape
    phases = eventlog.fold_file(directory / eventlog.FILE) if directory else eventlog.Fold()
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items()))
    rel = report.release
    rows = []
    for s in report.scenarios:
        rows.append(
            "<tr>"
            f'<td><a href="#{e(s.id)}">{e(s.id)}</a></td><td>{_badge(s.outcome)}'
            + (' <b class="warn">NOT REPRESENTATIVE</b>' if s.representative else "")
            + "</td>"
            f"<td>{e(s.device)}</td><td>{e(s.image)}</td><td>{e(s.start_version or '-')}</td>"
            f"<td>{e(s.channel)}</td><td>{e(s.expect)}</td><td>{_fmt(s.duration)}</td>"
            f"<td>{e(s.message[:200])}</td></tr>"
        )
    phase_names = list(PHASE_COLOURS)
    timing_rows = []
    per_scenario = phases.totals(until=report.finished)
    for s in report.scenarios:
        totals = per_scenario.get(s.id, {})
        cells = "".join(f"<td>{_fmt(totals[n]) if n in totals else ''}</td>" for n in phase_names)
        timing_rows.append(f"<tr><td>{e(s.id)}</td>{cells}</tr>")
    details = []
    for s in report.scenarios:
        shots = "".join(
            f'<a href="{e(f)}"><img class="shot" src="{e(f)}" alt="{e(f)}"></a>'
            for f in s.files
            if f.endswith(".png")
        )
        files = "".join(
            f'<li><a href="{e(f)}">{e(f)}</a></li>' for f in s.files if not f.endswith(".png")
        )
        attempts = "".join(
            f"<li>{e(a['device'])}: {_badge(a['outcome'])} {e(a['message'])}</li>"
            for a in s.attempts
        )
        log_text = ""
        log_file = next((f for f in s.files if f.endswith("scenario.log")), None)
        if log_file:
            tail = e(_log_tail(directory, log_file))
            log_text = f"<details><summary>log (last lines)</summary><pre>{tail}</pre></details>"
        facts = e(json.dumps(s.facts, indent=1, default=str)) if s.facts else ""
        details.append(
            f'<section id="{e(s.id)}"><h3>{e(s.id)} {_badge(s.outcome)}</h3>'
            f"<p>{e(s.description)}</p>"
            + (f'<p class="warn"><b>{e(s.representative)}</b></p>' if s.representative else "")
            + f"<p>Re-run: <code>{e(s.command)}</code></p>"
            + f"<p>Starting state: {e(_snapshot_line(s.snapshot))}</p>"
            f"<p>Attempts:</p><ul>{attempts}</ul>"
            + (f"<details><summary>facts</summary><pre>{facts}</pre></details>" if facts else "")
            + shots
            + (f"<ul>{files}</ul>" if files else "")
            + log_text
            + "</section>"
        )
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>rig report {e(report.run_id)}</title><style>{CSS}</style></head><body>
<h1>{_badge(report.outcome)} release {e(str(rel.get("version")))}
({e(str(rel.get("channel")))})</h1>
<p class="sub">{e(report.matrix)} · run {e(report.run_id)} ·
{e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.started)))} ·
{_fmt(report.finished - report.started)} · {e(counts)} · devices {e(", ".join(report.devices))}</p>
<p>Command: <code>{e(report.command)}</code></p>
<h2>Results</h2>
<table><tr><th>scenario</th><th>outcome</th><th>device</th><th>image</th><th>start</th>
<th>channel</th><th>expect</th><th>time</th><th>message</th></tr>{"".join(rows)}</table>
<h2>Timeline</h2>{timeline_svg(report, phases.spans)}
<h2>Time per phase</h2>
<table><tr><th>scenario</th>{"".join(f"<th>{e(n)}</th>" for n in phase_names)}</tr>
{"".join(timing_rows)}</table>
<h2>Scenarios</h2>{"".join(details)}
</body></html>"""
    return body
