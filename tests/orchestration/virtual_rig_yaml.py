"""A rig.yaml for one test's own virtual rig, and its tear-down (shared by the run tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from rig.config import VIRTUAL_CONFIG, load_config

# the tests' virtual Pis on addresses of their own (RIG_TEST_NET moves them)
TEST_NET = os.environ.get("RIG_TEST_NET", "127.0.77")


def virtual_rig_yaml(tmp_path: Path, first_host: int) -> Iterator[Path]:
    """rig.yaml with the virtual devices at TEST_NET.<first_host + 1>...; stops the twin after."""
    devices = {
        name: {**dev, "host": f"{TEST_NET}.{first_host + i}"}
        for i, (name, dev) in enumerate(VIRTUAL_CONFIG["devices"].items(), start=1)
    }
    path = tmp_path / "rig.yaml"
    paths = {"state": str(tmp_path / "state"), "reports": str(tmp_path / "reports")}
    # no starting-state snapshots: each test's run starts from the image
    run = {"snapshots": False}
    path.write_text(yaml.safe_dump({"devices": devices, "paths": paths, "virtual": {}, "run": run}))
    yield path
    from rig.virtual.hw.state import cleanup
    from rig.virtual.twin import stop_twin

    config = load_config(path)
    stop_twin(config)
    cleanup(config.paths.state / "virtual")
