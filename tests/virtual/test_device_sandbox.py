"""The device sandbox: uid 1000 inside, files and processes invisible across devices, power cut."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from rig.virtual.sandbox import Sandbox, require_sandbox

pytestmark = pytest.mark.root


def _box(tmp_path: Path, name: str) -> Sandbox:
    root = tmp_path / name
    for d in ("home/pi", "etc", "var"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("pi:x:1000:1000::/home/pi:/bin/bash\n")
    (root / "etc" / "hostname").write_text(name + "\n")
    box = Sandbox(
        name=name,
        root=root,
        hostname=name,
        mounts={"/home": root / "home", "/etc": root / "etc", "/var": root / "var"},
    )
    box.start()
    return box


def _run(box: Sandbox, script: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": "/home/pi", "PATH": "/usr/local/sbin:/usr/bin:/bin"}
    return subprocess.run(
        box.command(["/bin/bash", "-c", script], cwd="/home/pi", env=env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def boxes(tmp_path: Path):
    require_sandbox()
    a, b = _box(tmp_path, "dev-a"), _box(tmp_path, "dev-b")
    yield a, b
    a.kill()
    b.kill()


def test_inside_is_uid_1000_with_its_own_hostname(boxes: tuple[Sandbox, Sandbox]) -> None:
    a, _ = boxes
    out = _run(a, "id -u; id -un; hostname; cat /etc/hostname; echo $HOME; pwd").stdout.split()
    assert out == ["1000", "pi", "dev-a", "dev-a", "/home/pi", "/home/pi"]


def test_one_device_cannot_see_the_other_s_files_or_processes(
    boxes: tuple[Sandbox, Sandbox], tmp_path: Path
) -> None:
    a, b = boxes
    assert (
        _run(
            a, "echo secret-of-a > ~/mine.txt; sleep 300 >/dev/null 2>&1 & echo started"
        ).returncode
        == 0
    )
    assert (tmp_path / "dev-a" / "home" / "pi" / "mine.txt").read_text() == "secret-of-a\n"
    seen_by_b = _run(
        b,
        "ls -a ~; grep -rs secret-of-a / --exclude-dir=proc --exclude-dir=sys "
        "--exclude-dir=usr --exclude-dir=dev --exclude-dir=opt | head -1; ps -eo args",
    )
    assert "mine.txt" not in seen_by_b.stdout
    assert "secret-of-a" not in seen_by_b.stdout
    assert "sleep 300" not in seen_by_b.stdout
    assert "sleep 300" in _run(a, "ps -eo args").stdout
    # and the host's own files are not there either
    assert _run(b, "test -e /root || test -e /work").returncode != 0


def test_etc_is_read_only_and_usr_cannot_be_changed(boxes: tuple[Sandbox, Sandbox]) -> None:
    a, _ = boxes
    assert _run(a, "echo x > /etc/hostname").returncode != 0
    assert _run(a, "touch /usr/bin/evil").returncode != 0
    assert _run(a, "sudo touch /usr/bin/evil").returncode != 0  # sudo grants nothing real


def test_power_cut_kills_the_whole_tree_at_once(boxes: tuple[Sandbox, Sandbox]) -> None:
    a, b = boxes
    # a process tree with a child that ignores SIGTERM and a grandchild in its own session
    _run(
        a,
        "trap '' TERM; (setsid sleep 400 >/dev/null 2>&1 &) ;"
        " (sleep 401 >/dev/null 2>&1 &); echo ok",
    )
    pids = subprocess.run(
        ["pgrep", "-f", "sleep 40[01]"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(pids) >= 2
    t0 = time.monotonic()
    a.kill()
    assert time.monotonic() - t0 < 5
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"{pid} survived the power cut"
    assert _run(b, "echo alive").stdout.strip() == "alive"  # the neighbour is untouched
    assert os.path.isdir("/proc/1")


def _zombie(pid: str) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return True
