"""Release channels on a real OctoPrint 2.x: one prerelease channel (branch ``prerelease``,
commitish ``next``), which a device only keeps to when ``prerelease_channel`` is set."""

from __future__ import annotations

import pytest
import yaml

from rig.errors import ProductError
from rig.product.octoprint.feed import InjectedRelease

pytestmark = pytest.mark.slow

V2 = "2.0.0rc3"
NEXT_RC = "2.0.0rc99"  # newer than the device, offered only where its commitish fits


def test_prepare_sets_both_prerelease_keys_on_2x(v2_rig):
    ctx = v2_rig.ctx(channel="maintenance", target_version=NEXT_RC, expect="not-offered")
    v2_rig.profile.prepare(ctx)
    assert ctx.facts["octoprint_version"] == V2
    config = yaml.safe_load((v2_rig.device.home / ".octoprint/config.yaml").read_text())
    check = config["plugins"]["softwareupdate"]["checks"]["octoprint"]
    assert check["prerelease"] is True
    assert check["prerelease_channel"] == "prerelease"


def test_a_2x_device_sees_rcs_from_next_and_not_from_other_branches(v2_rig):
    profile = v2_rig.profile
    # an RC on a branch 2.x does not track (rc/devel): not offered
    v2_rig.inject(NEXT_RC, "devel")
    profile.update(v2_rig.ctx(channel="maintenance", target_version=NEXT_RC, expect="not-offered"))
    # the real RC branch: offered
    v2_rig.feed.app.state.release = InjectedRelease(NEXT_RC, "maintenance")
    with pytest.raises(ProductError, match="is offered on channel maintenance"):
        profile.update(
            v2_rig.ctx(channel="maintenance", target_version=NEXT_RC, expect="not-offered")
        )
