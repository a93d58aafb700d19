"""What a new user does first, exactly as they do it: no test extras, no source tree.

1. The quick start: a fresh checkout, `scripts/setup` (runtime dependencies only, as
   `scripts/demo` runs it), then `scripts/demo` on the virtual rig. It must end green.
2. The wheel: built from the tree, installed into a clean venv, run from an empty
   directory: the catalogue, a user's own matrix, `rig doctor` and one `rig run`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rig.config import VIRTUAL_CONFIG

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the virtual rig's cards are loop devices"),
]
TEST_EXTRAS = ("hypothesis", "aiosmtpd", "ruff", "pytest_timeout")


def _rig_yaml(where: Path) -> Path:
    """Devices on addresses of their own, state and reports under ``where``."""
    net = random.randrange(100, 250)
    devices = {
        name: {**dev, "host": f"127.{net}.1.{10 + i}"}
        for i, (name, dev) in enumerate(VIRTUAL_CONFIG["devices"].items(), start=1)
    }
    path = where / "rig.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "devices": devices,
                "paths": {"state": str(where / "state"), "reports": str(where / "reports")},
                "virtual": {},
            }
        )
    )
    return path


def _env(**extra: str) -> dict[str, str]:
    """The machine's environment, without this test run's venv leaking into the child."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    return {**env, **extra}


def _missing_test_extras(python: Path) -> list[str]:
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    )
    done = subprocess.run([str(python), "-c", probe, *TEST_EXTRAS], capture_output=True, text=True)
    return done.stdout.split()


def test_quick_start_demo_is_green_with_runtime_dependencies_only(tmp_path) -> None:
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        src = REPO / name.decode()
        dst = checkout / name.decode()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    config = _rig_yaml(tmp_path)
    report = tmp_path / "report"
    demo = subprocess.run(
        ["scripts/demo", "--report-dir", str(report)],
        cwd=checkout,
        env=_env(RIG_CONFIG=str(config)),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    said = demo.stdout[-4000:] + demo.stderr[-4000:]
    assert demo.returncode == 0, said
    assert "report.html" in demo.stdout, said
    # the venv the quick start made has none of the test tools
    assert _missing_test_extras(checkout / ".venv" / "bin" / "python") == []
    results = json.loads((report / "results.json").read_text())
    assert results["passed"] and {s["outcome"] for s in results["scenarios"]} == {"passed"}
    # the smoke check ran (in the sub-run that needs pytest, a runtime dependency now)
    assert list(report.glob("scenarios/*/smoke/junit.xml")), said


def test_the_wheel_works_outside_the_tree(tmp_path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("pi_release_rig-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr
    assert _missing_test_extras(venv / "bin" / "python") == []

    home = tmp_path / "empty"
    home.mkdir()
    config = _rig_yaml(tmp_path)

    def rig(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "rig"), "--config", str(config), *args],
            cwd=home,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    listed = rig("images", "list")
    assert listed.returncode == 0, listed.stderr
    assert "octopi-1.0.0" in listed.stdout and "octopi-1.1.0" in listed.stdout

    matrix = home / "my-release.json"
    matrix.write_text(
        json.dumps(
            {
                "release": {"version": "1.11.8", "channel": "stable"},
                "scenarios": [
                    {
                        "id": "stable-sees-nothing-newer",
                        "image": "octopi-1.1.0",
                        "octoprint": "1.11.8",
                        "channel": "stable",
                        "expect": "not-offered",
                        "checks": ["update-api"],
                    }
                ],
            }
        )
    )
    assert rig("matrix", "validate", str(matrix)).returncode == 0
    shown = rig("matrix", "show", str(matrix))
    assert shown.returncode == 0 and "--scenario stable-sees-nothing-newer" in shown.stdout
    doctor = rig("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "catalogue" in doctor.stdout and "FAIL" not in doctor.stdout

    report = tmp_path / "report"
    try:
        ran = rig("run", str(matrix), "--report-dir", str(report), timeout=1200)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert json.loads((report / "results.json").read_text())["passed"]
    finally:
        rig("twin", "down")
