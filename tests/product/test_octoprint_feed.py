"""The release feed and the channel rules, without a device."""

from __future__ import annotations

import httpx
import pytest

from rig.product.octoprint.channels import (
    accepted_commitish,
    channel_settings,
    offered,
    published_commitish,
)
from rig.product.octoprint.feed import FeedServer, InjectedRelease
from rig.product.octoprint.overlay import check_overlay
from rig.product.octoprint.settings import MERGE_SCRIPT, config_overlay


@pytest.fixture
def feed():
    overlay = {"octoprint": {"user": "OctoPrint"}}
    with FeedServer(InjectedRelease("1.11.0rc3", "maintenance"), overlay=overlay) as server:
        yield server


def test_feed_answers_release_list_like_github(feed):
    r = httpx.get(f"{feed.url}/releases/foosel/OctoPrint")
    assert r.status_code == 200
    real, old_name = r.json()
    for release in (real, old_name):
        assert release["tag_name"] == "1.11.0rc3"
        assert release["prerelease"] is True
        assert release["draft"] is False
        assert release["published_at"].endswith("Z")
        assert release["html_url"].endswith("/1.11.0rc3")
    # real RCs are cut from next; 1.x devices before 1.11 know it as rc/maintenance
    assert [real["target_commitish"], old_name["target_commitish"]] == ["next", "rc/maintenance"]
    assert feed.app.state.requests == ["/releases/foosel/OctoPrint"]


def test_feed_publishes_only_the_real_commitish_to_2x_devices(feed):
    r = httpx.get(f"{feed.url}/releases/OctoPrint/OctoPrint", params={"series": "2"})
    assert [e["target_commitish"] for e in r.json()] == ["next"]


def test_feed_serves_the_check_overlay_it_was_given(feed):
    assert httpx.get(f"{feed.url}/overlay.json").json() == {"octoprint": {"user": "OctoPrint"}}


def test_feed_other_repos_get_no_releases_and_unknown_paths_404(feed):
    assert httpx.get(f"{feed.url}/releases/someone/OctoPrint-FileCheck").json() == []
    assert httpx.get(f"{feed.url}/plugins.json").json() == []
    assert httpx.get(f"{feed.url}/anything/else").status_code == 404


def test_stable_release_targets_main_and_master_and_is_final():
    entries = InjectedRelease("1.11.8", "stable").as_github()
    assert [e["target_commitish"] for e in entries] == ["main", "master"]
    assert all(e["prerelease"] is False for e in entries)


def test_a_mis_targeted_release_is_published_exactly_as_stated():
    entries = InjectedRelease("1.11.0rc1", "maintenance", commitish=("next",)).as_github()
    assert [e["target_commitish"] for e in entries] == ["next"]


@pytest.mark.parametrize(
    ("release", "device", "version", "seen"),
    [
        ("maintenance", "stable", "1.10.3", False),
        ("maintenance", "maintenance", "1.5.2", True),  # through the old name rc/maintenance
        ("maintenance", "maintenance", "1.10.3", True),
        ("maintenance", "devel", "1.10.3", True),
        ("devel", "maintenance", "1.10.3", False),
        ("devel", "devel", "1.10.3", True),
        ("next", "maintenance", "1.11.8", True),
        ("maintenance", "maintenance", "2.0.0rc3", True),
        ("devel", "devel", "2.0.0rc3", False),  # 2.x has no devel channel: rc/devel unseen
    ],
)
def test_offered_table(release, device, version, seen):
    assert offered(release, device, version) is seen


@pytest.mark.parametrize(
    ("release", "version", "device", "seen"),
    [  # 2.x came after the branch rename (docs/development/branches.rst from 1.11.3): on
        # GitHub under `next` only; OctoPrint 1.10.3's Maintenance RCs accept rc/maintenance only
        ("next", "2.0.0rc7", "1.10.3", False),
        ("maintenance", "2.0.0rc7", "1.10.3", False),
        ("next", "2.0.0rc7", "1.11.8", True),  # 1.11.x lists `next` (softwareupdate __init__.py)
        ("maintenance", "2.0.0rc7", "1.11.0", True),
        ("maintenance", "1.11.0rc3", "1.10.3", True),  # a 1.x RC: under rc/maintenance too
        ("maintenance", "1.11.8", "1.10.3", True),  # the demo's 1.x candidate as an RC
    ],
)
def test_releases_after_the_branch_rename_keep_their_real_commitish(release, version, device, seen):
    assert offered(release, "maintenance", device, release_version=version) is seen
    entries = InjectedRelease(version, release).as_github(device_series=1)
    accepted = {"1.10.3": {"rc/maintenance"}}.get(device, {"rc/maintenance", "next"})
    assert any(e["target_commitish"] in accepted for e in entries) is seen


def test_final_releases_pass_every_channel():
    assert offered("stable", "stable", "1.10.3", prerelease=False)
    assert offered("stable", "devel", "2.0.0rc3", prerelease=False)


@pytest.mark.parametrize(
    ("channel", "version", "accepted"),
    [  # get_settings_defaults of the softwareupdate plugin at each tag
        ("stable", "1.5.2", ["master"]),
        ("maintenance", "1.5.2", ["rc/maintenance"]),
        ("maintenance", "1.10.3", ["rc/maintenance"]),
        ("devel", "1.10.3", ["rc/maintenance", "rc/devel"]),
        ("stable", "1.11.0", ["master", "main"]),
        ("maintenance", "1.11.0rc1", ["rc/maintenance", "next"]),
        ("devel", "1.11.8", ["rc/maintenance", "rc/devel", "next"]),
        ("stable", "2.0.0rc3", ["main"]),
        ("maintenance", "2.0.0rc3", ["next"]),
    ],
)
def test_accepted_commitish_per_version(channel, version, accepted):
    assert accepted_commitish(channel, version) == accepted


def test_channel_settings_per_generation():
    assert channel_settings("devel", "1.10.3") == {
        "prerelease": True,
        "prerelease_channel": "rc/devel",
    }
    assert channel_settings("next", "1.11.8")["prerelease_channel"] == "rc/maintenance"
    assert channel_settings("stable", "1.11.8")["prerelease"] is False
    # without prerelease_channel a 2.x device would see every prerelease, whatever its branch
    assert channel_settings("maintenance", "2.0.0") == {
        "prerelease": True,
        "prerelease_channel": "prerelease",
    }
    assert published_commitish("devel", 1) == ["rc/devel"]


def test_check_overlay_from_a_served_copy_is_cached_for_offline_runs(tmp_path):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rig.asgi import BackgroundServer

    shape = {"octoprint": {"user": "OctoPrint"}, "someplugin": {"user": "new", "pip": "x"}}

    async def overlay(request):
        return JSONResponse(shape)

    cache = tmp_path / "overlay.json"
    with BackgroundServer(Starlette(routes=[Route("/o.json", overlay)]), "127.0.0.1", 0) as s:
        assert check_overlay(f"http://127.0.0.1:{s.port}/o.json", cache) == shape
    seen: list[str] = []
    gone = f"http://127.0.0.1:{s.port}/o.json"
    assert check_overlay(gone, cache, log=seen.append) == shape
    assert "using the copy" in seen[0]


def test_without_overlay_or_copy_the_devices_use_the_built_in_checks_and_it_is_said(
    tmp_path, caplog
):
    """Like a device that cannot reach plugins.octoprint.org: no overlay, with a warning."""
    import logging

    gone = "http://127.0.0.1:9/overlay.json"  # the discard port: nothing answers
    with caplog.at_level(logging.WARNING, logger="rig"):
        assert check_overlay(gone, tmp_path / "never-fetched.json") == {}
    assert "built-in check configs" in caplog.text and gone in caplog.text
    assert not (tmp_path / "never-fetched.json").exists()


def test_a_local_copy_of_the_overlay_is_never_cached(tmp_path):
    """A mirror's or a test's copy must not become the field's overlay for later runs."""
    local = tmp_path / "copy.json"
    local.write_text('{"octoprint": {"user": "OctoPrint"}}')
    cache = tmp_path / "cache.json"
    assert check_overlay(f"file://{local}", cache) == {"octoprint": {"user": "OctoPrint"}}
    assert not cache.exists()


def test_config_overlay_merges_into_existing_config(tmp_path):
    import json
    import subprocess
    import sys

    import yaml

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"secretKey": "keep-me", "firstRun": True},
                "plugins": {
                    "softwareupdate": {"checks": {"octoprint": {"prerelease_channel": "rc/devel"}}}
                },
            }
        )
    )
    overlay = config_overlay(
        channel="stable",
        device_version="1.10.3",
        pip=None,
        target_version="1.11.8",
        feed_url="http://10.0.0.1:8111/",
    )
    (tmp_path / "overlay.json").write_text(json.dumps(overlay))
    (tmp_path / "merge.py").write_text(MERGE_SCRIPT)
    subprocess.run(
        [sys.executable, str(tmp_path / "merge.py"), str(config), str(tmp_path / "overlay.json")],
        check=True,
    )
    merged = yaml.safe_load(config.read_text())
    assert merged["server"]["secretKey"] == "keep-me"
    assert merged["server"]["firstRun"] is False
    check = merged["plugins"]["softwareupdate"]["checks"]["octoprint"]
    assert check == {"prerelease": False, "pip": "OctoPrint=={target_version}"}
    assert merged["plugins"]["softwareupdate"]["check_overlay_url"] == (
        "http://10.0.0.1:8111/overlay.json"
    )
    assert merged["plugins"]["rig_release_injection"]["feed_url"] == "http://10.0.0.1:8111"
    assert merged["server"]["commands"]["serverRestartCommand"] == (
        "sudo service octoprint restart"
    )
