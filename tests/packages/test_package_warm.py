"""Warming the package cache ahead of a run (issue 17, item 4): pip downloads through the
cache's own index from a real upstream (pypiserver on loopback), so the files land in it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from rig.errors import InfraError
from rig.packages.settings import PackageSettings
from rig.packages.store import PackageStore
from rig.packages.warm import warm_cache


def test_warming_puts_the_requirements_in_the_cache(tmp_path, upstream):
    settings = PackageSettings((upstream.url.rstrip("/") + "/",), tmp_path / "cache", 1 << 30)
    warmed = warm_cache(settings, ["rigdemo==1.0"], tmp_path / "warm.log")
    assert warmed.files == ["rigdemo-1.0-py3-none-any.whl"], (tmp_path / "warm.log").read_text()
    assert not warmed.stopped
    store = PackageStore(settings.root, settings.limit_bytes)
    assert store.cached("rigdemo", "rigdemo-1.0-py3-none-any.whl") is not None
    assert any(r.endswith("rigdemo-1.0-py3-none-any.whl") for r in upstream.requests)
    assert "1 file(s) in the package cache for rigdemo==1.0" in warmed.summary()


def test_an_unknown_requirement_is_a_located_error(tmp_path, upstream):
    settings = PackageSettings((upstream.url.rstrip("/") + "/",), tmp_path / "cache", 1 << 30)
    with pytest.raises(InfraError) as e:
        warm_cache(settings, ["rigdemo==9.9"], tmp_path / "warm.log")
    assert "rigdemo==9.9" in e.value.message and e.value.where == str(tmp_path / "warm.log")


def test_a_stop_ends_the_download_at_once(tmp_path):
    hung = socket.socket()  # an upstream that accepts and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen()
    settings = PackageSettings(
        (f"http://127.0.0.1:{hung.getsockname()[1]}/simple/",), tmp_path / "cache", 1 << 30
    )
    asked = threading.Event()
    start = time.monotonic()

    def stop() -> bool:
        asked.set()
        return time.monotonic() - start > 1.5

    try:
        warmed = warm_cache(settings, ["rigdemo==1.0"], tmp_path / "warm.log", stop=stop)
    finally:
        hung.close()
    assert warmed.stopped and warmed.files == []
    assert time.monotonic() - start < 15


def test_nothing_to_warm_starts_nothing(tmp_path):
    settings = PackageSettings(("http://127.0.0.1:9/simple/",), tmp_path / "cache", 1 << 30)
    assert warm_cache(settings, [], tmp_path / "warm.log").files == []
    assert not (tmp_path / "warm.log").exists()
