"""The example workflows in workflows/: audited by zizmor, and their steps run as written.

zizmor (from the [test] extra) runs offline with its pedantic persona; a finding of
any severity fails the test, so template injection, unpinned actions, broad
permissions and dangerous triggers (workflow_run, pull_request_target) stay out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.yml"))


def _zizmor() -> str:
    found = shutil.which(
        "zizmor", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    assert found, "zizmor is not installed: it is in the [test] extra (scripts/setup --test)"
    return found


def _audit(*files: Path) -> list[dict]:
    proc = subprocess.run(
        [_zizmor(), "--offline", "--persona", "pedantic", "--format", "json", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # exit 0: nothing found; 1x: findings (the JSON says which); anything else: no audit
    assert proc.returncode == 0 or 10 <= proc.returncode <= 14, proc.stderr
    return json.loads(proc.stdout)


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on:` as true
    return data


def test_the_example_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["notify-rig.yml", "rig-scale-out.yml"]


def test_zizmor_finds_nothing_in_the_workflows() -> None:
    findings = _audit(*WORKFLOWS)
    assert findings == [], [
        (f["ident"], f["determinations"]["severity"], f["locations"][0]["concrete"]["feature"])
        for f in findings
    ]


def test_zizmor_does_find_an_injection_in_a_workflow_like_ours(tmp_path: Path) -> None:
    """The audit above can fail: the same workflow with a `${{ }}` in a run line is high."""
    text = (REPO / "workflows" / "rig-scale-out.yml").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(
        text.replace(
            'image.zip "$IMAGE_URL"', 'image.zip "${{ github.event.client_payload.image_url }}"'
        )
    )
    assert bad.read_text() != text
    found = {(f["ident"], f["determinations"]["severity"]) for f in _audit(bad)}
    assert ("template-injection", "High") in found


def test_actions_are_pinned_by_commit_with_the_version_in_a_comment() -> None:
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if re.match(r"\s*-?\s*uses:", line):
                assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$", line), (
                    f"{path.name}: {line.strip()}"
                )


def test_no_expression_is_expanded_inside_a_shell_script() -> None:
    for path in WORKFLOWS:
        for name, job in _load(path)["jobs"].items():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), f"{path.name}: {name}: {step.get('name')}"


def test_permissions_are_granted_per_job_and_no_wider() -> None:
    for path in WORKFLOWS:
        wf = _load(path)
        assert wf["permissions"] == {}, path.name
        for name, job in wf["jobs"].items():
            granted = job.get("permissions")
            assert isinstance(granted, dict), f"{path.name}: {name} has no permissions block"
            assert set(granted.items()) <= {("contents", "read"), ("contents", "write")}


def test_scale_out_starts_on_an_event_a_build_with_github_token_can_cause() -> None:
    """A release made with GITHUB_TOKEN starts no run; a repository_dispatch does."""
    notify, scale = (
        _load(REPO / "workflows" / "notify-rig.yml"),
        _load(REPO / "workflows" / "rig-scale-out.yml"),
    )
    assert set(scale["on"]) == {"repository_dispatch", "workflow_dispatch"}
    types = scale["on"]["repository_dispatch"]["types"]
    assert set(notify["on"]) == {"workflow_call"}
    sent = re.findall(r"event_type=([\w-]+)", notify["jobs"]["dispatch"]["steps"][0]["run"])
    assert sent == types == ["rig-test"]
    # the daemon's README example listens for the same event type
    assert "dispatch_event_type: rig-test" in (REPO / "README.md").read_text()


def _run_step(step: dict, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(shutil.which("jq") is None, reason="the plan step uses jq")
@pytest.mark.parametrize("rigs", [1, 2, 3])
def test_the_plan_step_deals_every_scenario_to_exactly_one_rig(tmp_path: Path, rigs: int) -> None:
    (step,) = [
        s
        for s in _load(REPO / "workflows" / "rig-scale-out.yml")["jobs"]["plan"]["steps"]
        if "run" in s
    ]
    (tmp_path / "matrix").mkdir()
    ids = [f"scenario-{i}.x" for i in range(7)]
    matrix = {"release": {"version": "1.11.0"}, "scenarios": [{"id": i} for i in ids]}
    (tmp_path / "matrix" / "acceptance.json").write_text(json.dumps(matrix))
    output = tmp_path / "github_output"
    done = _run_step(step, tmp_path, RIGS=str(rigs), GITHUB_OUTPUT=str(output))
    assert done.returncode == 0, done.stderr
    key, _, value = output.read_text().strip().partition("=")
    shards = json.loads(value)
    assert key == "shards"
    assert sorted(s["rig"] for s in shards) == [f"rig-{n}" for n in range(1, rigs + 1)]
    dealt = [sid for s in shards for sid in s["scenarios"].split(" ")]
    assert sorted(dealt) == sorted(ids)


@pytest.mark.parametrize(
    ("url", "sha", "said"),
    [
        ("http://example.org/image.zip", "a" * 64, "must be an https:// URL"),
        ("https://example.org/image.zip", "A" * 64, "must be 64 lower-case hex digits"),
        ("https://example.org/image.zip", "$(touch pwned)", "must be 64 lower-case hex digits"),
    ],
)
def test_the_fetch_step_refuses_a_bad_url_or_checksum_before_downloading(
    tmp_path: Path, url: str, sha: str, said: str
) -> None:
    steps = _load(REPO / "workflows" / "rig-scale-out.yml")["jobs"]["test"]["steps"]
    (step,) = [s for s in steps if s.get("name") == "fetch and check the candidate image"]
    done = _run_step(step, tmp_path, IMAGE_URL=url, IMAGE_SHA256=sha)
    assert done.returncode == 2 and said in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing run
