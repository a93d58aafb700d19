"""The whole flow on the virtual rig, with the real `rig run` as the acceptance command:
signed release webhook -> image downloaded and verified -> `rig run MATRIX --candidate`
flashes and boots it on a virtual Pi -> approval mail -> confirmation page -> POST
approve -> the release PATCH seen by the GitHub double."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_rig import MARKER, REPO, release_payload, wait_for

from rig.config import VIRTUAL_CONFIG, load_config
from rig.orchestration.leases import Leases
from rig.root import Rig


@pytest.mark.slow
def test_release_to_published_through_rig_run_on_the_virtual_rig(rig, tmp_path, request):
    # the candidate: a real virtual OctoPi image, zipped as OctoPi-UpToDate publishes it
    base = Rig.from_config(load_config(None, search=False)).image("octopi-0.18.0")
    candidate = tmp_path / "octopi-candidate.zip"
    with zipfile.ZipFile(candidate, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(base, "octopi-candidate.img")
    data = candidate.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    release = rig.github.add_release(
        "0.18.0-candidate",
        f"OctoPi candidate\n{MARKER}\n",
        {
            candidate.name: data,
            f"{candidate.name}.sha256": f"{digest}  {candidate.name}\n".encode(),
            "rpi-imager.json": json.dumps(
                {"os_list": [{"image_download_sha256": digest}]}
            ).encode(),
        },
    )

    matrix = tmp_path / "acceptance.json"
    matrix.write_text(
        json.dumps(
            {
                "release": {"version": "1.11.8", "channel": "maintenance"},
                "scenarios": [
                    {
                        "id": "candidate-stable-not-offered",
                        "image": "@candidate",
                        "channel": "stable",
                        "expect": "not-offered",
                        "checks": ["update-api"],
                    }
                ],
            }
        )
    )
    config = yaml.safe_load(rig.config_path.read_text())
    del config["daemon"]["acceptance_command"]  # the default: the real `rig run`
    config["daemon"].update(matrix=str(matrix), max_attempts=1, acceptance_timeout_minutes=10)
    # this rig's virtual Pis on addresses of their own: other virtual rigs may be running
    net = f"127.{random.randint(100, 250)}.{random.randint(0, 250)}"
    config["devices"] = {
        name: {**dev, "host": f"{net}.{dev['host'].rsplit('.', 1)[1]}"}
        for name, dev in copy.deepcopy(VIRTUAL_CONFIG["devices"]).items()
    }
    config["virtual"] = {}
    config["run"] = {"snapshots": False}  # the acceptance run starts from the image
    rig.config_path.write_text(yaml.safe_dump(config))

    def stop_virtual_rig() -> None:  # `rig run` started it; it must not outlive the test
        from rig.virtual.twin import stop_twin

        stop_twin(load_config(rig.config_path))

    request.addfinalizer(stop_virtual_rig)
    daemon = rig.start()

    # a person's `rig run` holds every device: the daemon's run waits, it does not collide
    person = Leases(daemon.settings.rig.paths.state, holder="someone-else")
    devices = list(daemon.settings.rig.devices)
    assert all(person.acquire(d, "a person's rig run") for d in devices)
    job_id = rig.hook("release", release_payload(release)).json()["job"]
    wait_for("the acceptance run to start", lambda: rig.job(job_id).phase == "test")
    time.sleep(3)
    report_dir = Path(rig.job(job_id).report_dir)
    assert not list(report_dir.glob("scenarios/*/scenario.log")), "ran on a leased device"
    dashboard = httpx.get(rig.url + "/").text
    assert dashboard.count("a person&#x27;s rig run") == len(devices)
    person.release_all()
    person.close()
    job = wait_for(
        "the acceptance run on the virtual rig",
        lambda: (j := rig.job(job_id)).state in ("awaiting-approval", "failed", "error") and j,
        timeout=420,
    )
    log = tmp_path / "reports" / "daemon" / f"job-{job_id}" / "attempt-1" / "acceptance.log"
    assert job.state == "awaiting-approval", (job.error, log.read_text()[-3000:])
    assert job.image_sha256 == digest
    assert job.result["scenarios"] == [{"id": "candidate-stable-not-offered", "outcome": "passed"}]
    argv = json.loads(
        next(s for s in rig.daemon.queue.steps(job_id) if s["name"] == "test")["detail"]
    )
    assert argv["argv"][-8:-2] == [
        "run",
        str(matrix),
        "--candidate",
        job.image_path,
        "--report-dir",
        job.report_dir,
    ]
    assert argv["argv"][-2:] == ["--wait", "3600"]  # busy devices are waited for
    report = httpx.get(f"{rig.url}/jobs/{job_id}/report/report.html")
    assert report.status_code == 200 and "candidate-stable-not-offered" in report.text

    wait_for("the approval mail", lambda: rig.inbox.messages)
    link = rig.approval_link()
    assert digest in httpx.get(link).text
    assert httpx.post(link, data={"decision": "approve"}).status_code == 303
    rig.wait_state(job_id, "published")
    patch = rig.github.calls_to("PATCH", f"/repos/{REPO}/releases/{release['id']}")
    assert len(patch) == 1 and MARKER not in patch[0].body["body"]
