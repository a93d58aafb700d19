"""`rig run` end to end on the virtual rig: the production path, no stand-ins.

Power, mux, writer, provisioning, boot, the OctoPrint profile and the report all
run for real against three virtual Pi 3s running the real OctoPrint.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from rig.config import VIRTUAL_CONFIG, load_config
from rig.orchestration import eventlog
from rig.orchestration.leases import Leases

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def rig_yaml(tmp_path):
    """A virtual rig of its own: state, reports and twin under tmp_path."""
    configs = []

    def make(virtual: dict | None = None, run: dict | None = None) -> Path:
        # addresses of their own, so no other virtual rig on this machine can answer
        net = random.randrange(100, 250)
        devices = {
            name: {**dev, "host": f"127.{net}.0.{10 + i}"}
            for i, (name, dev) in enumerate(VIRTUAL_CONFIG["devices"].items(), start=1)
        }
        data = {
            "devices": devices,
            "paths": {"state": str(tmp_path / "state"), "reports": str(tmp_path / "reports")},
            "virtual": virtual or {},
        }
        # starting-state snapshots only where a test asks for them: a run here must start
        # from the image whatever another test kept (test_snapshots_virtual tests them)
        data["run"] = {"snapshots": False, **(run or {})}
        path = tmp_path / "rig.yaml"
        path.write_text(yaml.safe_dump(data))
        configs.append(path)
        return path

    yield make
    from rig.virtual.hw.state import cleanup
    from rig.virtual.twin import stop_twin

    for path in configs:
        config = load_config(path)
        stop_twin(config)
        cleanup(config.paths.state / "virtual")


def _matrix(tmp_path: Path, scenarios: list[dict], release: dict | None = None) -> Path:
    data = {
        "release": release
        or {"version": "1.11.8", "channel": "maintenance", "pip": "OctoPrint=={target_version}"},
        "scenarios": scenarios,
    }
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(data))
    return path


def _rig(
    config: Path, *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rig", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _results(report_dir: Path) -> dict:
    return json.loads((report_dir / "results.json").read_text())


def test_demo_matrix_passes_on_three_devices_in_parallel(rig_yaml, tmp_path) -> None:
    config = rig_yaml()
    out = tmp_path / "report"
    proc = _rig(config, "run", str(REPO / "matrix" / "demo.json"), "--report-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = _results(out)
    assert data["passed"] and data["outcome"] == "passed"
    assert {s["outcome"] for s in data["scenarios"]} == {"passed"}
    # every device took a scenario (an infrastructure error may have moved one elsewhere)
    devices = {a["device"] for s in data["scenarios"] for a in s["attempts"]}
    assert devices == {"pi3-a", "pi3-b", "pi3-c"}
    # the scenarios overlapped in time: parallel, not one after the other
    spans = [
        (
            min(p["start"] for a in s["attempts"] for p in a["phases"]),
            max(p["end"] for a in s["attempts"] for p in a["phases"]),
        )
        for s in data["scenarios"]
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    # the updated devices really run the release now
    for s in data["scenarios"]:
        phases = [p["phase"] for p in s["attempts"][-1]["phases"]]
        assert phases[:6] == ["to-host", "write", "provision", "to-dut", "boot", "prepare"]
        if s["expect"] == "updated":
            assert "verify" in phases
    # the virtual 0.18.0 runs Bullseye's Python 3.9, the real one ships 3.7: marked, not hidden
    marks = {s["image"]: s["representative"] for s in data["scenarios"]}
    assert "3.7" in marks["octopi-0.18.0"] and "3.9" in marks["octopi-0.18.0"]
    assert marks["octopi-1.0.0"] == marks["octopi-1.1.0"] == ""
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0" and suite.get("errors") == "0"
    html = (out / "report.html").read_text()
    assert "<svg" in html and "rig run" in html
    for s in data["scenarios"]:
        assert f"--scenario {s['id']}" in html
    assert "report.html" in proc.stdout
    # the event log holds every phase the pipeline recorded, and the timeline is drawn from it
    logged = eventlog.fold_file(out / "events.jsonl")
    recorded = [
        (s["id"], p["device"], p["phase"], p["outcome"])
        for s in data["scenarios"]
        for a in s["attempts"]
        for p in a["phases"]
    ]
    assert sorted((p.scenario, p.device, p.phase, p.outcome) for p in logged.spans) == sorted(
        recorded
    )
    assert html.count("<rect ") == len(recorded)
    for s in data["scenarios"]:
        # a retried scenario's later attempts log into attempt-N/scenario.log
        logs = sorted((out / "scenarios" / s["id"]).glob("**/scenario.log"))
        assert len(logs) == len(s["attempts"])
        log = "".join(f.read_text() for f in logs)
        assert all(f"[{p}]" in log for p in logged.phases_of(s["id"]))


def test_wrong_expectation_is_a_product_failure_not_retried(rig_yaml, tmp_path) -> None:
    config = rig_yaml()
    matrix = _matrix(
        tmp_path,
        [
            {
                "id": "wrongly-expects-nothing",
                "image": "octopi-1.1.0",
                "channel": "maintenance",
                "expect": "not-offered",
                "checks": ["update-api"],
            }
        ],
    )
    out = tmp_path / "report"
    summary = tmp_path / "step_summary"  # as GitHub Actions passes it to each step
    proc = _rig(
        config,
        "run",
        str(matrix),
        "--report-dir",
        str(out),
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = _results(out)["scenarios"][0]
    assert s["outcome"] == "failed"
    assert len(s["attempts"]) == 1  # product failures are never retried
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == "1" and suite.get("errors") == "0"
    failure = suite.find("testsuite/testcase/failure")
    assert failure.get("type") == "product-failure" and failure.get("message") == s["message"]
    text = summary.read_text()
    assert "### ❌ rig: release 1.11.8 (maintenance) failed" in text
    assert "| `wrongly-expects-nothing` | ❌ failed | pi3-" in text
    assert "--scenario wrongly-expects-nothing" in text and str(out / "report.html") in text


def test_device_that_never_boots_is_retried_elsewhere_then_an_error(rig_yaml, tmp_path) -> None:
    config = rig_yaml(
        virtual={"faults": {"pi3-a": {"never_boots": True}, "pi3-b": {"never_boots": True}}},
        run={"timeouts": {"boot": 6}},
    )
    matrix = _matrix(
        tmp_path,
        [
            {
                "id": "no-boot",
                "image": "octopi-0.18.0",
                "channel": "stable",
                "expect": "not-offered",
                "checks": ["update-api"],
            }
        ],
    )
    out = tmp_path / "report"
    proc = _rig(
        config,
        "run",
        str(matrix),
        "--device",
        "pi3-a",
        "--device",
        "pi3-b",
        "--report-dir",
        str(out),
    )
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = _results(out)["scenarios"][0]
    assert s["outcome"] == "error"
    assert sorted(a["device"] for a in s["attempts"]) == ["pi3-a", "pi3-b"]
    assert all("not reachable" in a["message"] for a in s["attempts"])
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    assert suite.find("testsuite/testcase/error").get("type") == "infrastructure-error"


def _wait_for_phase(
    report: Path, scenario: str, phase: str, proc: subprocess.Popen, timeout: float = 300
) -> None:
    log = report / "scenarios" / scenario / "scenario.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and f"[{phase}]" in log.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{scenario} never reached {phase}")


def _state(config_path: Path):
    from rig.root import Rig

    config = load_config(config_path)
    leases = Leases(config.paths.state, holder="observer")
    try:
        return {
            name: (Rig.from_config(config).power(name).state(), leases.holder_of(name))
            for name in config.devices
        }
    finally:
        leases.close()


def _long_run_in_background(config: Path, tmp_path: Path, out: Path) -> subprocess.Popen:
    """`rig run` of one long scenario (a pin, then an update) on pi3-a, not waited for."""
    matrix = _matrix(
        tmp_path,
        [
            {
                "id": "long",
                "image": "octopi-1.0.0",
                "octoprint": "1.10.3",
                "channel": "maintenance",
                "checks": ["update-api"],
            },
        ],
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rig",
            "--config",
            str(config),
            "run",
            str(matrix),
            "--device",
            "pi3-a",
            "--report-dir",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_run_leaves_devices_free_and_the_next_run_proceeds(rig_yaml, tmp_path, sig) -> None:
    config = rig_yaml()
    out = tmp_path / "killed"
    proc = _long_run_in_background(config, tmp_path, out)
    try:
        _wait_for_phase(out, "long", "prepare", proc)
        proc.send_signal(sig)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 3, stdout[-3000:]
        data = _results(out)  # a partial report
        assert data["outcome"] == "interrupted"
        assert data["scenarios"][0]["outcome"] == "interrupted"
        powered, lease = _state(config)["pi3-a"]
        assert powered is False and lease is None
    else:
        powered, lease = _state(config)["pi3-a"]
        assert lease is None  # its holder is dead: the lease is free
    # the next run takes the same device and finishes
    quick = _matrix(
        tmp_path,
        [
            {
                "id": "quick",
                "image": "octopi-0.18.0",
                "channel": "stable",
                "expect": "not-offered",
                "checks": ["update-api"],
            }
        ],
    )
    nxt = _rig(
        config, "run", str(quick), "--device", "pi3-a", "--report-dir", str(tmp_path / "next")
    )
    assert nxt.returncode == 0, nxt.stdout[-3000:] + nxt.stderr[-3000:]
    powered, lease = _state(config)["pi3-a"]
    assert powered is False and lease is None
    assert os.path.exists(tmp_path / "next" / "report.html")


def test_a_run_that_loses_its_lease_cancels_itself_and_leaves_the_device_alone(
    rig_yaml, tmp_path
) -> None:
    """Someone else's lease replaces the run's (an operator's takeover on another flash host):
    the heartbeat notices, the run stops with exit 3 and says why, and it does not power off
    the device it no longer holds."""
    import sqlite3
    import time

    config = rig_yaml()
    out = tmp_path / "lost"
    proc = _long_run_in_background(config, tmp_path, out)
    try:
        _wait_for_phase(out, "long", "prepare", proc)
        state = load_config(config).paths.state
        db = sqlite3.connect(state / "rig.db", timeout=30)  # the state store (rig/state.py)
        with db:
            db.execute(
                "UPDATE leases SET holder='thief', pid=1, host='other-flash-host', "
                "purpose='taken over', expires=? WHERE device='pi3-a'",
                (time.time() + 3600,),
            )
        db.close()
        stdout, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stdout[-3000:]
    assert "lease on pi3-a lost" in stdout
    data = _results(out)
    assert data["outcome"] == "interrupted"
    assert "lease on pi3-a lost" in data["scenarios"][0]["message"]
    powered, lease = _state(config)["pi3-a"]
    assert lease is not None and lease.holder == "thief"  # still the thief's
    assert powered is True  # the run did not switch off a device it no longer held


def test_a_configured_serial_console_is_captured_into_the_results(rig_yaml, tmp_path) -> None:
    """rig.yaml wires a serial adapter (here a pty, the same tty layer) to pi3-a: what the
    device prints there during the scenario is in its results, even when it never boots
    far enough for SSH, which is when a console matters most."""
    config = rig_yaml(
        virtual={"faults": {"pi3-a": {"never_boots": True}}}, run={"timeouts": {"boot": 6}}
    )
    master, slave = os.openpty()
    data = yaml.safe_load(config.read_text())
    for i, dev in enumerate(data["devices"].values(), start=1):
        dev["host"] = f"127.87.1.{10 + i}"
    data["devices"]["pi3-a"]["console"] = {"port": os.ttyname(slave), "baud": 115200}
    data["provision"] = {"config_txt": ["enable_uart=1"]}
    config.write_text(yaml.safe_dump(data))
    matrix = _matrix(
        tmp_path,
        [{"id": "console", "image": "octopi-1.1.0", "channel": "stable", "checks": ["update-api"]}],
    )
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "rig", "--config", str(config), "run", str(matrix)),
            *("--device", "pi3-a", "--report-dir", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_phase(out, "console", "boot", proc)
        os.write(master, b"[    2.345678] mmc0: new high speed SDHC card\r\nkernel panic")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 3, stdout[-2000:] + stderr[-2000:]
    log = out / "scenarios" / "console" / "console.log"
    assert b"mmc0: new high speed SDHC card\r\nkernel panic" in log.read_bytes()
    files = _results(out)["scenarios"][0]["files"]
    assert "scenarios/console/console.log" in files


def test_the_virtual_pi_console_is_captured_like_a_serial_adapter(rig_yaml, tmp_path) -> None:
    """The virtual Pi prints its boot to a console file (its "UART"); rig.yaml names it as
    pi3-a's console port and the scenario's console.log has this boot's lines only."""
    config = rig_yaml(
        virtual={"faults": {"pi3-a": {"never_boots": True}}}, run={"timeouts": {"boot": 6}}
    )
    data = yaml.safe_load(config.read_text())
    for i, dev in enumerate(data["devices"].values(), start=1):
        dev["host"] = f"127.87.2.{10 + i}"
    state = Path(data["paths"]["state"])
    port = state / "virtual" / "devices" / "pi3-a" / "console"
    port.parent.mkdir(parents=True)
    port.write_text("[   1.000] an older boot's line\r\n")
    data["devices"]["pi3-a"]["console"] = {"port": str(port)}
    data["provision"] = {"config_txt": ["enable_uart=1"]}
    config.write_text(yaml.safe_dump(data))
    matrix = _matrix(
        tmp_path,
        [
            {
                "id": "vconsole",
                "image": "octopi-1.1.0",
                "channel": "stable",
                "checks": ["update-api"],
            }
        ],
    )
    out = tmp_path / "report"
    proc = _rig(config, "run", str(matrix), "--device", "pi3-a", "--report-dir", str(out))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (out / "scenarios" / "vconsole" / "console.log").read_text()
    assert "booting (power on)" in text and "never boots (configured fault)" in text
    assert "an older boot's line" not in text
