"""The rig's package cache between a real upstream index (pypiserver) and a real pip."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from package_rig import Upstream, clean_env, pip

from rig.asgi import BackgroundServer
from rig.packages.environment import from_user_agent
from rig.packages.index import PackageIndex, negotiate
from rig.packages.serve import DevicePackages
from rig.packages.store import PackageStore
from rig.packages.upstream import ACCEPT, HTML_TYPE, JSON_TYPE

# the User-Agent a Raspberry Pi 3 on OctoPi 1.1 (bookworm, 32-bit) sends, in pip's format
PI3_AGENT = (
    'pip/23.0.1 {"ci":null,"cpu":"armv7l","distro":{"id":"bookworm","libc":{"lib":"glibc",'
    '"version":"2.36"},"name":"Raspbian GNU/Linux","version":"12"},"implementation":'
    '{"name":"CPython","version":"3.11.2"},"installer":{"name":"pip","version":"23.0.1"},'
    '"python":"3.11.2","system":{"name":"Linux","release":"6.6.31+rpt-rpi-v7"}}'
)


def serve(store: PackageStore, upstream: Upstream, **kw) -> tuple[PackageIndex, BackgroundServer]:
    index = PackageIndex(store, [upstream.url], **kw)
    return index, BackgroundServer(index).start()


def install(venv: Path, server: BackgroundServer, target: Path, *reqs: str, extra=()):
    return pip(
        venv,
        "install",
        "--no-cache-dir",
        "--index-url",
        f"{server.url}/simple/",
        "--target",
        str(target),
        *extra,
        *reqs,
    )


def agent_of(venv: Path) -> str:
    """The User-Agent this venv's pip sends (pip's own function)."""
    from rig.packages.environment import USER_AGENT_SCRIPT

    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", USER_AGENT_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    )
    return out.stdout.strip()


def test_cold_from_upstream_then_warm_with_the_upstream_gone(tmp_path, venv, upstream):
    store = PackageStore(tmp_path / "cache", 1 << 30)
    _, server = serve(store, upstream, page_ttl=0)  # every page asked upstream again
    try:
        install(venv, server, tmp_path / "t1", "rigdemo==1.0")
        assert (tmp_path / "t1" / "rigdemo" / "__init__.py").read_text() == "VERSION = '1.0'\n"
        assert store.cached("rigdemo", "rigdemo-1.0-py3-none-any.whl") is not None
        assert any(r.endswith("rigdemo-1.0-py3-none-any.whl") for r in upstream.requests)

        upstream.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(upstream.url)
        install(venv, server, tmp_path / "t2", "rigdemo==1.0")
        assert (tmp_path / "t2" / "rigdemo" / "__init__.py").is_file()
        # never fetched: without the upstream it cannot be had, and pip is told why
        missing = pip(
            venv,
            "install",
            "--no-cache-dir",
            "--no-deps",
            "--index-url",
            f"{server.url}/simple/",
            "--target",
            str(tmp_path / "t3"),
            "rigdemo==2.0",
            check=False,
        )
    finally:
        server.stop()
    assert missing.returncode != 0
    assert "502" in missing.stderr + missing.stdout
    assert not (tmp_path / "t3" / "rigdemo").exists()


def test_a_wheel_a_device_built_is_offered_only_to_its_own_environment(tmp_path, venv, upstream):
    # the "device": pip builds rigbuilt from its sdist, keeping the wheel in its cache
    store = PackageStore(tmp_path / "cache", 1 << 30)
    _, server = serve(store, upstream)
    device_cache = tmp_path / "device-pip-cache"
    try:
        pip(
            venv,
            "install",
            "--cache-dir",
            str(device_cache),
            "--index-url",
            f"{server.url}/simple/",
            "--target",
            str(tmp_path / "built-here"),
            "rigbuilt==1.0",
        )
        built = sorted((device_cache / "wheels").rglob("*.whl"))
        assert [p.name for p in built] == ["rigbuilt-1.0-py3-none-any.whl"]
        wheel = built[0]

        # kept under a Pi 3's environment: this machine's pip must not get it
        assert DevicePackages("-", store).keep_built(PI3_AGENT, wheel.name, wheel.read_bytes())
        refused = pip(
            venv,
            "install",
            "--no-cache-dir",
            "--only-binary",
            ":all:",
            "--index-url",
            f"{server.url}/simple/",
            "--target",
            str(tmp_path / "t-other"),
            "rigbuilt==1.0",
            check=False,
        )
        assert refused.returncode != 0
        assert "No matching distribution found for rigbuilt" in refused.stderr

        # kept under this venv's own environment: offered, and installed without a build
        assert DevicePackages("-", store).keep_built(agent_of(venv), wheel.name, wheel.read_bytes())
        ok = pip(
            venv,
            "install",
            "--no-cache-dir",
            "--only-binary",
            ":all:",
            "--index-url",
            f"{server.url}/simple/",
            "--target",
            str(tmp_path / "t-same"),
            "rigbuilt==1.0",
        )
        assert "/built/" in ok.stdout
        assert (tmp_path / "t-same" / "rigbuilt" / "__init__.py").is_file()

        # the page itself: the Pi's pip sees its wheel, a pip of another Python does not
        page = httpx.get(
            f"{server.url}/simple/rigbuilt/", headers={"Accept": JSON_TYPE, "User-Agent": PI3_AGENT}
        )
        names = [f["filename"] for f in page.json()["files"]]
        assert names == ["rigbuilt-1.0.tar.gz", "rigbuilt-1.0-py3-none-any.whl"]
        other = PI3_AGENT.replace('"version":"3.11.2"', '"version":"3.13.5"')
        assert from_user_agent(other) != from_user_agent(PI3_AGENT)
        page = httpx.get(
            f"{server.url}/simple/rigbuilt/", headers={"Accept": JSON_TYPE, "User-Agent": other}
        )
        assert [f["filename"] for f in page.json()["files"]] == ["rigbuilt-1.0.tar.gz"]
        page = httpx.get(f"{server.url}/simple/rigbuilt/", headers={"Accept": JSON_TYPE})
        assert [f["filename"] for f in page.json()["files"]] == ["rigbuilt-1.0.tar.gz"]
    finally:
        server.stop()


def test_a_file_that_does_not_match_the_upstream_hash_is_refused(
    tmp_path, venv, upstream, packages
):
    store = PackageStore(tmp_path / "cache", 1 << 30)
    _, server = serve(store, upstream)
    try:
        page = httpx.get(f"{server.url}/simple/rigdemo/", headers={"Accept": ACCEPT})
        assert page.status_code == 200
        # the upstream's file changes after its page gave the hash (a tampering mirror)
        wheel = packages / "rigdemo-1.0-py3-none-any.whl"
        wheel.write_bytes(wheel.read_bytes() + b"\0")
        r = httpx.get(f"{server.url}/simple/../files/rigdemo/{wheel.name}")
        assert r.status_code == 502
        assert "refused: sha256 is" in r.text
        assert store.cached("rigdemo", wheel.name) is None
        assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        failed = pip(
            venv,
            "install",
            "--no-cache-dir",
            "--no-deps",
            "--index-url",
            f"{server.url}/simple/",
            "--target",
            str(tmp_path / "t"),
            "rigdemo==1.0",
            check=False,
        )
        assert failed.returncode != 0
        assert not (tmp_path / "t" / "rigdemo").exists()
    finally:
        server.stop()


def test_the_cache_keeps_to_its_size_limit(tmp_path, venv, upstream, packages):
    one = (packages / "rigdemo-1.0-py3-none-any.whl").stat().st_size
    store = PackageStore(tmp_path / "cache", one + 100)  # room for one wheel
    _, server = serve(store, upstream)
    try:
        install(venv, server, tmp_path / "t1", "rigdemo==1.0")
        install(venv, server, tmp_path / "t2", "rigdemo==2.0")
    finally:
        server.stop()
    assert store.cached("rigdemo", "rigdemo-2.0-py3-none-any.whl") is not None
    assert store.cached("rigdemo", "rigdemo-1.0-py3-none-any.whl") is None
    assert store.size() <= one + 100


def test_built_wheels_are_evicted_after_the_upstream_files(tmp_path):
    store = PackageStore(tmp_path / "cache", 3100)  # the built wheel and two files
    env = from_user_agent(PI3_AGENT)
    assert env is not None
    assert store.keep_built(env, "a-1.0-cp311-cp311-linux_armv7l.whl", b"PK" + b"a" * 1000)
    d = tmp_path / "dl"
    d.mkdir()
    for name in ("b-1.0.tar.gz", "c-1.0.tar.gz", "d-1.0.tar.gz"):
        (d / name).write_bytes(b"x" * 1000)
        store.add(name[0], name, d / name)
    kept = sorted(p.name for _, _, _, p in store.entries())
    assert kept == ["a-1.0-cp311-cp311-linux_armv7l.whl", "c-1.0.tar.gz", "d-1.0.tar.gz"]
    assert not store.keep_built(env, "not-a-wheel.tar.gz", b"PK")
    assert not store.keep_built(env, "../../x-1.0-py3-none-any.whl", b"PK")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (ACCEPT, JSON_TYPE),  # what pip sends
        (f"{HTML_TYPE}, {JSON_TYPE};q=0.5", HTML_TYPE),
        ("text/html", "text/html"),
        (None, "text/html"),
        ("*/*", "text/html"),
        ("application/json", None),
        (f"{JSON_TYPE};q=0", None),
    ],
)
def test_content_negotiation_as_pep_691_says(accept, chosen):
    assert negotiate(accept) == chosen


def test_both_page_formats_and_a_clear_406(tmp_path, upstream):
    store = PackageStore(tmp_path / "cache", 1 << 30)
    _, server = serve(store, upstream)
    try:
        base = f"{server.url}/simple"
        j = httpx.get(f"{base}/rigdemo/", headers={"Accept": ACCEPT})
        assert j.headers["content-type"].startswith(JSON_TYPE)
        data = j.json()
        assert data["meta"]["api-version"] == "1.0"
        assert {f["filename"] for f in data["files"]} >= {"rigdemo-1.0-py3-none-any.whl"}
        assert all(set(f["hashes"]) == {"sha256"} for f in data["files"])
        h = httpx.get(f"{base}/rigdemo/", headers={"Accept": "text/html"})
        assert h.headers["content-type"].startswith("text/html")
        assert 'href="../../files/rigdemo/rigdemo-1.0-py3-none-any.whl#sha256=' in h.text
        r = httpx.get(f"{base}/RigDemo/", headers={"Accept": ACCEPT}, follow_redirects=True)
        assert r.status_code == 200 and r.url.path.endswith("/simple/rigdemo/")
        bad = httpx.get(f"{base}/rigdemo/", headers={"Accept": "application/json"})
        assert bad.status_code == 406 and JSON_TYPE in bad.text
        assert httpx.get(f"{base}/nosuchproject/").status_code == 404
        root = httpx.get(f"{base}/", headers={"Accept": JSON_TYPE}).json()
        assert {"name": "rigdemo"} in root["projects"]
    finally:
        server.stop()
    assert json.loads((tmp_path / "cache" / "pages" / "rigdemo.json").read_text())["files"]


def test_unknown_agents_get_no_built_wheels():
    assert from_user_agent(None) is None
    assert from_user_agent("curl/8.0") is None
    assert from_user_agent("pip/23.0 {not json}") is None
    env = from_user_agent(PI3_AGENT)
    assert env is not None and (env.python, env.cpu, env.libc) == ("3.11", "armv7l", "glibc 2.36")
    assert os.sep not in env.key


def _config(tmp_path: Path, run: dict | None):
    from rig.config import load_config

    cfg = tmp_path / "rig.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"virtual": {}, **({"run": run} if run is not None else {})}))
    return load_config(cfg)


def test_settings_from_rig_yaml_and_the_environment(tmp_path):
    from rig.errors import ConfigError
    from rig.packages.settings import package_settings, pip_default_index

    s = package_settings(_config(tmp_path, None), environ={})
    assert s is not None and s.upstreams == (pip_default_index(),) and s.limit_bytes == 5 << 30
    assert s.root == _config(tmp_path, None).paths.images.parent / "packages"
    env = {"PIP_INDEX_URL": "https://mirror.example/simple", "PIP_EXTRA_INDEX_URL": "file:///x"}
    s = package_settings(_config(tmp_path, None), environ=env)
    assert s is not None and s.upstreams == ("https://mirror.example/simple/",)
    assert package_settings(_config(tmp_path, None), environ={"PIP_INDEX_URL": "file:///m"}) is None
    assert package_settings(_config(tmp_path, {"package_index": False}), environ={}) is None
    s = package_settings(
        _config(
            tmp_path,
            {
                "package_index": ["https://a/simple", "https://b/simple/"],
                "package_cache": "pc",
                "package_cache_gb": 0.5,
            },
        ),
        environ={},
    )
    assert s is not None and s.upstreams == ("https://a/simple/", "https://b/simple/")
    assert s.root == tmp_path / "pc" and s.limit_bytes == 1 << 29
    # rig.yaml is checked when it is read (the schema), the settings check again for callers
    # that build a config in code
    for run, key in (
        ({"package_index": "file:///srv/simple"}, "run.package_index"),
        ({"package_cache_gb": 0}, "run.package_cache_gb"),
    ):
        with pytest.raises(ConfigError) as e:
            _config(tmp_path, run)
        assert key in str(e.value)
        config = _config(tmp_path, None)
        config.sections["run"] = run
        with pytest.raises(ConfigError) as e:
            package_settings(config, environ={})
        assert key in e.value.where


def test_upstream_pages_in_both_formats_keep_hashes_metadata_and_yanks():
    """The shapes PyPI answers (PEP 691 JSON with PEP 714 core-metadata; PEP 503 HTML)."""
    from rig.packages.upstream import parse

    body = json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": "sarge",
            "files": [
                {
                    "filename": "sarge-0.1.7-py2.py3-none-any.whl",
                    "url": "https://files.example/ab/sarge-0.1.7-py2.py3-none-any.whl",
                    "hashes": {"sha256": "aa"},
                    "requires-python": ">=3.7",
                    "core-metadata": {"sha256": "bb"},
                    "yanked": False,
                },
                {
                    "filename": "sarge-0.1.6.tar.gz",
                    "url": "../../x/sarge-0.1.6.tar.gz",
                    "hashes": {"sha256": "cc"},
                    "yanked": "broken",
                },
            ],
        }
    ).encode()
    files = parse(JSON_TYPE, body, "https://pypi.example/simple/sarge/")
    assert files[0].metadata == {"sha256": "bb"} and files[0].requires_python == ">=3.7"
    assert files[1].url == "https://pypi.example/x/sarge-0.1.6.tar.gz"
    assert files[1].yanked == "broken" and files[1].metadata is None
    page = (
        b'<html><body><a href="../../p/sarge-0.1.7-py2.py3-none-any.whl#sha256=aa" '
        b'data-requires-python="&gt;=3.7" data-core-metadata="sha256=bb">'
        b'sarge-0.1.7-py2.py3-none-any.whl</a><a href="/p/sarge-0.1.6.tar.gz#sha256=cc" '
        b'data-yanked="">sarge-0.1.6.tar.gz</a></body></html>'
    )
    files = parse("text/html", page, "https://piwheels.example/simple/sarge/")
    assert files[0].hashes == {"sha256": "aa"} and files[0].metadata == {"sha256": "bb"}
    assert files[0].requires_python == ">=3.7"
    assert files[0].url == "https://piwheels.example/p/sarge-0.1.7-py2.py3-none-any.whl"
    assert files[1].yanked is True and files[1].metadata is None
