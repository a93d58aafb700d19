"""Starting-state snapshots end to end on the virtual rig: kept, reused, refused.

One test, three runs of the same pinned scenario on one device (each run is a
minute or more here): the first starts from the image and keeps its prepared card;
the second starts from that snapshot (no first boot, no pin, a new host key, the
device's own hostname); a warm-up (``--prepare-only``) of another channel keeps a
snapshot of its own and stops; ``--no-snapshots`` starts from the image again.
"""

from __future__ import annotations

import json
from pathlib import Path

import paramiko
import pytest
from test_run_virtual import _matrix, _results, _rig, rig_yaml  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

SCENARIO = {
    "id": "pinned",
    "image": "octopi-1.0.0",
    "octoprint": "1.10.3",
    "channel": "maintenance",
    "checks": ["update"],
}


def _run(config: Path, matrix: Path, out: Path, *extra: str) -> dict:
    proc = _rig(config, "run", str(matrix), "--device", "pi3-a", "--report-dir", str(out), *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _results(out)["scenarios"][0]


def _log(out: Path) -> str:
    return "".join(f.read_text() for f in sorted((out / "scenarios").glob("**/scenario.log")))


def _known_key(config: Path) -> str:
    """The host key the rig knows for pi3-a (what it accepted, or wrote to the card)."""
    import os

    from rig.config import load_config

    dev = load_config(config).device("pi3-a")
    keys = paramiko.HostKeys(str(Path(os.environ["XDG_STATE_HOME"]) / "rig" / "known_hosts"))
    entry = keys.lookup(f"[{dev.host}]:{dev.ssh_port}" if dev.ssh_port != 22 else dev.host)
    assert entry is not None
    return next(iter(entry.values())).get_base64()


def _last_boot(tmp_path: Path) -> str:
    text = (tmp_path / "state" / "virtual" / "devices" / "pi3-a" / "console").read_text()
    return text[text.rfind("booting (power on)") :]


def test_a_prepared_card_is_kept_reused_with_fresh_identity_and_refused_when_told(
    rig_yaml,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = rig_yaml(run={"snapshots": True, "snapshot_cache": str(tmp_path / "snapshots")})
    matrix = _matrix(tmp_path, [SCENARIO])

    first = _run(config, matrix, tmp_path / "r1")
    key = first["snapshot"]["captured"]
    assert first["snapshot"]["used"] is None and key
    meta = json.loads((tmp_path / "snapshots" / key / "meta.json").read_text())
    assert meta["inputs"]["product"]["start_version"] == "1.10.3"
    phases = [p["phase"] for p in first["attempts"][-1]["phases"]]
    assert phases[:10] == [
        "to-host", "write", "provision", "to-dut", "boot", "prepare",
        "snapshot", "to-dut", "boot", "prepare",
    ]  # fmt: skip
    log1 = _log(tmp_path / "r1")
    assert "pin OctoPrint 1.10.3" in log1
    assert "expanded" in (tmp_path / "state/virtual/devices/pi3-a/console").read_text()
    key1 = _known_key(config)  # accepted on first contact, after the first boot made it

    second = _run(config, matrix, tmp_path / "r2")
    assert second["snapshot"] == {"used": key, "captured": None}
    assert second["outcome"] == "passed" and second["facts"]["start_version"] == "1.10.3"
    log2 = _log(tmp_path / "r2")
    assert "pin OctoPrint" not in log2 and "no pin" in log2
    assert "hostname pi3-a" in log2
    # the root has its hostname: no octopi-hostname.txt, whose change_hostname would reboot
    assert "no octopi-hostname.txt" in log2
    phases = [p["phase"] for p in second["attempts"][-1]["phases"]]
    assert "snapshot" not in phases and phases.count("boot") == 1
    html = (tmp_path / "r2" / "report.html").read_text()
    assert f"from snapshot {key[:12]}" in html
    # the card said first boot was done: no resize, no init= (the console of the boot)
    assert "expanded" not in _last_boot(tmp_path) and "init=" not in _last_boot(tmp_path)
    # the rig wrote a new host key to the card, knew it, and the device presented it
    written = second["facts"]["write"]["identity"]
    key2 = _known_key(config)
    assert key2 != key1 and any(key2 in line for line in written["host_keys"])

    # another channel is another starting state: not this snapshot. A warm-up
    # (--prepare-only, as the daemon runs it while CI builds) keeps its own and stops there
    (tmp_path / "next").mkdir()
    other = _matrix(tmp_path / "next", [{**SCENARIO, "channel": "next"}])
    third = _run(config, other, tmp_path / "r3", "--prepare-only")
    assert third["snapshot"]["used"] is None
    assert third["snapshot"]["captured"] not in (None, key)
    phases = [p["phase"] for p in third["attempts"][-1]["phases"]]
    assert phases[-3:] == ["prepare", "snapshot", "power-off"], phases
    assert "pin OctoPrint 1.10.3" in _log(tmp_path / "r3")

    fourth = _run(config, matrix, tmp_path / "r4", "--no-snapshots", "--prepare-only")
    assert fourth["snapshot"] == {"used": None, "captured": None}
    assert "pin OctoPrint 1.10.3" in _log(tmp_path / "r4")
