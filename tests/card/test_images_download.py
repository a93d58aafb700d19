"""Downloads against a real HTTP server on 127.0.0.1 that honours Range and can hang up."""

from __future__ import annotations

import hashlib
import http.server
import json
import lzma
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from rig.card.cache import ImageCache
from rig.card.download import download, find_in_imager_json, parse_sha256_file
from rig.card.images import fetch, resolve_image
from rig.config import load_config
from rig.errors import ConfigError, InfraError


class Server:
    """Serves ``files``; with ``cut_after`` set, the first full-body answer stops after that
    many bytes and closes the connection (an interrupted transfer)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                outer.requests.append(dict(self.headers))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start = 0
                rng = self.headers.get("Range")
                if rng and self.headers.get("If-Range", etag) == etag:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                part = body[start:]
                if outer.cut_after is not None:
                    n, outer.cut_after = outer.cut_after, None
                    self.wfile.write(part[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _image_bytes() -> bytes:
    return bytes(510) + b"\x55\xaa" + os.urandom(3 << 20)


def test_interrupted_download_resumes(server, tmp_path):
    body = os.urandom(5 << 20)
    digest = hashlib.sha256(body).hexdigest()
    server.files["/img.zip"] = body
    server.cut_after = 2 << 20
    part = tmp_path / "img.part"
    with pytest.raises(InfraError, match="resumes where it stopped"):
        download(server.url + "/img.zip", part, expected_sha256=digest)
    assert part.stat().st_size == 2 << 20  # partial file kept
    seen = []
    got = download(
        server.url + "/img.zip",
        part,
        expected_sha256=digest,
        progress=lambda ph, done, total: seen.append((done, total)),
    )
    assert got == digest and part.read_bytes() == body
    assert server.requests[-1]["Range"] == f"bytes={2 << 20}-"
    assert seen[0][0] > 2 << 20 and seen[-1] == (5 << 20, 5 << 20)


def test_changed_file_on_server_starts_over(server, tmp_path):
    server.files["/img"] = os.urandom(1 << 20)
    server.cut_after = 1000
    part = tmp_path / "img.part"
    with pytest.raises(InfraError):
        download(server.url + "/img", part, expected_sha256=None)
    new = os.urandom(1 << 20)
    server.files["/img"] = new  # different ETag: If-Range fails, full body again
    assert (
        download(server.url + "/img", part, expected_sha256=None) == hashlib.sha256(new).hexdigest()
    )
    assert part.read_bytes() == new


def test_bad_checksum_deletes_the_download(server, tmp_path):
    server.files["/img"] = b"not what was published"
    part = tmp_path / "img.part"
    with pytest.raises(InfraError, match=r"checksum mismatch.*download was deleted"):
        download(server.url + "/img", part, expected_sha256="ab" * 32)
    assert not part.exists()


def test_checksum_sources():
    assert (
        parse_sha256_file(f"{'a' * 64}  other.zip\n{'b' * 64} *x.zip\n", "x.zip", "u") == "b" * 64
    )
    assert parse_sha256_file(f"{'c' * 64}\n", "x.zip", "u") == "c" * 64
    data = {"os_list": [{"name": "Other", "subitems": [{"url": "http://h/x.zip",
            "image_download_sha256": "d" * 64, "extract_sha256": "e" * 64,
            "extract_size": 123}]}]}  # fmt: skip
    pub = find_in_imager_json(data, "http://h/x.zip")
    assert pub is not None and pub.sha256 == "d" * 64 and pub.extract_size == 123


def _config(tmp_path: Path, limit_gb: float = 1.0):
    cfg = load_config(None)
    return replace(
        cfg,
        paths=replace(cfg.paths, images=tmp_path / "cache", cache_limit_gb=limit_gb),
        virtual=False,
    )


def test_fetch_url_checks_published_sha256_and_caches(server, tmp_path):
    img = _image_bytes()
    packed = lzma.compress(img, preset=0)
    server.files["/os.img.xz"] = packed
    server.files["/os.img.xz.sha256"] = (
        f"{hashlib.sha256(packed).hexdigest()}  os.img.xz\n".encode()
    )
    cfg = _config(tmp_path)
    path = resolve_image(server.url + "/os.img.xz", cfg)
    assert path.read_bytes() == img  # unpacked once into the cache
    n = len(server.requests)
    assert resolve_image(server.url + "/os.img.xz", cfg) == path
    assert len(server.requests) == n + 1  # only the checksum asked again, no download
    server.files["/os.img.xz.sha256"] = b"f" * 64 + b"  os.img.xz\n"
    with pytest.raises(InfraError, match="checksum mismatch"):
        fetch(server.url + "/os.img.xz", _config(tmp_path / "other"))


def test_catalogue_name_resolves_through_the_cache(server, tmp_path, monkeypatch):
    img = _image_bytes()
    server.files["/pi.img"] = img
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "images:\n  test-os:\n    description: t\n    base: bookworm\n    scheme: firstrun\n"
        f"    url: {server.url}/pi.img\n    sha256: {hashlib.sha256(img).hexdigest()}\n"
    )
    monkeypatch.setenv("RIG_CATALOG", str(catalog))
    cfg = _config(tmp_path)
    path = resolve_image("test-os", cfg)
    assert path.read_bytes() == img
    n = len(server.requests)
    assert resolve_image("test-os", cfg) == path and len(server.requests) == n  # offline hit
    with pytest.raises(ConfigError, match="no image 'nope'"):
        resolve_image("nope", cfg)
    local = tmp_path / "mine.img"
    local.write_bytes(img)
    assert resolve_image(str(local), cfg) == local


def test_lru_eviction(tmp_path):
    cache = ImageCache(tmp_path / "c", limit_bytes=(7 << 20) // 2)
    shas = []
    for i in range(3):
        part = tmp_path / f"{i}.part"
        part.write_bytes(os.urandom(1 << 20) + bytes([i]))
        sha = hashlib.sha256(part.read_bytes()).hexdigest()
        shas.append(sha)
        e = cache.add(part, sha, f"http://h/{i}.img", None)
        os.utime(e.dir / ".used", (1000 + i, 1000 + i))
    cache.touch(cache.get(shas[0]))  # used again: now the most recent
    part = tmp_path / "3.part"
    part.write_bytes(os.urandom(1 << 20))
    sha3 = hashlib.sha256(part.read_bytes()).hexdigest()
    cache.add(part, sha3, "http://h/3.img", None)
    left = {e.sha256 for e in cache.entries()}
    assert shas[1] not in left  # least recently used went first
    assert {shas[0], sha3} <= left
    assert sum(e.size for e in cache.entries()) <= (7 << 20) // 2


def test_cli_fetch_then_list(server, tmp_path, monkeypatch, capsys):
    from rig.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    body = _image_bytes()
    server.files["/custom.img"] = body
    good = hashlib.sha256(body).hexdigest()
    assert main(["images", "fetch", server.url + "/custom.img", "--sha256", "0" * 64]) == 3
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["images", "fetch", server.url + "/custom.img", "--sha256", good]) == 0
    out = capsys.readouterr().out
    assert f"sha256={good}" in out
    assert Path(out.split()[0]).read_bytes() == body
    assert main(["images", "list"]) == 0
    listing = capsys.readouterr().out
    assert "custom.img" in listing and "cached: 1 image(s)" in listing
    assert main(["images", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (entry,) = data["uncatalogued"]
    assert entry["url"] == server.url + "/custom.img" and entry["sha256"] == good
    assert Path(entry["file"]).read_bytes() == body and entry["size"] >= len(body)
    assert data["cache"]["images"] == 1 and data["cache"]["bytes"] == entry["size"]


def test_unpacked_copies_count_against_the_limit(tmp_path):
    cache = ImageCache(tmp_path / "c", limit_bytes=(5 << 20) // 2)
    unpacked = tmp_path / "c" / "unpacked"
    unpacked.mkdir(parents=True)
    old, new = unpacked / "old.img", unpacked / "new.img"
    old.write_bytes(os.urandom(1 << 20))
    new.write_bytes(os.urandom(1 << 20))
    os.utime(old, (1000, 1000))
    part = tmp_path / "dl.part"
    part.write_bytes(os.urandom(1 << 20))
    cache.add(part, hashlib.sha256(part.read_bytes()).hexdigest(), "http://h/x.img", None)
    assert not old.exists() and new.exists()  # the least recently used file went


def test_catalogue_extract_sha256_is_checked_on_unpack(server, tmp_path, monkeypatch):
    img = _image_bytes()
    packed = lzma.compress(img, preset=0)
    server.files["/pi.img.xz"] = packed
    catalog = tmp_path / "catalog.yaml"
    entry = (
        "images:\n  test-os:\n    description: t\n    base: bookworm\n    scheme: firstrun\n"
        f"    url: {server.url}/pi.img.xz\n    sha256: {hashlib.sha256(packed).hexdigest()}\n"
        '    extract_sha256: "{extract}"\n'
    )
    catalog.write_text(entry.format(extract="0" * 64))
    monkeypatch.setenv("RIG_CATALOG", str(catalog))
    with pytest.raises(ConfigError, match="does not match extract_sha256"):
        resolve_image("test-os", _config(tmp_path))
    catalog.write_text(entry.format(extract=hashlib.sha256(img).hexdigest()))
    assert resolve_image("test-os", _config(tmp_path)).read_bytes() == img


def test_url_without_published_checksum_says_how(server, tmp_path):
    server.files["/bare.img"] = _image_bytes()
    with pytest.raises(InfraError) as err:
        fetch(server.url + "/bare.img", _config(tmp_path))
    assert "--sha256" in err.value.hint


# -- checksums as OctoPi and OctoPi-UpToDate publish them ---------------------------------


def test_octopi_md5_file_is_checked(server, tmp_path, monkeypatch):
    """OctoPi publishes `<zip>.md5`; no `.sha256` exists beside it."""
    img = _image_bytes()
    server.files["/octopi.img"] = img
    server.files["/octopi.img.md5"] = f"{hashlib.md5(img).hexdigest()}  octopi.img\n".encode()
    catalog = tmp_path / "catalog.yaml"
    entry = (
        "images:\n  octo:\n    description: t\n    base: bookworm\n    scheme: nmconnection\n"
        f"    url: {server.url}/octopi.img\n    md5_url: {server.url}/octopi.img.md5\n"
    )
    catalog.write_text(entry)
    monkeypatch.setenv("RIG_CATALOG", str(catalog))
    assert resolve_image("octo", _config(tmp_path)).read_bytes() == img
    server.files["/octopi.img.md5"] = b"0" * 32 + b"  octopi.img\n"
    with pytest.raises(InfraError, match="MD5") as e:
        fetch("octo", _config(tmp_path / "other"))
    assert "deleted" in e.value.message


def test_a_bare_url_falls_back_to_the_md5_beside_it(server, tmp_path):
    img = _image_bytes()
    server.files["/os.img"] = img
    server.files["/os.img.md5"] = f"{hashlib.md5(img).hexdigest()}\n".encode()
    assert fetch(server.url + "/os.img", _config(tmp_path)).entry.file.read_bytes() == img


def test_uptodate_rpi_imager_json_single_object(server, tmp_path, monkeypatch):
    """An OctoPi-UpToDate release's rpi-imager.json is one object (OctoPrint/actions
    rpi-imager-snippet), not an os_list; its SHA-256 and extract values are used."""
    import json

    img = _image_bytes()
    packed = lzma.compress(img, preset=0)
    url = f"{server.url}/octopi-1.1.0-1.11.8-20260101000000.img.xz"
    server.files[url.removeprefix(server.url)] = packed
    server.files["/rpi-imager.json"] = json.dumps(
        {
            "name": "OctoPi 1.1.0 with OctoPrint 1.11.8 (build 20260101000000)",
            "description": "A Raspberry Pi distribution for 3d printers.",
            "url": url,
            "icon": "https://example.invalid/rpi-imager.png",
            "release_date": "2026-01-01",
            "extract_size": len(img),
            "extract_sha256": hashlib.sha256(img).hexdigest(),
            "image_download_size": len(packed),
            "image_download_sha256": hashlib.sha256(packed).hexdigest(),
        }
    ).encode()
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "images:\n  uptodate:\n    description: t\n    base: bookworm\n"
        f"    scheme: nmconnection\n    url: {url}\n"
        f"    rpi_imager_json: {server.url}/rpi-imager.json\n"
    )
    monkeypatch.setenv("RIG_CATALOG", str(catalog))
    assert resolve_image("uptodate", _config(tmp_path)).read_bytes() == img


def test_an_archive_bomb_stops_at_the_cache_limit_when_no_size_is_published(server, tmp_path):
    """64 MiB of zeros in ~10 kB of xz, a 16 MiB image cache and no extract_size: the
    unpacked copy stops at the cache's limit (not at 256 GiB) and leaves nothing behind."""
    from rig.card.images import unpacked

    packed = lzma.compress(bytes(64 << 20), preset=0)
    server.files["/bomb.img.xz"] = packed
    sha = hashlib.sha256(packed).hexdigest()
    server.files["/bomb.img.xz.sha256"] = f"{sha}  bomb.img.xz\n".encode()
    config = _config(tmp_path, limit_gb=16 / 1024)
    with pytest.raises(ConfigError, match="archive bomb"):
        resolve_image(server.url + "/bomb.img.xz", config, log=lambda *a, **k: None)
    got = fetch(server.url + "/bomb.img.xz", config, lambda *a, **k: None, sha256=sha)
    assert not got.entry.unpacked.exists()
    with pytest.raises(ConfigError, match="archive bomb"):
        unpacked(got, lambda *a, **k: None, 16 << 20)
    assert not got.entry.unpacked.exists()
    assert not list(got.entry.dir.glob("*.part"))
