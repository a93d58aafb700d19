"""A scenario on a device whose Python is not the real image's is marked, never passed silently:
in the terminal table's data, results.json, junit.xml, the step summary and report.html."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

from test_report_ci import OUTCOMES, _report

from rig.orchestration.report import summary_markdown, write_report
from rig.orchestration.representative import not_representative


def test_python_of_the_device_against_the_real_image() -> None:
    why = not_representative("3.7", {"system_python_version": "3.9.2", "python_version": "3.9.2"})
    assert why == (
        "not representative: the device runs Python 3.9, the real image ships Python 3.7"
    )
    assert not_representative("3.9", {"system_python_version": "3.9.2"}) == ""
    assert not_representative("3.11", {"python_version": "3.11.2"}) == ""  # venv only: still read
    # nothing known (the scenario never reached the device, or no catalogue Python): no claim
    assert not_representative("3.7", {}) == ""
    assert not_representative(None, {"system_python_version": "3.9.2"}) == ""


def test_every_report_file_marks_a_not_representative_scenario(tmp_path: Path) -> None:
    report = _report(tmp_path, OUTCOMES)
    why = not_representative("3.7", {"system_python_version": "3.9.2"})
    report.scenarios[0] = replace(report.scenarios[0], representative=why)
    out = tmp_path / "out"
    write_report(report, out)
    data = json.loads((out / "results.json").read_text())
    assert [s["representative"] for s in data["scenarios"]] == [why, "", "", ""]
    cases = ET.parse(out / "junit.xml").getroot().iter("testcase")
    first, *others = list(cases)
    assert first.get("name") == "octopi-1.0.0-stable [NOT REPRESENTATIVE]"
    props = {p.get("name"): p.get("value") for p in first.iter("property")}
    assert props == {"representative": "false", "why": why}
    assert why in first.find("system-out").text
    assert all(c.find("properties") is None for c in others)
    html = (out / "report.html").read_text()
    assert html.count("NOT REPRESENTATIVE") == 1 and why in html
    md = summary_markdown(report)
    row = next(line for line in md.splitlines() if "octopi-1.0.0-stable" in line)
    assert "NOT REPRESENTATIVE" in row and "the real image ships Python 3.7" in row
    assert md.count("NOT REPRESENTATIVE") == 1
