"""My own checks of the app after its update: plain pytest, fixtures from the rig's plugin.

`rig run matrix/examples/generic.json` runs this file in each scenario's CHECKS phase;
`pytest --rig-device pi3-a matrix/examples/checks/` runs it against a device left up
with `rig up` (see README, "Your own checks").
"""

import pytest


def test_the_device_runs_the_release(ssh, scenario):
    version = ssh.run("cat ~/myapp/VERSION").stdout.strip()
    if scenario.id is None:  # standalone: no scenario, so no release to compare with
        assert version
    else:
        assert version == scenario.target_version


def test_the_update_kept_the_settings(ssh):
    settings = ssh.run("cat ~/myapp/data/settings.yaml").stdout
    assert settings.strip() == "units: metric"


def test_the_rig_saw_the_start_it_was_asked_for(scenario, facts):
    if scenario.id is None:
        pytest.skip("standalone: no scenario, no facts")
    assert facts["start_version"] == scenario.start_version
    assert facts["final_version"] == scenario.target_version


def test_the_update_left_no_half_written_file(ssh):
    assert ssh.run("test -e ~/myapp/VERSION.new", check=False).exit_status == 1
