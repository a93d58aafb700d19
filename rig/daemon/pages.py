"""The dashboard's HTML: server-rendered, escaped, no JavaScript.

Every value that came from outside (titles from webhooks, scenario ids, log
lines) goes through :func:`e`; the page skeleton is ``templates/base.html``.
"""

from __future__ import annotations

import datetime as dt
import html
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from rig.daemon.queue import Job


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@cache
def _base() -> Template:
    return Template(resources.files("rig.daemon").joinpath("templates", "base.html").read_text())


def page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return _base().substitute(title=e(title), body=body, refresh=meta)


def when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def state(job: Job) -> str:
    phase = f" ({e(job.phase)})" if job.phase and job.state == "running" else ""
    return f'<span class="state {e(job.state)}">{e(job.state)}</span>{phase}'


def table(headers: list[str], rows: list[list[str]], empty: str = "none") -> str:
    if not rows:
        return f"<p><em>{e(empty)}</em></p>"
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def job_rows(jobs: list[Job]) -> list[list[str]]:
    return [
        [
            f'<a href="/jobs/{j.id}">#{j.id}</a>',
            e(j.title),
            state(j),
            e((j.result or {}).get("summary", "")),
            e(when(j.created)),
        ]
        for j in jobs
    ]


JOB_HEADERS = ["job", "build", "state", "results", "received"]


def dashboard(
    devices: list[dict[str, Any]],
    active: list[Job],
    waiting: list[Job],
    history: list[Job],
    log_tail: str,
    live: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> str:
    dev_rows = [
        [
            e(d["name"]),
            e(d.get("model")),
            e(d.get("power")),
            e(d.get("mux")),
            e(d.get("health")),
            e(d.get("lease")),
            _last_run(d.get("last_run")),
        ]
        for d in devices
    ]
    parts = [
        "<h2>Devices</h2>",
        table(["device", "model", "power", "mux", "health", "in use by", "last run"], dev_rows),
        "<h2>Running</h2>",
        table(JOB_HEADERS, job_rows(active), "nothing running"),
    ]
    parts.append(live_table(live))
    if log_tail:
        parts.append(f"<pre class='log'>{e(log_tail)}</pre>")
    parts += [
        "<h2>Queue</h2>",
        table(JOB_HEADERS, job_rows(waiting), "the queue is empty"),
        "<h2>Recent</h2>",
        table(JOB_HEADERS, job_rows(history), "no finished jobs yet"),
    ]
    return page("dashboard", "\n".join(parts), refresh=10)


def _last_run(last: dict[str, Any] | None) -> str:
    """The device's newest scenario result from the results store: outcome, scenario, when."""
    if not last:
        return ""
    return (
        f'<span class="{e(last["outcome"])}">{e(last["outcome"])}</span> '
        f"{e(last['scenario'])} · {e(when(last['finished']))}"
    )


def live_table(live: list[tuple[str, str, str]]) -> str:
    """Each scenario of the running acceptance run: its current phase and last log line."""
    if not live:
        return ""
    rows = [
        [e(scenario), f"<strong>{e(phase)}</strong>", f"<code>{e(last)}</code>"]
        for scenario, phase, last in live
    ]
    return table(["scenario", "phase", "last log line"], rows)


def history(jobs: list[Job]) -> str:
    return page("history", "<h2>History</h2>" + table(JOB_HEADERS, job_rows(jobs), "no jobs yet"))


def _image_facts(job: Job) -> list[list[str]]:
    result = job.result or {}
    return [
        ["build", e(job.title)],
        ["image", f"<code>{e(Path(job.image_path).name if job.image_path else '')}</code>"],
        ["sha256", f"<code>{e(job.image_sha256)}</code>"],
        ["commit", f"<code>{e(job.sha or '')}</code>"],
        ["results", e(result.get("summary", ""))],
    ]


def job_page(
    job: Job,
    steps: list[Any],
    files: list[str],
    log_tail: str,
    live: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
) -> str:
    facts = [
        ["state", state(job)],
        ["kind", e(job.kind)],
        *_image_facts(job),
        ["attempts", e(job.attempts)],
    ]
    if job.error:
        facts.append(["error", f"<code>{e(job.error)}</code>"])
    if job.decision:
        facts.append(["decision", e(job.decision)])
    parts = [f"<h2>Job #{job.id}</h2>", table(["", ""], facts)]
    if live:
        parts += ["<h2>Now</h2>", live_table(live)]
    scen = (job.result or {}).get("scenarios") or []
    if scen:
        parts += [
            "<h2>Scenarios</h2>",
            table(
                ["scenario", "outcome"],
                [
                    [
                        e(s.get("id")),
                        f'<span class="{e(s.get("outcome"))}">{e(s.get("outcome"))}</span>',
                    ]
                    for s in scen
                ],
            ),
        ]
    if files:
        links = " · ".join(f'<a href="/jobs/{job.id}/report/{e(f)}">{e(f)}</a>' for f in files)
        parts.append(f"<h2>Report</h2><p>{links}</p>")
    step_rows = [
        [
            e(s["name"]),
            e(s["attempt"]),
            f'<span class="{e(s["state"])}">{e(s["state"])}</span>',
            e(when(s["started"])),
            e(f"{s['ended'] - s['started']:.1f}s" if s["ended"] else ""),
        ]
        for s in steps
    ]
    parts += ["<h2>Steps</h2>", table(["step", "attempt", "state", "started", "took"], step_rows)]
    if log_tail:
        parts.append(f"<h2>Acceptance output</h2><pre class='log'>{e(log_tail)}</pre>")
    live = job.state in ("queued", "running", "approved")
    return page(f"job {job.id}", "\n".join(parts), refresh=5 if live else None)


def confirm(job: Job, token: str, target: str) -> str:
    """The page an approval link opens: facts and two buttons; GET changes nothing."""
    body = (
        f"<h2>Release this image?</h2>{table(['', ''], _image_facts(job))}"
        f'<p class="target">Approving will publish <strong>{e(target)}</strong>.</p>'
        f'<p><a href="/jobs/{job.id}">job details and report</a></p>'
        f'<form class="decide" method="post" action="/approve/{e(token)}">'
        '<input type="hidden" name="decision" value="approve">'
        '<button class="approve" type="submit">Approve and publish</button></form>'
        f'<form class="decide" method="post" action="/approve/{e(token)}">'
        '<input type="hidden" name="decision" value="reject">'
        '<button class="reject" type="submit">Reject</button></form>'
    )
    return page("approve", body)


def decided(job: Job) -> str:
    what = "approved: publishing now" if job.state == "approved" else job.state
    body = (
        f"<h2>Job #{job.id} {e(what)}</h2>"
        f'<p>Follow it on <a href="/jobs/{job.id}">the job page</a>.</p>'
    )
    return page("decided", body)


def refusal(status: int, reason: str) -> str:
    return page("refused", f'<div class="refusal"><h2>Not possible</h2><p>{e(reason)}</p></div>')
