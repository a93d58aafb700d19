"""The release feed and the channel rules, without a device."""

from __future__ import annotations

import httpx
import pytest

from rig.product.octoprint.channels import channel_settings, offered, target_commitish
from rig.product.octoprint.feed import FeedServer, InjectedRelease
from rig.product.octoprint.settings import MERGE_SCRIPT, config_overlay


@pytest.fixture
def feed():
    with FeedServer(InjectedRelease("1.11.0rc3", "maintenance")) as server:
        yield server


def test_feed_answers_release_list_like_github(feed):
    r = httpx.get(f"{feed.url}/releases/foosel/OctoPrint")
    assert r.status_code == 200
    (release,) = r.json()
    assert release["tag_name"] == "1.11.0rc3"
    assert release["prerelease"] is True
    assert release["draft"] is False
    assert release["target_commitish"] == "rc/maintenance"
    assert release["published_at"].endswith("Z")
    assert release["html_url"].endswith("/1.11.0rc3")
    assert feed.app.state.requests == ["/releases/foosel/OctoPrint"]


def test_feed_uses_2x_commitish_for_2x_devices(feed):
    r = httpx.get(f"{feed.url}/releases/OctoPrint/OctoPrint", params={"series": "2"})
    assert r.json()[0]["target_commitish"] == "next"


def test_feed_other_repos_get_no_releases_and_unknown_paths_404(feed):
    assert httpx.get(f"{feed.url}/releases/someone/OctoPrint-FileCheck").json() == []
    assert httpx.get(f"{feed.url}/overlay.json").json() == {}
    assert httpx.get(f"{feed.url}/plugins.json").json() == []
    assert httpx.get(f"{feed.url}/anything/else").status_code == 404


def test_stable_release_targets_master_and_is_final():
    release = InjectedRelease("1.11.8", "stable").as_github()
    assert release["target_commitish"] == "master"
    assert release["prerelease"] is False


@pytest.mark.parametrize(
    ("release", "device", "seen"),
    [
        ("stable", "stable", True),
        ("stable", "devel", True),
        ("maintenance", "stable", False),
        ("maintenance", "maintenance", True),
        ("maintenance", "devel", True),
        ("devel", "maintenance", False),
        ("devel", "devel", True),
        ("next", "maintenance", True),
    ],
)
def test_offered_table(release, device, seen):
    assert offered(release, device) is seen


def test_channel_settings_per_generation():
    assert channel_settings("devel", "1.10.3") == {
        "prerelease": True,
        "prerelease_channel": "rc/devel",
    }
    assert channel_settings("next", "1.11.8")["prerelease_channel"] == "rc/maintenance"
    assert channel_settings("stable", "1.11.8")["prerelease"] is False
    assert channel_settings("maintenance", "2.0.0") == {"prerelease": True}
    assert target_commitish("devel", 1) == "rc/devel"


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
