"""scripts/install-flash-host into a throwaway root: coherent files that `rig doctor` accepts.

Real shadow-utils (groupadd/useradd/usermod --root), the real script, the real doctor; the
root is a directory with the account files a fresh Raspberry Pi OS has (user pi, uid 1000).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rig.host import SHIPPED
from rig.host.rules import kernel_patterns, render

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-flash-host"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n"
    )
    (r / "etc/group").write_text("root:x:0:\npi:x:1000:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\npi:*:19000:0:99999:7:::\n")
    (r / "etc/gshadow").write_text("root:*::\npi:*::\n")
    for f in ("shadow", "gshadow"):
        (r / "etc" / f).chmod(0o640)
    return r


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else f"dir {p.stat().st_mode & 0o777:o}"
        for p in sorted(root.rglob("*"))
    }


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RIG_PYTHON": sys.executable}
    return subprocess.run(
        [str(SCRIPT), "--root", str(root), "--user", "pi", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_dry_run_prints_every_change_and_makes_none(root: Path) -> None:
    before = _tree(root)
    done = _install(root, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert _tree(root) == before
    out = done.stdout
    for change in (
        "would create  system group rig",
        "would create  system user rig",
        "would add     pi to group rig",
        "would create  /etc/udev/rules.d/99-rig.rules",
        "would create  /etc/modules-load.d/rig.conf",
        "would create  /etc/systemd/system/rig.service",
        "would create  /etc/rig/rig.yaml",
        "would create  /etc/rig/credentials/ (mode 700)",
        "would run: apt-get install",
    ):
        assert change in out, out


def test_install_is_coherent_idempotent_and_accepted_by_doctor(root: Path) -> None:
    first = _install(root)
    assert first.returncode == 0, first.stdout + first.stderr
    # one group for everything: the service's user, the udev rules, the person
    group = [
        line for line in (root / "etc/group").read_text().splitlines() if line.startswith("rig:")
    ]
    assert group and group[0].endswith(":pi")
    gid = group[0].split(":")[2]
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    assert passwd["rig"][3] == gid and passwd["rig"][6] == "/usr/sbin/nologin"
    unit = (root / "etc/systemd/system/rig.service").read_text()
    assert "User=rig\n" in unit and "Group=rig\n" in unit and "plugdev" not in unit
    rules = (root / "etc/udev/rules.d/99-rig.rules").read_text()
    groups = {part.split('"')[1] for part in rules.split("GROUP=")[1:]}
    assert groups == {"rig"}
    assert 'RUN{builtin}+="kmod load sg"' in rules and "Pengutronix" in rules
    assert "f0cd" in rules and "efed" in rules and 'ATTR{product}=="sd-wire"' in rules
    assert 'ENV{UDISKS_IGNORE}="1"' in rules
    # only the configured hubs (the example config's 1-1.3), never every hub
    hub_lines = [line for line in rules.splitlines() if 'ATTR{bDeviceClass}=="09"' in line]
    assert hub_lines and all('KERNEL=="[0-9]*-' in line for line in hub_lines)
    assert (root / "etc/modules-load.d/rig.conf").read_text().split() == ["sg"]
    assert (root / "etc/rig/credentials").stat().st_mode & 0o777 == 0o700

    # the example config needs its two secrets: doctor says so and how to fix it
    doctor = [sys.executable, "-m", "rig", "doctor", "--root", str(root)]
    missing = subprocess.run(doctor, capture_output=True, text=True)
    assert missing.returncode == 3
    assert "secret 'wifi_psk' not found" in missing.stdout
    assert "/etc/rig/credentials/wifi_psk" in missing.stdout
    for name, value in (("wifi_psk", "lab-psk-1234"), ("pi_password", "raspberry-pi")):
        (root / "etc/rig/credentials" / name).write_text(value)
        (root / "etc/rig/credentials" / name).chmod(0o600)
    ok = subprocess.run(doctor, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    assert "FAIL" not in ok.stdout

    # a second run changes nothing and keeps the user's config
    (root / "etc/rig/rig.yaml").write_text((root / "etc/rig/rig.yaml").read_text() + "# mine\n")
    before = _tree(root)
    again = _install(root)
    assert again.returncode == 0
    assert "made 0 change(s)" in again.stdout
    assert _tree(root) == before


def test_doctor_names_a_stale_rules_file_and_loose_credentials(root: Path) -> None:
    assert _install(root).returncode == 0
    rules = root / "etc/udev/rules.d/99-rig.rules"
    rules.write_text(rules.read_text().replace('GROUP="rig"', 'GROUP="plugdev"'))
    cred = root / "etc/rig/credentials/wifi_psk"
    cred.write_text("x")
    cred.chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "rig", "doctor", "--root", str(root)], capture_output=True, text=True
    ).stdout
    assert "FAIL host       udev rules" in out and "differs" in out
    assert "readable by others: wifi_psk" in out


def test_a_32_bit_arm_host_is_refused_with_the_reason(root: Path) -> None:
    done = subprocess.run(
        [str(SCRIPT), "--dry-run", "--root", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "RIG_MACHINE": "armv7l", "RIG_PYTHON": sys.executable},
    )
    assert done.returncode == 2
    assert "armv7l" in done.stderr and "64-bit" in done.stderr and "Playwright" in done.stderr


def test_rules_cover_the_other_speed_half_of_a_hub() -> None:
    assert kernel_patterns("1-1.3") == ["[0-9]*-1.3", "[0-9]*-3"]  # Pi 4 VL805 layout
    assert kernel_patterns("3-2") == ["[0-9]*-2", "[0-9]*-1.2"]
    text = render({"a": {"power": {"driver": "ykush", "serial": "Y1", "port": 1}}})
    assert 'ATTR{bDeviceClass}=="09"' not in text  # no hub configured: no hub rule at all


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_shipped_unit_passes_systemd_analyze_verify(tmp_path) -> None:
    """systemd's own parser: no unknown keys, no bad values (only the program path moved)."""
    rig = Path(sys.executable).with_name("rig")
    unit = tmp_path / "rig.service"
    unit.write_text((SHIPPED / "rig.service").read_text().replace("/opt/rig/bin/rig", str(rig)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    said = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        # a container without systemd as PID 1 has no default targets to order against
        if line.strip() and "sysinit.target" not in line and "Failed to create" not in line
    ]
    assert said == []


def _unit(root: Path) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (root / "etc/systemd/system/rig.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            entries.setdefault(key, []).append(value)
    return entries


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_the_installed_unit_starts_the_daemon_with_the_installed_config(root: Path) -> None:
    """What systemd would do with the installed unit, done by hand: its ExecStart (the program
    moved to this venv) with its Environment=, and the credentials directory presented the
    way LoadCredential=rig:/etc/rig/credentials presents it (rig_<file>). /var/lib and
    /var/cache are private tmpfs mounts, so StateDirectory/CacheDirectory cost nothing."""
    assert _install(root).returncode == 0
    secrets = {
        "wifi_psk": "lab-psk-1234",
        "pi_password": "raspberry-pi",
        "webhook_secret": "a-webhook-secret-of-some-length-0123456789",
    }
    presented = root / "run-credentials"
    presented.mkdir()
    for name, value in secrets.items():
        (root / "etc/rig/credentials" / name).write_text(value)
        (root / "etc/rig/credentials" / name).chmod(0o600)
        (presented / f"rig_{name}").write_text(value)
    unit = _unit(root)
    (load,) = unit["LoadCredential"]
    assert load == "rig:/etc/rig/credentials"
    argv = shlex.split(unit["ExecStart"][0])
    assert argv[0] == "/opt/rig/bin/rig" and argv[1:3] == ["--config", "/etc/rig/rig.yaml"]
    argv[0] = str(Path(sys.executable).with_name("rig"))
    argv[2] = str(root / "etc/rig/rig.yaml")
    port = 18470 + os.getpid() % 1000
    env = {"PATH": os.environ["PATH"], "CREDENTIALS_DIRECTORY": str(presented)}
    for assignment in unit["Environment"]:
        env.update(dict(item.split("=", 1) for item in shlex.split(assignment)))
    script = (
        "mount -t tmpfs none /var/lib && mount -t tmpfs none /var/cache && mkdir -p "
        '/var/lib/rig /var/cache/rig && exec "$@"'
    )
    proc = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *argv,
            "--port",
            str(port),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "rig serve did not answer /healthz in 60 s"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_quick_start_set_up_refuses_a_32_bit_arm_machine() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "setup")],
        capture_output=True,
        text=True,
        env={**os.environ, "RIG_MACHINE": "armv7l"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "armv7l" in done.stderr and "64-bit" in done.stderr
