"""The report files CI reads: junit.xml as the common reporters parse it, the step summary.

The JUnit checks follow what dorny/test-reporter (java-junit parser), mikepenz/
action-junit-report (testParser.ts) and EnricoMi/publish-unit-test-result-action
(publish/junit.py) read: a `testsuites` or `testsuite` root, `classname` split on
its last dot, `file`/`line` for the annotation, `type` printed before the message.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rig.cli import main
from rig.orchestration.report import (
    RunReport,
    ScenarioReport,
    append_step_summary,
    summary_markdown,
    write_report,
)

MATRIX = {
    "release": {"version": "1.11.0rc3", "channel": "maintenance"},
    "scenarios": [
        {"id": "octopi-1.0.0-stable", "image": "octopi-1.0.0", "channel": "maintenance"},
        {"id": "octopi-1.1.0-devel", "image": "octopi-1.1.0", "channel": "maintenance"},
        {"id": "no.boot", "image": "octopi-0.18.0", "channel": "maintenance"},
        {"id": "left-out", "image": "octopi-0.18.0", "channel": "maintenance"},
    ],
}


def _scenario(sid: str, outcome: str, message: str = "") -> ScenarioReport:
    return ScenarioReport(
        id=sid,
        description="",
        image="octopi-1.0.0",
        channel="maintenance",
        start_version="1.10.3",
        expect="updated",
        checks=["update"],
        outcome=outcome,
        message=message,
        device="pi3-a",
        duration=12.5,
        command=f"rig run matrix/rc.json --scenario {sid}",
    )


def _report(tmp_path: Path, outcomes: list[tuple[str, str]]) -> RunReport:
    matrix = tmp_path / "rc.1.json"
    matrix.write_text(json.dumps(MATRIX, indent=2))
    scenarios = [
        _scenario(s["id"], outcome, message)
        for s, (outcome, message) in zip(MATRIX["scenarios"], outcomes, strict=False)
    ]
    return RunReport(
        run_id="20261201-120000-abcdef",
        matrix=str(matrix),
        release=MATRIX["release"],
        command="rig run rc.1.json",
        started=1_764_590_400.0,
        finished=1_764_590_520.0,
        outcome="failed",
        exit_code=1,
        devices=["pi3-a", "pi3-b"],
        scenarios=scenarios,
    )


OUTCOMES = [
    ("passed", ""),
    ("failed", "update: 1.11.0rc3 not offered | channel maintenance"),
    ("error", "boot: \x1b[31mpi3-a not reachable\x1b[0m over SSH \x07"),
    ("not-run", "not started"),
]


def test_junit_has_the_shape_reporters_read(tmp_path: Path) -> None:
    report = _report(tmp_path, OUTCOMES)
    write_report(report, tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()  # ANSI/BEL did not break it
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "4",
        "1",
        "1",
        "1",
    )
    (suite,) = root.findall("testsuite")
    assert suite.get("hostname") == socket.gethostname()
    assert suite.get("timestamp") == "2025-12-01T12:00:00" and suite.get("time") == "120.000"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["release"] == "1.11.0rc3" and props["channel"] == "maintenance"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == [s["id"] for s in MATRIX["scenarios"]]
    for case in cases.values():
        classname = case.get("classname")
        # mikepenz: className.split('.').slice(-1)[0] is the "file"; a dot would cut it
        assert classname == "rc-1" and classname.split(".")[-1] == classname
        assert case.get("file") == report.matrix
    # the annotation lands on the scenario's id in the matrix
    lines = Path(report.matrix).read_text().splitlines()
    for sid, case in cases.items():
        assert f'"id": "{sid}"' in lines[int(case.get("line")) - 1]
    assert cases["octopi-1.0.0-stable"].find("failure") is None
    failure = cases["octopi-1.1.0-devel"].find("failure")
    assert failure.get("type") == "product-failure"
    assert failure.get("message") == OUTCOMES[1][1] and failure.text == OUTCOMES[1][1]
    error = cases["no.boot"].find("error")
    assert error.get("type") == "infrastructure-error"
    assert error.get("message") == "boot: pi3-a not reachable over SSH \ufffd"
    assert cases["left-out"].find("skipped").get("message") == "not started"
    assert "re-run: rig run matrix/rc.json --scenario no.boot" in (
        cases["no.boot"].find("system-out").text
    )


def test_an_interrupted_scenario_is_an_error_of_its_own_type(tmp_path: Path) -> None:
    report = _report(tmp_path, [("interrupted", "")])
    write_report(report, tmp_path / "out")
    case = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite/testcase")
    error = case.find("error")
    assert error.get("type") == "interrupted"
    assert error.get("message") == "interrupted"  # never an empty message


def test_junit_without_a_readable_matrix_still_names_the_file(tmp_path: Path) -> None:
    report = _report(tmp_path, OUTCOMES)
    Path(report.matrix).unlink()
    write_report(report, tmp_path / "out")
    case = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite/testcase")
    assert case.get("file") == report.matrix and case.get("line") is None


def test_step_summary_is_appended_and_escaped(tmp_path: Path) -> None:
    report = _report(tmp_path, OUTCOMES)
    summary = tmp_path / "step_summary.md"
    summary.write_text("## an earlier step, no newline at its end")
    append_step_summary(report, summary, tmp_path / "out" / "report.html")
    text = summary.read_text()
    assert text.startswith("## an earlier step, no newline at its end\n\n### ❌ rig: release ")
    assert "release 1.11.0rc3 (maintenance) failed\n" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 4
    # the message's "|" does not open a sixth column
    assert all(len(row.replace("\\|", "").split("|")) == 7 for row in rows)
    assert "❌ failed" in rows[1] and "not offered \\| channel" in rows[1]
    assert "\x1b" not in text and "\x07" not in text and "pi3-a not reachable over SSH |" in text
    # what did not pass can be re-run from the summary
    assert "rig run matrix/rc.json --scenario octopi-1.1.0-devel" in text
    assert "--scenario octopi-1.0.0-stable" not in text
    assert f"Report: `{tmp_path / 'out' / 'report.html'}`" in text
    append_step_summary(report, summary, tmp_path / "out" / "report.html")
    assert summary.read_text().count("### ❌ rig:") == 2  # appended, never overwritten


def test_step_summary_html_in_a_message_is_shown_not_rendered(tmp_path: Path) -> None:
    report = _report(tmp_path, [("failed", "<img src=x onerror=alert(1)> *bold* [link](x)")])
    row = next(line for line in summary_markdown(report).splitlines() if "failed |" in line)
    assert "<img" not in row and "&lt;img" in row
    assert "\\*bold\\*" in row and "\\[link\\](x)" in row


def test_step_summary_stays_under_githubs_limit(tmp_path: Path, monkeypatch) -> None:
    from rig.orchestration import report as report_module

    monkeypatch.setattr(report_module, "STEP_SUMMARY_LIMIT", 2_000)
    report = _report(tmp_path, [])
    report.scenarios = [_scenario(f"s-{i}", "failed", "x" * 300) for i in range(50)]
    text = summary_markdown(report)
    assert len(text.encode()) < 2_000 + 4_000  # rows cut; the re-run block stays whole
    assert "more in results.json" in text


@pytest.fixture
def rig_yaml(tmp_path: Path) -> Path:
    cfg = tmp_path / "rig.yaml"
    cfg.write_text(
        f"paths:\n  state: {tmp_path / 'state'}\n  reports: {tmp_path / 'reports'}\n"
        "virtual:\n  card_size: 8388608\n"
    )
    return cfg


def _candidate_matrix(tmp_path: Path) -> Path:
    """A scenario on @candidate: without --candidate the run stops before any device."""
    matrix = tmp_path / "acceptance.json"
    release = {"version": "1.11.0", "channel": "stable"}
    scenarios = [{"id": "candidate-fresh", "image": "@candidate"}]
    matrix.write_text(json.dumps({"release": release, "scenarios": scenarios}))
    return matrix


def test_rig_run_appends_a_summary_even_when_the_run_cannot_start(
    rig_yaml: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """@candidate without --candidate: exit 2, yet junit.xml and the summary say so."""
    matrix = _candidate_matrix(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "report"
    code = main(["--config", str(rig_yaml), "run", str(matrix), "--report-dir", str(out)])
    assert code == 2
    assert "no --candidate IMAGE" in capsys.readouterr().err
    text = summary.read_text()
    assert "| `candidate-fresh` | ⏭️ not-run |" in text
    assert f"Report: `{out / 'report.html'}`" in text
    case = ET.parse(out / "junit.xml").getroot().find("testsuite/testcase")
    assert case.get("classname") == "acceptance" and case.find("skipped") is not None


@pytest.mark.parametrize("where", ["", "missing/dir/summary.md"], ids=["empty", "unwritable"])
def test_rig_run_without_a_usable_summary_file_still_reports(
    rig_yaml: Path, tmp_path: Path, monkeypatch, capsys, where: str
) -> None:
    matrix = _candidate_matrix(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", where and str(tmp_path / where))
    out = tmp_path / "report"
    assert main(["--config", str(rig_yaml), "run", str(matrix), "--report-dir", str(out)]) == 2
    said = capsys.readouterr().err
    assert ("warning: could not append the run summary to" in said) == bool(where), said
    assert (out / "junit.xml").exists() and (out / "results.json").exists()
