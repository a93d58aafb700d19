"""Warm ahead (issue 17, item 4): CI started building, so the daemon warms what the test needs.

GitHub's workflow_run deliveries with action requested / in_progress (signed, as
GitHub sends them) queue one warm job per workflow run; a test job always goes
first and pre-empts a running warm job; the warm job fetches the acceptance
matrix's pinned start versions through the package cache from a real upstream
(pypiserver on loopback) and so puts them in the cache.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_rig import REPO, image_bytes, wait_for

from rig.card.catalog import CANDIDATE
from rig.daemon.queue import TEST, WARM, JobRequest, Queue
from rig.daemon.warm import pinned_requirements, prepare_argv, prepared_scenarios
from rig.orchestration.matrix import load_matrix
from rig.packages.store import PackageStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages"))
from package_rig import Upstream, make_wheel

SHA = "deadbeef" * 5
MATRIX = {
    "release": {"version": "1.11.8", "channel": "stable"},
    "scenarios": [
        {"id": "from-1.10.3", "image": CANDIDATE, "octoprint": "1.10.3", "expect": "updated"},
        {"id": "fresh", "image": CANDIDATE, "expect": "not-offered"},
    ],
}


def workflow_run(action: str, run_id: int = 30433642, attempt: int = 1) -> dict:
    """A workflow_run delivery as GitHub sends it (trimmed to the fields GitHub documents)."""
    status = {"requested": "queued", "in_progress": "in_progress", "completed": "completed"}
    return {
        "action": action,
        "workflow_run": {
            "id": run_id,
            "name": "Build",
            "node_id": "WFR_kwLOAEAAAAAA",
            "head_branch": "main",
            "head_sha": SHA,
            "path": ".github/workflows/build.yml",
            "display_title": "Build the image",
            "run_number": 562,
            "event": "push",
            "status": status[action],
            "conclusion": "success" if action == "completed" else None,
            "workflow_id": 159038,
            "run_attempt": attempt,
            "html_url": f"https://github.com/{REPO}/actions/runs/{run_id}",
            "created_at": "2026-12-07T10:00:00Z",
            "updated_at": "2026-12-07T10:00:05Z",
            "head_repository": {"id": 1, "full_name": REPO},
            "repository": {"id": 1, "full_name": REPO},
        },
        "workflow": {"id": 159038, "name": "Build", "path": ".github/workflows/build.yml"},
        "repository": {"id": 1, "full_name": REPO, "private": False},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
    }


def configure(rig, index: str) -> None:
    """The rig's daemon tests this acceptance matrix; its package cache asks ``index``."""
    matrix = rig.dir / "acceptance.json"
    matrix.write_text(json.dumps(MATRIX))
    config = yaml.safe_load(rig.config_path.read_text())
    config["daemon"]["matrix"] = str(matrix)
    config["run"] = {"package_index": index}
    rig.config_path.write_text(yaml.safe_dump(config))


def test_requested_and_in_progress_queue_one_warm_job_per_workflow_run(rig):
    configure(rig, "http://127.0.0.1:9/simple/")
    rig.start()
    rig.daemon.worker.stop(timeout=1)  # the queue only: nobody works it here
    r = rig.hook("workflow_run", workflow_run("requested"))
    assert r.status_code == 202, r.text
    warm = rig.job(r.json()["job"])
    assert warm.kind == WARM and warm.state == "queued"
    assert warm.title.startswith(f"warm ahead: {REPO} run 30433642 (Build, main")
    # in_progress and a re-run of the same workflow run: the same warm job
    again = rig.hook("workflow_run", workflow_run("in_progress"))
    rerun = rig.hook("workflow_run", workflow_run("requested", attempt=2))
    assert again.status_code == rerun.status_code == 200
    assert again.json() == {**again.json(), "outcome": "known", "job": warm.id}
    assert rerun.json()["job"] == warm.id
    # a redelivery of the same delivery is a duplicate, as for any event
    dup = rig.hook("workflow_run", workflow_run("requested"), delivery="d-warm")
    assert rig.hook("workflow_run", workflow_run("requested"), delivery="d-warm").json() == {
        "outcome": "duplicate",
        "job": dup.json()["job"],
    }
    # completed: the test job, its own job; claimed before the older warm job
    test = rig.hook("workflow_run", workflow_run("completed"))
    assert test.status_code == 202
    assert rig.job(test.json()["job"]).kind == TEST
    claimed = rig.daemon.queue.claim("someone", ("queued", "running"))
    assert claimed is not None and claimed.id == test.json()["job"]
    # the dashboard lists the warm job with the others
    page = httpx.get(f"{rig.url}/").text
    assert f"warm ahead: {REPO} run 30433642" in page


def test_warm_ahead_off_ignores_the_early_actions(rig):
    config = yaml.safe_load(rig.config_path.read_text())
    config["daemon"]["warm_ahead"] = False
    rig.config_path.write_text(yaml.safe_dump(config))
    rig.start()
    r = rig.hook("workflow_run", workflow_run("requested"))
    assert r.json() == {"outcome": "ignored", "reason": r.json()["reason"]}
    assert "waiting for 'completed'" in r.json()["reason"]


def test_a_test_job_is_claimed_before_any_warm_job_and_none_is_lost(tmp_path):
    q = Queue(tmp_path)
    for i in range(3):
        q.accept_delivery(
            f"w{i}", "workflow_run", JobRequest(f"warm:r:{i}", "x", "w", {}, kind=WARM)
        )
    q.accept_delivery("t", "release", JobRequest("release:r:1", "release", "t", {}))
    assert q.test_waiting(("queued",))
    order = []
    while (job := q.claim("me", ("queued",))) is not None:
        order.append(job.kind)
        q.update(job.id, state="warmed" if job.kind == WARM else "failed")
    assert order == [TEST, WARM, WARM, WARM]
    assert not q.test_waiting(("queued",))


def test_a_state_file_from_before_warm_jobs_gets_the_kind_column(tmp_path):
    import sqlite3

    db = tmp_path / "old"
    db.mkdir()
    old = Queue(db)
    old.accept_delivery("d", "release", JobRequest("release:r:1", "release", "t", {}))
    path = old.conn.execute("PRAGMA database_list").fetchone()["file"]
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE daemon_jobs DROP COLUMN kind")
    conn.commit()
    conn.close()
    reopened = Queue.__new__(Queue)
    reopened.__init__(db)  # a new process: the column is added again, the job is a test job
    assert reopened.get(1).kind == TEST


def _add_artifact_build(rig, run_id: int) -> str:
    data = image_bytes("warm-build")
    digest = hashlib.sha256(data).hexdigest()
    rig.github.add_artifact(
        run_id,
        "octopi-1.1.0-1.11.8",
        {
            "octopi-1.1.0.img.xz": data,
            "octopi-1.1.0.img.xz.sha256": f"{digest}  octopi-1.1.0.img.xz",
        },
    )
    return digest


def test_a_test_job_pre_empts_a_running_warm_job_which_then_is_not_needed(rig):
    hung = socket.socket()  # an upstream index that accepts and never answers: warming hangs
    hung.bind(("127.0.0.1", 0))
    hung.listen()
    try:
        configure(rig, f"http://127.0.0.1:{hung.getsockname()[1]}/simple/")
        _add_artifact_build(rig, 30433642)
        rig.start()
        warm_id = rig.hook("workflow_run", workflow_run("requested")).json()["job"]
        wait_for("the warm job to fetch packages", lambda: rig.job(warm_id).phase == "packages")
        test = rig.hook("workflow_run", workflow_run("completed"))
        test_id = test.json()["job"]
        job = rig.wait_state(test_id, "awaiting-approval", timeout=60)
        assert job.kind == TEST
        warm = rig.wait_state(warm_id, "warmed")
        assert "the build's test job came first" in warm.result["summary"]
        steps = [(s["name"], s["state"]) for s in rig.daemon.queue.steps(warm_id)]
        assert steps == [("packages", "interrupted")]
        # the test job started only once the warm job had let go of the lane
        test_step = rig.daemon.queue.steps(test_id)[0]
        assert rig.daemon.queue.steps(warm_id)[0]["ended"] <= test_step["started"]
    finally:
        hung.close()


@pytest.fixture
def octoprint_upstream(tmp_path: Path):
    """pypiserver with what pinning OctoPrint 1.10.3 asks (tiny stand-in wheels)."""
    d = tmp_path / "upstream-packages"
    d.mkdir()
    make_wheel(d, "OctoPrint", "1.10.3")
    make_wheel(d, "limits", "3.13.0")
    make_wheel(d, "limits", "4.0.0")
    up = Upstream(d)
    yield up
    up.stop()


def test_the_warm_job_puts_the_pinned_start_versions_in_the_package_cache(rig, octoprint_upstream):
    configure(rig, octoprint_upstream.url.rstrip("/") + "/")
    rig.start()
    warm_id = rig.hook("workflow_run", workflow_run("in_progress")).json()["job"]
    job = rig.wait_state(warm_id, "warmed", "error", timeout=120)
    assert job.state == "warmed", job.error
    assert "packages: 2 file(s) for 1 start version(s)" in job.result["summary"]
    assert "prepare: every scenario starts from the image being built" in job.result["summary"]
    store = PackageStore(rig.dir / "packages", 1 << 30)  # the cache rig.yaml names (default)
    assert store.cached("octoprint", "OctoPrint-1.10.3-py3-none-any.whl") is not None
    assert store.cached("limits", "limits-3.13.0-py3-none-any.whl") is not None
    assert store.cached("limits", "limits-4.0.0-py3-none-any.whl") is None  # pinned away
    # the job page shows it as any job
    page = httpx.get(f"{rig.url}/jobs/{warm_id}").text
    assert "warmed" in page and "warm" in page


def test_what_the_matrix_asks_to_warm_comes_from_the_product_profile(tmp_path):
    path = tmp_path / "m.json"
    data = json.loads(json.dumps(MATRIX))
    data["scenarios"].append({"id": "old", "image": "octopi-1.0.0", "octoprint": "1.9.3"})
    path.write_text(json.dumps(data))
    matrix = load_matrix(path)
    assert pinned_requirements(matrix) == [
        ["OctoPrint==1.10.3", "limits<4"],
        ["OctoPrint==1.9.3", "limits<4", "pydantic<1.10.13"],
    ]
    assert prepared_scenarios(matrix) == ["old"]


def test_the_prepare_hook_runs_the_scenarios_up_to_their_starting_state(rig):
    configure(rig, "http://127.0.0.1:9/simple/")
    rig.start()
    settings = rig.daemon.settings
    argv = prepare_argv(settings, ["a", "b"], rig.dir / "out")
    assert argv[argv.index("run") + 2 :] == [
        "--scenario", "a", "--scenario", "b", "--prepare-only",
        "--report-dir", str(rig.dir / "out"), "--wait", "0",
    ]  # fmt: skip
    assert argv[argv.index("--config") + 1] == str(rig.config_path)
    assert argv[argv.index("run") + 1] == str(rig.dir / "acceptance.json")
