"""An upstream index's project page (PEP 691 JSON, else PEP 503 HTML) as a list of files.

JSON is asked for first, as pip does; an index that answers HTML (piwheels,
older servers) is read with the standard library's HTML parser. Not pypi-simple:
it would bring pydantic, requests and BeautifulSoup to the flash host for the
thirty lines below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin

import httpx
from packaging.utils import canonicalize_name

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.1, text/html;q=0.01"


@dataclass
class File:
    filename: str
    url: str  # absolute, on the upstream
    hashes: dict[str, str] = field(default_factory=dict)
    requires_python: str | None = None
    yanked: bool | str = False
    # PEP 658/714: the upstream serves the wheel's METADATA at url + ".metadata" (its hashes;
    # None: not offered), so pip resolves without downloading every candidate wheel
    metadata: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> File:
        return cls(**data)


class NotFound(Exception):
    """The upstream has no such project (404)."""


class _Links(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.files: list[File] = []
        self._href: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href)
        elif tag == "a":
            self._href, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag != "a" or self._href is None:
            return
        attrs, self._href = self._href, None
        href = attrs.get("href")
        if not href:
            return
        url, fragment = urldefrag(urljoin(self.base, href))
        hashes = dict([fragment.split("=", 1)]) if "=" in fragment else {}
        yanked: bool | str = False
        if "data-yanked" in attrs:
            yanked = attrs["data-yanked"] or True
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        self.files.append(
            File(
                filename=self._text.strip() or url.rsplit("/", 1)[-1],
                url=url,
                hashes=hashes,
                requires_python=attrs.get("data-requires-python") or None,
                yanked=yanked,
                metadata=_metadata_hashes(meta),
            )
        )


def _metadata_hashes(value: Any) -> dict[str, str] | None:
    """PEP 714's core-metadata value (JSON: true or a hash dict; HTML: "true" or
    "sha256=..."), as hashes; {} when offered without a hash, None when not offered."""
    if value is None or value is False or value == "false":
        return None
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str) and "=" in value:
        name, _, digest = value.partition("=")
        return {name: digest}
    return {}


def parse(content_type: str, body: bytes, base: str) -> list[File]:
    """The files of a project page, with absolute URLs."""
    if content_type.split(";")[0].strip() == JSON_TYPE:
        data = httpx.Response(200, content=body).json()
        return [
            File(
                filename=f["filename"],
                url=urljoin(base, f["url"]),
                hashes=dict(f.get("hashes") or {}),
                requires_python=f.get("requires-python") or None,
                yanked=f.get("yanked") or False,
                metadata=_metadata_hashes(f.get("core-metadata", f.get("dist-info-metadata"))),
            )
            for f in data.get("files", [])
        ]
    parser = _Links(base)
    parser.feed(body.decode("utf-8", "replace"))
    return parser.files


async def project_files(client: httpx.AsyncClient, index: str, project: str) -> list[File]:
    """One upstream's files of ``project``; NotFound on 404, httpx errors otherwise."""
    url = f"{index.rstrip('/')}/{canonicalize_name(project)}/"
    r = await client.get(url, headers={"Accept": ACCEPT}, follow_redirects=True)
    if r.status_code == 404:
        raise NotFound(project)
    r.raise_for_status()
    return parse(r.headers.get("content-type", "text/html"), r.content, str(r.url))
