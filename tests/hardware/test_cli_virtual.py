"""rig power / mux / devices / doctor and the to_host / to_dut sequences on the virtual rig."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.cli import main
from rig.config import load_config
from rig.events import EventBus, StepLog
from rig.hardware.sequences import to_dut, to_host
from rig.orchestration import results
from rig.orchestration.devices import devices_view
from rig.orchestration.report import RunReport, ScenarioReport
from rig.root import Rig
from rig.virtual.hw import VirtualHardware, cleanup


@pytest.fixture
def rig_yaml(tmp_path: Path) -> Iterator[Path]:
    """A config with no devices = the virtual rig, its state in tmp_path."""
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(f"paths:\n  state: {tmp_path / 'state'}\nvirtual:\n  card_size: 8388608\n")
    yield cfg
    cleanup(tmp_path / "state" / "virtual")


def state(rig_yaml: Path) -> VirtualHardware:
    return VirtualHardware(rig_yaml.parent / "state" / "virtual", use_loop=False)


def test_power_on_off_status(rig_yaml: Path, capsys) -> None:
    assert main(["--config", str(rig_yaml), "power", "pi3-b", "on"]) == 0
    assert capsys.readouterr().out.strip() == "pi3-b: power on"
    assert state(rig_yaml).port_power("1-1", 2) is True
    assert state(rig_yaml).port_power("1-1", 1) is False
    assert main(["--config", str(rig_yaml), "power", "pi3-b", "off"]) == 0
    assert state(rig_yaml).port_power("1-1", 2) is False
    assert main(["--config", str(rig_yaml), "power", "pi3-b", "status"]) == 0
    assert capsys.readouterr().out.strip().endswith("pi3-b: power off")


def test_mux_host_dut_status(rig_yaml: Path, capsys) -> None:
    assert main(["--config", str(rig_yaml), "mux", "pi3-c", "host"]) == 0
    out = capsys.readouterr().out
    disk = state(rig_yaml).host_disk("000000000043")
    assert disk is not None and str(disk) in out and "cid:1b-SM-RIGV0-" in out
    assert main(["--config", str(rig_yaml), "mux", "pi3-c", "dut"]) == 0
    assert capsys.readouterr().out.strip() == "pi3-c: card on dut"
    assert state(rig_yaml).host_disk("000000000043") is None


def test_a_card_of_another_size_is_that_size_on_the_host_and_another_snapshot_key(
    tmp_path: Path, capsys
) -> None:
    """Cards sold as one size differ in bytes from model to model: the virtual rig can
    have one card of another size, the host sees that size, and the snapshot key of a card
    differs with it (a snapshot is as big as the card it was taken from)."""
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(
        f"paths:\n  state: {tmp_path / 'state'}\n"
        "virtual:\n  card_size: 8388608\n  card_sizes: {pi3-b: 6291456}\n"
    )
    try:
        disks = {}
        for name in ("pi3-a", "pi3-b"):
            assert main(["--config", str(cfg), "mux", name, "host"]) == 0
            serial = load_config(cfg).device(name).mux.serial
            disk = state(cfg).host_disk(serial)
            assert disk is not None
            with open(disk, "rb") as f:
                disks[name] = (disk, f.seek(0, os.SEEK_END))
        assert disks["pi3-a"][1] == 8 << 20 and disks["pi3-b"][1] == 6 << 20
        image = tmp_path / "octopi.img"
        image.write_bytes(b"image")
        rig = Rig(load_config(cfg), backend=None)  # type: ignore[arg-type]
        keys = {
            name: rig.snapshots(name, image, mux=object()).key({"x": 1}, disk)[1]  # type: ignore[arg-type]
            for name, (disk, _) in disks.items()
        }
        assert keys["pi3-a"]["card_bytes"] == 8 << 20 and keys["pi3-b"]["card_bytes"] == 6 << 20
    finally:
        cleanup(tmp_path / "state" / "virtual")


def test_unknown_device_is_a_usage_error(rig_yaml: Path, capsys) -> None:
    assert main(["--config", str(rig_yaml), "power", "pi3-z", "on"]) == 2
    assert "no device 'pi3-z'" in capsys.readouterr().err


def test_devices_table(rig_yaml: Path, capsys) -> None:
    main(["--config", str(rig_yaml), "power", "pi3-a", "on"])
    main(["--config", str(rig_yaml), "mux", "pi3-b", "host"])
    capsys.readouterr()
    assert main(["--config", str(rig_yaml), "devices"]) == 0
    lines = {
        line.split("│")[1].strip(): line
        for line in capsys.readouterr().out.splitlines()
        if line.count("│") > 4
    }
    assert "on" in lines["pi3-a"].split("│")[2]
    assert "host" in lines["pi3-b"].split("│")[3] and "cid:" in lines["pi3-b"]
    assert "off" in lines["pi3-c"].split("│")[2]


DEVICE_KEYS = {
    "name",
    "model",
    "power",
    "mux",
    "card",
    "disk",
    "health",
    "quarantine_reason",
    "infra_failures",
    "lease",
    "last_result",
    "last_run",
    "errors",
}


def _run(run_id: str, finished: float, device: str) -> RunReport:
    scenario = ScenarioReport(
        "octopi-1.1.0-devel",
        "",
        "octopi-1.1.0",
        "stable",
        None,
        "updated",
        [],
        "passed",
        "",
        device,
        60.0,
        "",
    )
    return RunReport(
        run_id,
        "m.json",
        {"version": "1.11.0"},
        "",
        finished - 60,
        finished,
        "passed",
        0,
        [device],
        [scenario],
    )


def _devices_json(config: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["--config", str(config), "devices", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_devices_json_has_the_documented_keys_and_the_tables_facts(rig_yaml: Path, capsys) -> None:
    from rig.orchestration.leases import Leases

    main(["--config", str(rig_yaml), "power", "pi3-a", "on"])
    main(["--config", str(rig_yaml), "mux", "pi3-b", "host"])
    leases = Leases(rig_yaml.parent / "state", holder="a-test")
    try:
        assert leases.acquire("pi3-a", purpose="rig run demo.json")
        leases.record("pi3-c", "error", "no-boot", "not reachable")
        leases.record("pi3-c", "error", "no-boot", "not reachable")
        leases.record("pi3-b", "passed", "octopi-1.1.0-devel")
        results.store(rig_yaml.parent / "state", _run("r1", 100.0, "pi3-b"), Path("/r1.html"))
        results.store(rig_yaml.parent / "state", _run("r2", 200.0, "pi3-b"), Path("/r2.html"))
        data = _devices_json(rig_yaml, capsys)
    finally:
        leases.close()
    assert data["version"] == 1 and data["virtual"] is True and data["config"] == str(rig_yaml)
    devices = {d["name"]: d for d in data["devices"]}
    assert list(devices) == ["pi3-a", "pi3-b", "pi3-c"]
    assert all(set(d) == DEVICE_KEYS for d in devices.values())
    a, b, c = devices["pi3-a"], devices["pi3-b"], devices["pi3-c"]
    assert (a["power"], a["mux"], a["card"], a["disk"]) == ("on", "off", None, None)
    assert a["lease"] == {
        "purpose": "rig run demo.json",
        "pid": os.getpid(),
        "host": a["lease"]["host"],
    }
    assert b["mux"] == "host" and b["card"].startswith("cid:")
    assert b["disk"] == str(state(rig_yaml).host_disk("000000000042"))
    assert b["last_result"] == {"outcome": "passed", "scenario": "octopi-1.1.0-devel"}
    assert b["last_run"] == {
        "run": "r2",
        "scenario": "octopi-1.1.0-devel",
        "outcome": "passed",
        "finished": 200.0,
        "report": "/r2.html",
    }
    assert a["last_run"] is None
    assert c["health"] == "quarantined" and "not reachable" in c["quarantine_reason"]
    assert c["infra_failures"] == 2 and c["lease"] is None
    assert all(d["errors"] == {} for d in devices.values())


def test_devices_json_says_which_field_failed_and_why(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(
        f"""devices:
  bench:
    power: {{driver: command, on: "true", off: "true", status: "exit 4"}}
    mux: {{driver: usb-sd-mux, serial: "000000000099"}}
    host: 127.84.0.10
paths: {{state: {tmp_path / "state"}}}
"""
    )
    (bench,) = _devices_json(cfg, capsys)["devices"]
    assert bench["power"] is None and bench["errors"]["power"].endswith("(exit 4): exit 4")
    assert bench["mux"] is None and "000000000099" in bench["errors"]["mux"]
    assert bench["health"] == "ok" and bench["lease"] is None
    # the table shows the same failure, in the power column
    assert main(["--config", str(cfg), "devices"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "bench" in line)
    assert "error" in row.split("│")[2]
    # without hardware (the dashboard on real devices): no driver asked, nothing failed
    (quiet,) = devices_view(load_config(cfg), None)
    assert (quiet["power"], quiet["mux"], quiet["errors"]) == (None, None, {})
    assert quiet["health"] == "ok"


def test_doctor_on_the_virtual_rig(rig_yaml: Path, capsys) -> None:
    code = main(["--config", str(rig_yaml), "doctor"])
    out = capsys.readouterr().out
    assert "hub        1-1" in out
    assert "per-port power switching, paired with 2-1 (same Container ID and port path" in out
    assert "3-1" in out and "ganged" in out
    assert "pi3-a" in out
    system_ok = "FAIL" not in out
    assert code == (0 if system_ok else 3)


def test_sequences_log_each_step(rig_yaml: Path) -> None:
    config = load_config(rig_yaml)
    power, mux = Rig.from_config(config).power("pi3-a"), Rig.from_config(config).mux("pi3-a")
    bus = EventBus()
    lines: list[str] = []
    bus.subscribe(lambda e: lines.append(e.message))
    log = StepLog(bus, device="pi3-a")
    power.on()
    disk = to_host(power, mux, log, disk_timeout=2)
    assert disk == state(rig_yaml).host_disk("000000000041")
    assert state(rig_yaml).port_power("1-1", 1) is False
    to_dut(power, mux, log)
    assert state(rig_yaml).mux_side("000000000041") == "dut"
    assert state(rig_yaml).port_power("1-1", 1) is True
    done = [m for m in lines if " done in " in m]
    assert [m.split(" done in ")[0] for m in done] == [
        "power off",
        "mux to host",
        "wait for the card's disk",
        "mux to dut",
        "power on",
    ]


def test_doctor_fails_when_a_device_sits_on_a_ganged_hub(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(
        f"paths:\n  state: {tmp_path / 'state'}\n"
        "virtual: {}\n"
        "devices:\n"
        "  pi3-x:\n"
        "    power: {driver: usb-hub, location: '3-1', port: 1}\n"
        "    mux: {driver: usb-sd-mux, serial: '000000000041'}\n"
    )
    try:
        assert main(["--config", str(cfg), "doctor"]) == 3
        out = capsys.readouterr().out
        assert "FAIL device     pi3-x power" in out and "ganged" in out
        assert "fix: use a hub with per-port power switching" in out
        assert main(["--config", str(cfg), "power", "pi3-x", "off"]) == 2
    finally:
        cleanup(tmp_path / "state" / "virtual")


def test_mux_warns_when_the_dut_is_powered(rig_yaml: Path, capsys) -> None:
    main(["--config", str(rig_yaml), "power", "pi3-a", "on"])
    assert main(["--config", str(rig_yaml), "mux", "pi3-a", "dut"]) == 0
    assert "pi3-a is powered" in capsys.readouterr().err
    main(["--config", str(rig_yaml), "power", "pi3-a", "off"])
    assert main(["--config", str(rig_yaml), "mux", "pi3-a", "dut"]) == 0
    assert "powered" not in capsys.readouterr().err


def test_doctor_power_test_needs_a_dut_that_answers_first(rig_yaml: Path, capsys) -> None:
    code = main(["--config", str(rig_yaml), "doctor", "--power-test", "pi3-b"])
    out = capsys.readouterr().out
    assert code == 3
    assert "pi3-b power" in out and "does not answer before the test" in out
