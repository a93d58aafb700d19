"""Test doubles for what cannot be reached from here: GitHub's REST API (on loopback).

The double speaks the endpoints the daemon uses, with GitHub's status codes and
redirects: artifact and asset downloads answer 302 to a *different origin* (a
second port, like GitHub's storage hosts), so the test sees whether the token
leaks across the redirect. Every call is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
TOKEN = "ghp_test_token_not_real"


@dataclass
class Call:
    method: str
    path: str
    auth: str | None
    accept: str | None
    body: Any
    port: int


@dataclass
class GitHubState:
    releases: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> release
    artifacts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # run -> list
    blobs: dict[str, bytes] = field(default_factory=dict)  # storage key -> bytes
    asset_blob: dict[int, str] = field(default_factory=dict)  # asset id -> key
    artifact_blob: dict[int, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # storage key -> Location
    html: bool = False  # a proxy or captive portal answers the API's calls with a web page
    hold_dispatch: bool = False  # a dispatch is received, then its answer never comes
    storage_url: str = ""
    next_id: int = 100

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_release(
        self, tag: str, body: str, files: dict[str, bytes], draft: bool = False
    ) -> dict:
        rid = self.new_id()
        assets = []
        for name, data in files.items():
            aid = self.new_id()
            key = f"asset-{aid}"
            self.blobs[key] = data
            self.asset_blob[aid] = key
            assets.append(
                {
                    "id": aid,
                    "name": name,
                    "size": len(data),
                    "url": f"/repos/x/y/releases/assets/{aid}",
                    # GitHub computes it on upload (release assets carry it since 2025)
                    "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                }
            )
        release = {
            "id": rid,
            "tag_name": tag,
            "name": tag,
            "body": body,
            "draft": draft,
            "prerelease": False,
            "assets": assets,
        }
        self.releases[rid] = release
        return release

    def add_artifact(self, run_id: int, name: str, members: dict[str, bytes]) -> dict:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        data = buf.getvalue()
        aid = self.new_id()
        self.blobs[f"artifact-{aid}"] = data
        self.artifact_blob[aid] = f"artifact-{aid}"
        art = {
            "id": aid,
            "name": name,
            "size_in_bytes": len(data),
            "expired": False,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        }
        self.artifacts.setdefault(run_id, []).append(art)
        return art

    def calls_to(self, method: str, fragment: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path]


def github_app(state: GitHubState) -> Starlette:
    async def record(request: Request) -> Response | None:
        body = await request.body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body
        state.calls.append(
            Call(
                request.method,
                request.url.path,
                request.headers.get("authorization"),
                request.headers.get("accept"),
                parsed,
                request.url.port or 0,
            )
        )
        if request.url.path.startswith("/storage/"):
            return None
        if state.html:
            return HTMLResponse("<html><body><h1>Proxy login required</h1></body></html>")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"message": "Requires authentication"}, status_code=401)
        return None

    async def artifacts(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        arts = state.artifacts.get(int(request.path_params["run"]), [])
        return JSONResponse({"total_count": len(arts), "artifacts": arts})

    async def artifact_zip(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        key = state.artifact_blob.get(int(request.path_params["aid"]))
        if key is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        return RedirectResponse(f"{state.storage_url}/storage/{key}?sig=short-lived", 302)

    async def release(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        rel = state.releases.get(int(request.path_params["rid"]))
        if rel is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        if request.method == "PATCH":
            data = json.loads(await request.body() or b"{}")
            rel.update({k: v for k, v in (data or {}).items() if k in ("body", "draft", "name")})
        return JSONResponse(rel)

    async def release_by_tag(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        for rel in state.releases.values():
            if rel["tag_name"] == request.path_params["tag"]:
                return JSONResponse(rel)
        return JSONResponse({"message": "Not Found"}, status_code=404)

    async def releases(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        return JSONResponse(sorted(state.releases.values(), key=lambda r: -r["id"]))

    async def asset(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        aid = int(request.path_params["aid"])
        key = state.asset_blob.get(aid)
        if key is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        if request.headers.get("accept") == "application/octet-stream":
            return RedirectResponse(f"{state.storage_url}/storage/{key}?sig=short-lived", 302)
        return JSONResponse({"id": aid, "name": key})

    async def statuses(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        return JSONResponse({"state": json.loads(await request.body())["state"]}, status_code=201)

    async def commit(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        ref = request.path_params["ref"]
        return JSONResponse({"sha": hashlib.sha1(ref.encode()).hexdigest()})

    async def dispatches(request: Request) -> Response:
        if (r := await record(request)) is not None:
            return r
        while state.hold_dispatch:
            await asyncio.sleep(0.05)
        return Response(status_code=204)

    async def storage(request: Request) -> Response:
        await record(request)
        if request.path_params["key"] in state.redirects:
            return RedirectResponse(state.redirects[request.path_params["key"]], 302)
        data = state.blobs.get(request.path_params["key"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="application/octet-stream")

    return Starlette(
        routes=[
            Route("/repos/{o}/{r}/actions/runs/{run:int}/artifacts", artifacts),
            Route("/repos/{o}/{r}/actions/artifacts/{aid:int}/zip", artifact_zip),
            Route("/repos/{o}/{r}/releases", releases),
            Route("/repos/{o}/{r}/releases/tags/{tag}", release_by_tag),
            Route("/repos/{o}/{r}/releases/assets/{aid:int}", asset),
            Route("/repos/{o}/{r}/releases/{rid:int}", release, methods=["GET", "PATCH"]),
            Route("/repos/{o}/{r}/statuses/{sha}", statuses, methods=["POST"]),
            Route("/repos/{o}/{r}/commits/{ref}", commit),
            Route("/repos/{o}/{r}/dispatches", dispatches, methods=["POST"]),
            Route("/storage/{key}", storage),
        ]
    )


class ServedApp:
    """An ASGI app served by uvicorn in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


FAKE_ACCEPTANCE = HERE / "fake_acceptance.py"


def acceptance_command(runlog: Path, hold: Path | None = None) -> list[str]:
    """A small real acceptance command standing in for `rig run` (same CLI contract)."""
    cmd = [
        sys.executable,
        str(FAKE_ACCEPTANCE),
        "--candidate",
        "{candidate}",
        "--report-dir",
        "{report_dir}",
        "--runlog",
        str(runlog),
    ]
    if hold is not None:
        cmd += ["--hold", str(hold)]
    return cmd
