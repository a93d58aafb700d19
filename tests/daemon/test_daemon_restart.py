"""`kill -9` of `rig serve` mid-job, then a restart: the job completes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from daemon_rig import (
    REPO,
    Rig,
    add_octopi_release,
    free_port,
    release_payload,
    serve,
    wait_for,
    wait_up,
    write_config,
)

from rig.daemon.queue import Queue


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_kill_9_mid_test_then_restart_completes_the_job_exactly_once(tmp_path, github, smtp):
    inbox, smtp_port = smtp
    port = free_port()
    runlog, hold = tmp_path / "runs.log", tmp_path / "go"
    config = write_config(tmp_path, github, smtp_port, port, runlog, hold=str(hold))
    rig = Rig(tmp_path, config, port, github, inbox, runlog)
    release = add_octopi_release(github, "1.1.0-1.11.0-crash")
    log = tmp_path / "serve.log"

    first = serve(config, log)
    procs = [first]
    try:
        wait_up(rig.url, first)
        # a second daemon on the same state refuses to start
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "rig",
                "--config",
                str(config),
                "serve",
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert second.returncode == 3 and "already working" in second.stderr

        job_id = rig.hook("release", release_payload(release)).json()["job"]
        wait_for(
            "the acceptance run to start", lambda: runlog.exists() and "start" in runlog.read_text()
        )
        orphan = int(runlog.read_text().split()[1])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert alive(orphan), "the acceptance run outlives the killed daemon (own session)"

        restarted = serve(config, log)
        procs.append(restarted)
        wait_up(rig.url, restarted)
        wait_for("the orphaned run to be stopped", lambda: not alive(orphan))
        wait_for("the run to start again", lambda: runlog.read_text().count("start") == 2)
        hold.touch()

        queue = Queue(tmp_path / "state")
        wait_for("approval", lambda: queue.get(job_id).state == "awaiting-approval", timeout=30)
        lines = runlog.read_text().split()
        assert lines.count("start") == 2 and lines.count("end") == 1
        assert lines[lines.index("end") + 1] != str(orphan)
        wait_for("the approval mail", lambda: inbox.messages)
        time.sleep(0.5)
        assert len(inbox.messages) == 1
        assert len(queue.jobs()) == 1
        steps = [(s["name"], s["attempt"], s["state"]) for s in queue.steps(job_id)]
        assert ("test", 1, "interrupted") in steps and ("test", 2, "done") in steps
        assert [s for s in steps if s[0] == "fetch"] == [("fetch", 1, "done")]  # not fetched twice
        image_asset = next(a for a in release["assets"] if a["name"].endswith(".zip"))
        image_downloads = github.calls_to("GET", f"/storage/asset-{image_asset['id']}")
        assert len(image_downloads) == 1

        # approve through the restarted daemon
        link = rig.approval_link()
        assert httpx.post(link, data={"decision": "approve"}).status_code == 303
        wait_for("published", lambda: queue.get(job_id).state == "published")
        assert len(github.calls_to("PATCH", f"/repos/{REPO}/releases/")) == 1

        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(20) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if runlog.exists():
            for word in runlog.read_text().split():
                if word.isdigit() and alive(int(word)):
                    os.kill(int(word), signal.SIGKILL)
