"""The daemon's ASGI application: what it answers, as one route table.

Webhook routes only check, record and queue (a few milliseconds); the worker
threads do the slow work. The dashboard and approval pages are plain HTML.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route

from rig.daemon import pages, systemd
from rig.daemon.approval import Approvals, Refusal
from rig.daemon.poller import Poller
from rig.daemon.publish import publish_target
from rig.daemon.queue import APPROVED, AWAITING, FINAL, QUEUED, RUNNING, Queue, WorkerLock
from rig.daemon.settings import DaemonSettings
from rig.daemon.webhooks import (
    Ignored,
    job_request,
    url_request,
    verify_direct,
    verify_signature,
)
from rig.daemon.worker import Worker
from rig.orchestration import eventlog
from rig.orchestration.devices import devices_view
from rig.root import Rig

log = logging.getLogger("rig.daemon")


class Daemon:
    """Everything `rig serve` runs, built in one place."""

    def __init__(self, settings: DaemonSettings, *, retry_delay: float = 60.0) -> None:
        self.settings = settings
        self.queue = Queue(settings.state_dir)
        self.approvals = Approvals(
            settings.approval_key,
            self.queue,
            settings.approval_ttl,
            lambda job: publish_target(job, settings.publish),
        )
        self.worker = Worker(settings, self.queue, self.approvals, retry_delay=retry_delay)
        self.poller = Poller(settings, self.queue, self.worker.wake)
        self.lock = WorkerLock(settings.state_dir)
        # the composition root, once: the dashboard's device views read through it
        # (the acceptance runs are `rig run` processes, which build their own)
        self.rig = Rig.from_config(settings.rig) if settings.rig is not None else None

    def start(self) -> None:
        s = self.settings
        if s.webhook_secret is None:
            log.warning("no webhook_secret: every delivery to /hooks/github is refused (401)")
        if s.mail is None:
            log.warning("no mail section: nobody will be asked to approve a tested image")
        if s.repos and s.github_token is None:
            log.warning("no github_token: artifacts, drafts and publishing need one")
        self.lock.acquire()
        self.worker.start()
        self.poller.start()
        systemd.start_watchdog(self.healthy, self.worker.stopping)
        systemd.notify("READY=1")
        log.info("rig daemon working %s as %s", self.settings.state_dir, self.worker.owner)

    def lanes(self) -> dict[str, dict[str, Any]]:
        lanes = self.worker.lanes()
        poller = self.poller.lane()
        if poller is not None:
            lanes["poller"] = poller
        return lanes

    def healthy(self) -> bool:
        """Every lane alive (the watchdog is fed only then)."""
        lanes = self.lanes()
        return bool(lanes) and all(lane["alive"] for lane in lanes.values())

    def stop(self) -> None:
        self.poller.stop()
        self.worker.stop()
        self.lock.release()


class Intake:
    """Group commit for deliveries: requests that arrive while a commit is being synced
    wait together for the next one. Each delivery is on disk before it is answered,
    and a burst costs one sync per batch instead of one per delivery; the sync runs
    on a thread, so the event loop keeps reading requests meanwhile."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushing = False

    async def accept(self, *item: Any) -> tuple[str, int | None]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await run_in_threadpool(
                        self.queue.accept_deliveries, [item for item, _ in batch]
                    )
                except Exception as e:
                    for _, future in batch:
                        future.set_exception(e)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        future.set_result(result)
        finally:
            self._flushing = False


MAX_DECISION_BODY = 1024  # "decision=approve" is 16 bytes


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` (before any HMAC is computed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# approval pages carry a capability in their URL: never cached, never sent on as a
# Referer, never framed (clickjacking the Approve button), nothing but their own CSS
APPROVAL_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def _approval_page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=APPROVAL_HEADERS)


def _text(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def create_app(daemon: Daemon, *, manage: bool = True) -> Starlette:
    """The route table. ``manage``: start/stop the daemon with the app (lifespan)."""
    settings = daemon.settings
    queue = daemon.queue
    intake = Intake(queue)

    async def github_hook(request: Request) -> Response:
        try:
            body = await read_body(request, settings.max_body)
        except TooLarge:
            log.warning("webhook refused: body over %s bytes", settings.max_body)
            return _text(413, "payload too large")
        secret = settings.webhook_secret
        if secret is None:
            log.error("webhook refused: no webhook_secret configured")
            return _text(401, "no webhook secret configured on the rig")
        if not verify_signature(
            secret.reveal().encode(), body, request.headers.get("x-hub-signature-256")
        ):
            log.warning("webhook refused: missing or bad signature")
            return _text(401, "bad signature")
        event = request.headers.get("x-github-event", "")
        delivery = request.headers.get("x-github-delivery", "")
        if not delivery:
            return _text(400, "missing X-GitHub-Delivery")
        if event == "ping":
            return await _accept(delivery, event, None, "ping")
        try:
            if request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):  # a webhook set to content type "form": the JSON is the payload field
                body = parse_qs(body.decode()).get("payload", [""])[0].encode()
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _text(400, "body is not JSON (or nested too deeply)")
        try:
            request_ = job_request(event, payload, settings)
        except Ignored as e:
            return await _accept(delivery, event, None, str(e))
        return await _accept(delivery, event, request_, "")

    async def direct_hook(request: Request) -> Response:
        """A workflow step's curl: HMAC over ``timestamp.body``, refused outside the window."""
        try:
            body = await read_body(request, settings.max_body)
        except TooLarge:
            return _text(413, "payload too large")
        secret = settings.webhook_secret
        if secret is None:
            return _text(401, "no webhook secret configured on the rig")
        why = verify_direct(
            secret.reveal().encode(),
            body,
            request.headers.get("x-rig-timestamp"),
            request.headers.get("x-rig-signature-256"),
            time.time(),
            settings.direct_window,
        )
        if why:
            log.warning("direct notification refused: %s", why)
            return _text(401, why)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise Ignored("the body is not a JSON object")
            repo = payload.get("repository")
            if repo is not None and not isinstance(repo, str):
                raise Ignored("repository is not a string")
            watch = settings.repo(repo) if repo else None
            if repo and watch is None:
                raise Ignored(f"repository {repo[:100]} is not configured")
            hosts = watch.image_hosts if watch else settings.all_image_hosts()
            request_ = url_request(payload, watch.name if watch else None, "direct", hosts)
        except (ValueError, RecursionError):
            return _text(400, "body is not JSON")
        except Ignored as e:
            return _text(422, str(e))
        delivery = "direct:" + request.headers["x-rig-signature-256"]
        return await _accept(delivery, "direct", request_, "")

    async def _accept(delivery: str, event: str, request_: Any, reason: str) -> Response:
        outcome, job_id = await intake.accept(delivery, event, request_, reason)
        if outcome.startswith("refused"):
            log.error("delivery %s (%s) not recorded: %s", delivery, event, outcome)
            return _text(500, "the rig could not record this delivery; redeliver it later")
        if outcome == "duplicate":
            log.info("delivery %s (%s): redelivery, nothing to do", delivery, event)
            return JSONResponse({"outcome": "duplicate", "job": job_id})
        if outcome == "ignored":
            log.info("delivery %s (%s) ignored: %s", delivery, event, reason)
            return JSONResponse({"outcome": "ignored", "reason": reason})
        if outcome == "queued":
            daemon.worker.wake.set()
        log.info("delivery %s (%s): job %s %s", delivery, event, job_id, outcome)
        return JSONResponse(
            {"outcome": outcome, "job": job_id, "url": f"{settings.public_url}/jobs/{job_id}"},
            status_code=202 if outcome == "queued" else 200,
        )

    def _devices() -> list[dict[str, Any]]:
        return device_rows(settings, daemon.rig)

    def _tail(job_id: int | None, lines: int = 15) -> str:
        job = queue.get(job_id) if job_id else None
        if job is None or not job.report_dir:
            return ""
        path = Path(job.report_dir) / "acceptance.log"
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def dashboard(request: Request) -> HTMLResponse:
        def render() -> str:
            active = queue.jobs((RUNNING, APPROVED), limit=10)
            waiting = queue.jobs((QUEUED, AWAITING), limit=50)
            history = queue.jobs(FINAL, limit=20)
            running = [j for j in active if j.state == RUNNING]
            tail = _tail(running[0].id) if running else ""
            live = scenario_phases(running[0].report_dir) if running else []
            return pages.dashboard(_devices(), active, list(reversed(waiting)), history, tail, live)

        return HTMLResponse(await run_in_threadpool(render))

    async def history(request: Request) -> HTMLResponse:
        jobs = await run_in_threadpool(queue.jobs, None, 500)
        return HTMLResponse(pages.history(jobs))

    async def job_page(request: Request) -> Response:
        job_id = request.path_params["job_id"]

        def render() -> str | None:
            job = queue.get(job_id)
            if job is None:
                return None
            files = []
            if job.report_dir and Path(job.report_dir).is_dir():
                files = sorted(
                    str(p.relative_to(job.report_dir))
                    for p in Path(job.report_dir).rglob("*")
                    if p.is_file()
                )[:200]
            live = scenario_phases(job.report_dir) if job.state == RUNNING else []
            return pages.job_page(job, queue.steps(job_id), files, _tail(job_id, 40), live)

        text = await run_in_threadpool(render)
        if text is None:
            return HTMLResponse(pages.refusal(404, "no such job"), status_code=404)
        return HTMLResponse(text)

    async def report_file(request: Request) -> Response:
        job = await run_in_threadpool(queue.get, request.path_params["job_id"])
        if job is None or not job.report_dir:
            return _text(404, "no report")
        root = Path(job.report_dir).resolve()
        target = (root / request.path_params["path"]).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _text(404, "no such file")
        return FileResponse(target)

    async def approve_get(request: Request) -> HTMLResponse:
        token = request.path_params["token"]
        checked = await run_in_threadpool(daemon.approvals.check, token)
        if isinstance(checked, Refusal):
            return _approval_page(pages.refusal(checked.status, checked.reason), checked.status)
        job, claims = checked
        return _approval_page(pages.confirm(job, token, claims["publish"]))

    async def approve_post(request: Request) -> Response:
        token = request.path_params["token"]
        # the token first: an unauthenticated POST costs a signature check, nothing more
        checked = await run_in_threadpool(daemon.approvals.check, token)
        if isinstance(checked, Refusal):
            return _approval_page(pages.refusal(checked.status, checked.reason), checked.status)
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return _approval_page(pages.refusal(415, "send the confirmation page's form"), 415)
        try:
            body = await read_body(request, MAX_DECISION_BODY)
        except TooLarge:
            return _approval_page(pages.refusal(413, "the form is too large"), 413)
        decision = parse_qs(body.decode("ascii", "replace")).get("decision", [""])[0]
        if decision not in ("approve", "reject"):
            return _approval_page(pages.refusal(400, "decide approve or reject"), 400)
        result = await run_in_threadpool(daemon.approvals.decide, token, decision)
        if isinstance(result, Refusal):
            return _approval_page(pages.refusal(result.status, result.reason), result.status)
        log.info("job %s %sd by approval link", result.id, decision)
        daemon.worker.wake.set()
        return RedirectResponse(f"/jobs/{result.id}", status_code=303, headers=APPROVAL_HEADERS)

    async def health(request: Request) -> JSONResponse:
        """200 while every lane lives; 503 names the dead one (a monitor restarts the unit)."""
        counts = await run_in_threadpool(queue.counts)
        lanes = daemon.lanes()
        ok = daemon.healthy() if manage else True
        return JSONResponse(
            {"ok": ok, "lanes": lanes, "jobs": counts, "working": daemon.worker.current},
            status_code=200 if ok else 503,
        )

    routes: list[BaseRoute] = [
        Route("/hooks/github", github_hook, methods=["POST"]),
        Route("/hooks/direct", direct_hook, methods=["POST"]),
        Route("/", dashboard),
        Route("/history", history),
        Route("/jobs/{job_id:int}", job_page),
        Route("/jobs/{job_id:int}/report/{path:path}", report_file),
        Route("/approve/{token}", approve_get, methods=["GET"]),
        Route("/approve/{token}", approve_post, methods=["POST"]),
        Route("/healthz", health),
    ]
    feed = feed_mount(settings)
    if feed is not None:
        routes.append(feed)
    packages = packages_mount(settings)
    if packages is not None:
        routes.append(packages)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        if manage:
            await run_in_threadpool(daemon.start)
        try:
            yield
        finally:
            if manage:
                await run_in_threadpool(daemon.stop)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.daemon = daemon
    return app


def feed_mount(settings: DaemonSettings) -> Mount | None:
    """The release feed of the acceptance matrix's product at /feed, for its release.

    Integration point: devices provisioned by the daemon's runs may point their
    release check at ``{public_url}/feed``. No matrix, or a product without a feed:
    no route.
    """
    if settings.matrix is None or not settings.matrix.is_file():
        return None
    from rig.orchestration.matrix import load_matrix

    matrix = load_matrix(settings.matrix)
    rel = matrix.release
    feed = getattr(matrix.profile, "release_feed", None)
    app = feed(rel.version, rel.channel, dict(rel.options), name=rel.name) if feed else None
    return Mount("/feed", app=app) if app is not None else None


def packages_mount(settings: DaemonSettings) -> Mount | None:
    """The package cache at /packages (its index: ``{public_url}/packages/simple/``).

    A route, not a server of its own: devices and people reach the daemon's one port
    already, and it serves the same cache directory the runs use (each `rig run`,
    the daemon's acceptance runs included, serves it itself for its length, as it
    does the feed). Off when rig.yaml turns the cache off (run.package_index: false).
    """
    if settings.rig is None:
        return None
    from rig.packages.serve import index_app
    from rig.packages.settings import package_settings

    found = package_settings(settings.rig)
    return Mount("/packages", app=index_app(found)) if found is not None else None


def scenario_phases(report_dir: str | None) -> list[tuple[str, str, str]]:
    """(scenario, phase, last line) from the running `rig run`'s event log, as it grows.

    The report directory is the only thing the daemon and the acceptance run share,
    so its events.jsonl is read (folded as the report and the live view fold it),
    not asked."""
    if not report_dir:
        return []
    return eventlog.fold_file(Path(report_dir) / eventlog.FILE).scenario_rows()


def device_rows(settings: DaemonSettings, rig: Rig | None = None) -> list[dict[str, Any]]:
    """Devices as the dashboard shows them: `rig devices`' view, with the switch each uses.

    Real hubs and muxes are not read on every refresh (that could race a run's
    switching); the virtual rig's are, its state being a file."""
    config = settings.rig
    if config is None:
        return []
    rig = rig or Rig.from_config(config)
    rows = []
    # live states only where reading them touches no real hardware
    for view in devices_view(config, rig if rig.virtual else None):
        dev = config.device(view["name"])
        power, mux = f"{dev.power.driver} port {dev.power.port}", dev.mux.driver
        if view["power"] is not None:
            power = f"{view['power']} ({power})"
        if view["mux"] is not None:
            mux = f"{view['mux']} ({mux})"
        lease = view["lease"]
        last = view["last_result"]
        if view["health"] == "quarantined":
            health = f"quarantined: {view['quarantine_reason']}"
        else:
            health = last["outcome"] if last else "ok"
        rows.append(
            {
                "name": view["name"],
                "model": view["model"],
                "power": power,
                "mux": mux,
                "health": health,
                "lease": (lease["purpose"] or f"pid {lease['pid']}") if lease else "",
                "last_run": view["last_run"],
            }
        )
    return rows
