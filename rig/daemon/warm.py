"""What a warm job does while CI still builds the image the acceptance run will test.

A warm job is queued by ``workflow_run`` *requested* / *in_progress* (one per
workflow run). It is the lowest priority work of the test lane: a test job is
always claimed first, and a test job that arrives while a warm job runs
pre-empts it (the warm step in flight is stopped within a second or so; the warm
job goes back to the queue behind the test jobs). A warm job whose build already
has a test job is not needed any more and ends as ``warmed`` without work.

Its steps:

``packages``  the requirements of every start version the acceptance matrix pins
              (the product profile's ``requirements_for``), downloaded through
              the package cache so the devices' pip finds them there;
``prepare``   :func:`prepare_argv`: the acceptance scenarios that start from a
              catalogue image, run up to their starting state (``rig run
              --prepare-only``). Without starting-state snapshots this exercises
              the path (images in the image cache, devices known good); with them
              it is where the snapshots get made.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rig.card.catalog import CANDIDATE
from rig.daemon.settings import DaemonSettings
from rig.errors import ConfigError

WARM_STEPS = ("packages", "prepare")


def load_acceptance(settings: DaemonSettings) -> Any:
    """The acceptance matrix (rig.orchestration.matrix.Matrix), or a located ConfigError."""
    from rig.orchestration.matrix import load_matrix

    if settings.matrix is None:
        raise ConfigError(
            "no acceptance matrix configured: nothing to warm",
            where="rig.yaml: daemon.matrix",
            hint="set daemon.matrix, or daemon.warm_ahead: false",
        )
    return load_matrix(settings.matrix)


def pinned_requirements(matrix: Any) -> list[list[str]]:
    """One requirement list per start version the matrix pins, as its profile says them
    (each list is resolved on its own: two start versions are two installations)."""
    requirements_for = getattr(matrix.profile, "requirements_for", None)
    if requirements_for is None:
        return []
    versions = sorted({s.start for s in matrix.scenarios if s.start})
    return [list(requirements_for(v)) for v in versions]


def prepared_scenarios(matrix: Any) -> list[str]:
    """The scenarios whose starting state can be reached before the candidate exists."""
    return [s.id for s in matrix.scenarios if s.image != CANDIDATE]


def prepare_argv(settings: DaemonSettings, scenarios: list[str], report_dir: Path) -> list[str]:
    """`rig run MATRIX --scenario ... --prepare-only`: busy devices are not waited for
    (someone's run has them: warming is not worth waiting)."""
    argv = [sys.executable, "-m", "rig"]
    if settings.config_path:
        argv += ["--config", str(settings.config_path)]
    argv += ["run", str(settings.matrix)]
    for sid in scenarios:
        argv += ["--scenario", sid]
    return [*argv, "--prepare-only", "--report-dir", str(report_dir), "--wait", "0"]
