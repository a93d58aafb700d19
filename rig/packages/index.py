"""The index the devices' pip asks: PEP 503 HTML and PEP 691 JSON, chosen by Accept.

Routes (relative links, so it works mounted under a prefix, as in the daemon)::

    /simple/                          the projects asked for so far
    /simple/<project>/                the upstream's files plus the wheels built by a
                                      device of the asking pip's environment
    /files/<project>/<file>           a distribution: from the cache, else fetched
                                      upstream, checked against its hashes, kept
    /built/<environment>/<wheel>      a wheel a device built

Pages are asked upstream again after ``page_ttl`` seconds; while the upstream is
unreachable the last page is served, so a warm cache installs offline.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

import httpx
from packaging.utils import canonicalize_name
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from rig.packages.environment import from_user_agent
from rig.packages.store import PackageStore, hash_problem
from rig.packages.upstream import HTML_TYPE, JSON_TYPE, File, NotFound, project_files

TEXT_HTML = "text/html"
# a distribution never changes under its name (its hash is on the page): pip's HTTP cache
# may keep it, as it keeps PyPI's
IMMUTABLE = {"Cache-Control": "max-age=31536000, immutable"}
OFFERED = (JSON_TYPE, HTML_TYPE, TEXT_HTML)


def negotiate(accept: str | None) -> str | None:
    """The page format for an Accept header (PEP 691): the highest q among the three
    formats, ties to the order the client listed them; no header: HTML; none: None."""
    if not accept or not accept.strip():
        return TEXT_HTML
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "application/*"):
            matches = [JSON_TYPE] if media == "application/*" else [TEXT_HTML]
        elif media == "text/*":
            matches = [TEXT_HTML]
        else:
            matches = [m for m in OFFERED if m == media]
        for m in matches:
            if best is None or (q, -position) > (best[0], -best[1]):
                best = (q, position, m)
    return best[2] if best else None


class PackageIndex:
    """The index app over a store and its upstream indexes (tried in order, merged)."""

    def __init__(
        self,
        store: PackageStore,
        upstreams: list[str],
        *,
        page_ttl: float = 60.0,
        timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.upstreams = upstreams
        self.page_ttl = page_ttl
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/simple/", self.root_page),
                Route("/simple/{project}/", self.project_page),
                Route("/simple/{project}", self.slash),
                Route("/files/{project}/{filename}", self.upstream_file),
                Route("/built/{env}/{filename}", self.built_file),
            ]
        )

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
            )
        return self._client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # --- pages ------------------------------------------------------------------------

    async def files(self, project: str) -> list[File]:
        """The upstream's files of a project: fresh, else the last page kept."""
        kept = self.store.page(project)
        if kept is not None and time.time() - kept[0] < self.page_ttl:
            return kept[1]
        merged: dict[str, File] = {}
        missing, failed = 0, []
        for index in self.upstreams:
            try:
                for f in await project_files(self.client(), index, project):
                    merged.setdefault(f.filename, f)
            except NotFound:
                missing += 1
            except httpx.HTTPError as e:
                failed.append(f"{index}: {type(e).__name__} {e}")
        if failed and kept is not None:
            return kept[1]  # offline (or the upstream failing): the last page we had
        if failed and not merged:
            raise _Unavailable("; ".join(failed))
        if missing == len(self.upstreams):
            raise NotFound(project)
        files = list(merged.values())
        self.store.save_page(project, files)
        return files

    async def project_page(self, request: Request) -> Response:
        project = request.path_params["project"]
        name = canonicalize_name(project)
        if name != project:
            return RedirectResponse(f"../{name}/", status_code=301)
        fmt = negotiate(request.headers.get("accept"))
        if fmt is None:
            return PlainTextResponse(
                f"406: this index answers {', '.join(OFFERED)}", status_code=406
            )
        try:
            upstream = await self.files(name)
        except NotFound:
            upstream = []
        except _Unavailable as e:
            return PlainTextResponse(f"upstream index unreachable: {e}", status_code=502)
        names = {f.filename for f in upstream}
        links = [
            File(
                filename=f.filename,
                url=f"../../files/{name}/{f.filename}",
                hashes=f.hashes,
                requires_python=f.requires_python,
                yanked=f.yanked,
                # only with a hash: a metadata file the rig cannot check is not kept
                metadata=f.metadata if f.metadata else None,
            )
            for f in upstream
        ]
        env = from_user_agent(request.headers.get("user-agent"))
        for path in self.store.built(env, name):
            if path.name in names:
                continue  # the upstream has this very file: it wins
            links.append(
                File(
                    filename=path.name,
                    url=f"../../built/{path.parent.name}/{path.name}",
                    hashes={"sha256": self.store.built_sha256(path)},
                )
            )
        if not links:
            return PlainTextResponse(f"no project {name} upstream", status_code=404)
        return _page(fmt, name, links, max_age=int(self.page_ttl))

    async def root_page(self, request: Request) -> Response:
        fmt = negotiate(request.headers.get("accept")) or TEXT_HTML
        projects = self.store.projects()
        if fmt == JSON_TYPE:
            body = {"meta": {"api-version": "1.0"}, "projects": [{"name": p} for p in projects]}
            return Response(json.dumps(body), media_type=JSON_TYPE, headers={"Vary": "Accept"})
        items = "".join(f'<a href="{p}/">{p}</a><br/>\n' for p in map(html.escape, projects))
        return _html(
            fmt,
            f"<!DOCTYPE html>\n<html><head>{_META}<title>Simple index</title>"
            f"</head><body>\n{items}</body></html>\n",
        )

    async def slash(self, request: Request) -> Response:
        return RedirectResponse(f"{request.path_params['project']}/", status_code=301)

    # --- files ------------------------------------------------------------------------

    async def upstream_file(self, request: Request) -> Response:
        project = canonicalize_name(request.path_params["project"])
        filename = request.path_params["filename"]
        cached = self.store.cached(project, filename)
        if cached is not None:
            return FileResponse(cached, filename=filename, headers=IMMUTABLE)
        if self.store.file_path(project, filename) is None:
            return PlainTextResponse(f"not a file name: {filename}", status_code=404)
        try:
            files = await self.files(project)
        except (NotFound, _Unavailable) as e:
            return PlainTextResponse(f"{filename}: {e}", status_code=502)
        wanted = next((f for f in files if f.filename == filename), None)
        url = wanted.url if wanted else ""
        hashes = wanted.hashes if wanted else {}
        if wanted is None and filename.endswith(".metadata"):
            dist = next((f for f in files if f"{f.filename}.metadata" == filename), None)
            if dist is not None and dist.metadata:
                wanted, url, hashes = dist, f"{dist.url}.metadata", dist.metadata
        if wanted is None:
            return PlainTextResponse(f"{filename} is not a file of {project}", status_code=404)
        tmp = self.store.temp_file()
        try:
            async with self.client().stream("GET", url, follow_redirects=True) as r:
                if r.status_code != 200:
                    return PlainTextResponse(
                        f"{url}: upstream answered {r.status_code}", status_code=502
                    )
                with tmp.open("wb") as out:
                    async for chunk in r.aiter_bytes(1 << 20):
                        out.write(chunk)
            problem = await run_in_threadpool(hash_problem, tmp, hashes)
            if problem:
                return PlainTextResponse(f"{filename} from {url} refused: {problem}", 502)
            path = await run_in_threadpool(self.store.add, project, filename, tmp)
        except httpx.HTTPError as e:
            return PlainTextResponse(f"{url}: {type(e).__name__} {e}", status_code=502)
        finally:
            tmp.unlink(missing_ok=True)
        return FileResponse(path, filename=filename, headers=IMMUTABLE)

    async def built_file(self, request: Request) -> Response:
        path = self.store.built_file(request.path_params["env"], request.path_params["filename"])
        if path is None:
            return PlainTextResponse("no such wheel", status_code=404)
        return FileResponse(path, filename=path.name, headers=IMMUTABLE)


class _Unavailable(Exception):
    pass


_META = '<meta name="pypi:repository-version" content="1.0">'


def _html(fmt: str, body: str, max_age: int = 0) -> Response:
    return Response(body, media_type=fmt, headers=_page_headers(max_age))


def _page_headers(max_age: int) -> dict[str, str]:
    """Pages may be kept by pip as long as the rig keeps them itself (page_ttl)."""
    return {"Vary": "Accept", "Cache-Control": f"max-age={max_age}"}


def _page(fmt: str, name: str, links: list[File], max_age: int = 0) -> Response:
    if fmt == JSON_TYPE:
        body: dict[str, Any] = {
            "meta": {"api-version": "1.0"},
            "name": name,
            "files": [
                {
                    "filename": f.filename,
                    "url": f.url,
                    "hashes": f.hashes,
                    **({"requires-python": f.requires_python} if f.requires_python else {}),
                    **({"yanked": f.yanked} if f.yanked else {}),
                    **({"core-metadata": f.metadata} if f.metadata else {}),
                }
                for f in links
            ],
        }
        return Response(json.dumps(body), media_type=JSON_TYPE, headers=_page_headers(max_age))
    rows = []
    for f in links:
        fragment = next(iter(f.hashes.items()), None)
        href = f.url + (f"#{fragment[0]}={fragment[1]}" if fragment else "")
        attrs = f' href="{html.escape(href)}"'
        if f.requires_python:
            attrs += f' data-requires-python="{html.escape(f.requires_python)}"'
        if f.yanked:
            reason = f.yanked if isinstance(f.yanked, str) else ""
            attrs += f' data-yanked="{html.escape(reason)}"'
        if f.metadata:
            meta = next(iter(f.metadata.items()))
            attrs += f' data-core-metadata="{html.escape(meta[0])}={html.escape(meta[1])}"'
        rows.append(f"<a{attrs}>{html.escape(f.filename)}</a><br/>\n")
    title = f"Links for {html.escape(name)}"
    return _html(
        fmt,
        f"<!DOCTYPE html>\n<html><head>{_META}<title>{title}</title></head>"
        f"<body>\n<h1>{title}</h1>\n{''.join(rows)}</body></html>\n",
        max_age,
    )
