"""Bundled plugins' updates through the rig's feed, on a real OctoPrint (issue 13, 10a).

As OctoPrint's devtools rig does (fabfile.py release_patch_filecheck): the plugin's
release is answered under the repository its own softwareupdate check asks
(OctoPrint/OctoPrint-FileCheck), its check's pip is pointed at the package index,
and the device must offer and install it through softwareupdate.
"""

from __future__ import annotations

import pytest

from rig.errors import ConfigError, ProductError
from rig.product.octoprint.feed import PluginRelease, feed_app

OLD_FILECHECK = "2024.11.12"  # both on the package index; 1.11.8 accepts either
NEW_FILECHECK = "2025.7.23"
TARGET = "1.11.8"  # the device's OctoPrint (conftest's current release)


def _installed(rig, package: str) -> str:
    out = rig.device.shell().run(f"~/oprint/bin/python -m pip show {package}", quiet=True)
    return next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("Version:"))


def test_feed_serves_each_plugin_release_under_its_own_repository():
    from starlette.testclient import TestClient

    from rig.product.octoprint.feed import InjectedRelease

    app = feed_app(
        InjectedRelease(TARGET, "stable"),
        plugins=(
            PluginRelease("file_check", NEW_FILECHECK),
            PluginRelease("pi_support", "2025.7.23"),
        ),
    )
    client = TestClient(app)
    [fc] = client.get("/releases/OctoPrint/OctoPrint-FileCheck").json()
    assert (fc["tag_name"], fc["target_commitish"], fc["prerelease"]) == (
        NEW_FILECHECK,
        "master",
        False,
    )
    [ps] = client.get("/releases/OctoPrint/OctoPrint-PiSupport").json()
    assert ps["target_commitish"] == "main"  # PiSupport releases from main
    assert client.get("/releases/OctoPrint/OctoPrint-FirmwareCheck").json() == []
    assert client.get("/releases/OctoPrint/OctoPrint").json()[0]["tag_name"] == TARGET


def test_an_unknown_plugin_or_version_is_a_config_error():
    with pytest.raises(ConfigError, match="no bundled plugin 'filecheck'"):
        PluginRelease("filecheck", "1.0")
    with pytest.raises(ConfigError, match="not a version"):
        PluginRelease("file_check", "latest")


def test_a_bundled_plugin_release_is_offered_and_installed(plugin_rig):
    rig = plugin_rig
    rig.device.shell().run(
        f"~/oprint/bin/python -m pip install --no-input OctoPrint-FileCheck=={OLD_FILECHECK}",
        timeout=600,
    )
    ctx = rig.ctx(start_version=None, release_options={"plugins": {"file_check": NEW_FILECHECK}})
    rig.profile.prepare(ctx)
    # nothing injected yet: the device's own check sees no release, so not offered
    with pytest.raises(ProductError, match=f"file_check {NEW_FILECHECK} not offered"):
        rig.profile.check(ctx, "plugin-updates")
    rig.feed.app.state.plugins = (PluginRelease("file_check", NEW_FILECHECK),)
    rig.profile.check(ctx, "plugin-updates")
    assert ctx.facts["plugin_file_check_before"] == OLD_FILECHECK
    assert ctx.facts["plugin_file_check_after"] == NEW_FILECHECK
    assert _installed(rig, "OctoPrint-FileCheck") == NEW_FILECHECK
    assert any(
        p.endswith("/releases/OctoPrint/OctoPrint-FileCheck") for p in rig.feed.app.state.requests
    )


def test_a_matrix_names_plugin_releases_and_checks_them(tmp_path):
    import json

    from rig.orchestration.matrix import ValidationErrors, load_matrix

    base = {"image": "octopi-1.1.0", "channel": "stable"}
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            {
                "release": {
                    "version": TARGET,
                    "channel": "stable",
                    "plugins": {"file_check": NEW_FILECHECK},
                },
                "scenarios": [{**base, "id": "p", "checks": ["update-api", "plugin-updates"]}],
            }
        )
    )
    assert load_matrix(path).release.options["plugins"] == {"file_check": NEW_FILECHECK}
    path.write_text(
        json.dumps(
            {
                "release": {"version": TARGET, "channel": "stable"},
                "scenarios": [{**base, "id": "p", "checks": ["plugin-updates"]}],
            }
        )
    )
    with pytest.raises(ValidationErrors, match="plugin-updates needs plugin releases"):
        load_matrix(path)
    path.write_text(
        json.dumps(
            {
                "release": {"version": TARGET, "channel": "stable", "plugins": {"filecheck": "1"}},
                "scenarios": [{**base, "id": "p"}],
            }
        )
    )
    with pytest.raises(ValidationErrors, match="filecheck"):
        load_matrix(path)


def test_a_plugin_the_check_overlay_moves_is_served_where_the_overlay_points():
    """The real overlay can give a check another user or repo (a plugin that changed
    hands): the device then asks there, and only there is the release."""
    from starlette.testclient import TestClient

    from rig.product.octoprint.feed import InjectedRelease

    app = feed_app(
        InjectedRelease(TARGET, "stable"),
        overlay={"file_check": {"user": "new-maintainer"}},
        plugins=(PluginRelease("file_check", NEW_FILECHECK),),
    )
    client = TestClient(app)
    assert client.get("/releases/OctoPrint/OctoPrint-FileCheck").json() == []
    [fc] = client.get("/releases/new-maintainer/OctoPrint-FileCheck").json()
    assert fc["tag_name"] == NEW_FILECHECK
