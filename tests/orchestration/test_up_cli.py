"""`rig up` / `rig down`: the refusals that need no device (held ones: test_handover_virtual)."""

from __future__ import annotations

import pytest
import yaml

from rig.cli import main
from rig.config import load_config
from rig.orchestration.leases import Leases


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "rig.yaml"
    # no starting-state snapshots: each run starts from the image (tests/orchestration/
    # test_snapshots_virtual.py tests them)
    data = {"paths": {"state": str(tmp_path / "state")}, "virtual": {}, "run": {"snapshots": False}}
    path.write_text(yaml.safe_dump(data))
    return path


def test_without_a_matrix_rig_up_needs_image_and_release(config, capsys) -> None:
    assert main(["--config", str(config), "up", "--octoprint", "1.10.3"]) == 2
    err = capsys.readouterr().err
    assert "rig up needs --image and --release" in err and "hint:" in err


def test_bad_command_line_state_names_the_flags(config, capsys) -> None:
    args = ["--config", str(config), "up", "--image", "nope", "--release", "1.11.8"]
    assert main([*args, "--octoprint", "1.12.0"]) == 2
    err = capsys.readouterr().err
    assert "--image: 'nope' is not in the image catalogue" in err
    assert "--octoprint: 1.12.0 is not older than the release under test 1.11.8" in err
    assert ".json" not in err  # not the generated file's keys


def test_hours_must_be_positive(config, capsys) -> None:
    assert main(["--config", str(config), "up", "--hours", "0", "--image", "octopi-1.1.0"]) == 2
    assert "--hours must be more than 0" in capsys.readouterr().err


def test_rig_down_refuses_what_rig_up_does_not_hold(config, capsys) -> None:
    assert main(["--config", str(config), "down", "pi3-a"]) == 2
    assert "pi3-a is not up: it is free" in capsys.readouterr().err
    leases = Leases(load_config(config).paths.state)
    try:
        assert leases.acquire("pi3-b", purpose="rig run matrix/demo.json")
        assert main(["--config", str(config), "down", "pi3-b"]) == 2
        err = capsys.readouterr().err
        assert "pi3-b is not up: it is held by rig run matrix/demo.json" in err
        assert leases.holder_of("pi3-b") is not None  # refused: nothing changed
    finally:
        leases.close()
    assert main(["--config", str(config), "down", "pi3-x"]) == 2
    assert "no device 'pi3-x'" in capsys.readouterr().err
