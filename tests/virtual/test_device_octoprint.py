"""A virtual Pi booted from a real OctoPi image, provisioned by the rig's own provisioning:
SSH as the provisioned user, OctoPi paths and commands, the real OctoPrint, restart,
an upgrade through pip inside the device, reflash, and a power cut in the middle of pip."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest
from disk_support import drop_big_files
from twin_support import (
    flash,
    image,
    image_octoprint,
    provision,
    run,
    ssh,
    wait_online,
    wait_phase,
    write_config,
)

from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import access_point

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "octopi-1.0.0"
TARGET = "1.11.8"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory):
    require_sandbox()
    tmp = tmp_path_factory.mktemp("pi")
    config = write_config(tmp)
    img = image(IMAGE)
    card = tmp / "card.img"
    flash(img, card)
    provision(card, config, "pi3-a")
    spec = DeviceSpec.from_config(config.devices["pi3-a"])
    pi = VirtualPi(
        spec,
        card=lambda: card,
        state_dir=config.paths.state / "virtual",
        ap=access_point(config),
        settings=settings_from_config(config),
    )
    t0 = time.monotonic()
    pi.power_on()
    wait_phase(pi, ("up", "unreachable", "failed"))
    assert pi.phase == "up", pi.reason
    boot = time.monotonic() - t0
    online = wait_online(spec.host, spec.http_port)
    print(f"boot to sshd {boot:.1f} s, then /online.txt after {online:.1f} s")
    d = SimpleNamespace(
        config=config,
        pi=pi,
        spec=spec,
        card=card,
        img=img,
        password=config.user.password.reveal(),
    )
    yield d
    pi.power_cut()
    drop_big_files(tmp)


def _login(d: SimpleNamespace) -> paramiko.SSHClient:
    return ssh(d.spec.host, d.spec.ssh_port, d.config.user.name, d.password)


def test_ssh_as_the_provisioned_user_sees_octopi(dev: SimpleNamespace) -> None:
    with _login(dev) as c:
        rc, out, _ = run(c, "id -un; id -u; cat /etc/octopi_version; date +%s; ls ~/oprint/bin/pip")
    assert rc == 0
    user, uid, octopi, now, pip = out.split()
    assert (user, uid, octopi) == ("pi", "1000", "1.0.0")
    assert abs(int(now) - time.time()) < 5
    assert pip == "/home/pi/oprint/bin/pip"
    with _login(dev) as c:
        assert run(c, "echo out; echo err >&2; exit 3")[0:3] == (3, "out\n", "err\n")


def test_interactive_login_gets_a_terminal(dev: SimpleNamespace) -> None:
    with _login(dev) as c:
        chan = c.invoke_shell(term="xterm", width=100, height=30)
        chan.settimeout(20)
        chan.sendall(b"tty; echo TERM=$TERM; stty size; cd ~/oprint && pwd; exit 4\n")
        out = b""
        while not chan.exit_status_ready() or chan.recv_ready():
            data = chan.recv(65536)
            if not data:
                break
            out += data
        text = out.decode(errors="replace")
        assert "/dev/pts/" in text and "TERM=xterm" in text and "30 100" in text
        assert "/home/pi/oprint" in text
        assert chan.recv_exit_status() == 4


def test_wrong_and_default_passwords_are_refused(dev: SimpleNamespace) -> None:
    for bad in ("wrong", "raspberry"):
        with pytest.raises(paramiko.AuthenticationException):
            ssh(dev.spec.host, dev.spec.ssh_port, "pi", bad)
    with pytest.raises(paramiko.AuthenticationException):
        ssh(dev.spec.host, dev.spec.ssh_port, "root", dev.password)


def test_octoprint_runs_at_the_image_s_version(dev: SimpleNamespace) -> None:
    version = image_octoprint(IMAGE)
    wait_online(dev.spec.host, dev.spec.http_port)
    assert dev.pi.status()["octoprint_version"] == version
    with _login(dev) as c:
        log = c.open_sftp().open(".octoprint/logs/octoprint.log").read().decode()
        rc, out, _ = run(
            c, "~/oprint/bin/python -c 'import octoprint; print(octoprint.__version__)'"
        )
    assert f"Starting OctoPrint {version}" in log
    assert (rc, out.strip()) == (0, version)


def test_sftp_writes_land_in_the_device_home(dev: SimpleNamespace) -> None:
    with _login(dev) as c:
        sftp = c.open_sftp()
        with sftp.open("uploaded.txt", "w") as f:
            f.write(b"hello device\n")
        assert run(c, "cat ~/uploaded.txt; stat -c %U ~/uploaded.txt")[1] == "hello device\npi\n"
    assert (dev.pi.host_path("/home/pi") / "uploaded.txt").read_text() == "hello device\n"


def test_sudo_service_octoprint_restart_really_restarts(dev: SimpleNamespace) -> None:
    wait_online(dev.spec.host, dev.spec.http_port)
    before = dev.pi.octoprint_pid()
    assert before
    with _login(dev) as c:
        assert run(c, "sudo service octoprint restart")[0] == 0
        rc, out, _ = run(c, "sudo systemctl status octoprint")
    assert rc == 0 and "active (running)" in out
    after = dev.pi.octoprint_pid()
    assert after and after != before
    assert not Path(f"/proc/{before}").exists()
    wait_online(dev.spec.host, dev.spec.http_port)
    with _login(dev) as c:
        assert run(c, "sudo service octoprint stop; sudo systemctl is-active octoprint")[0] == 3
        assert run(c, "sudo service octoprint start")[0] == 0
        assert run(c, "sudo service nonexistent restart")[0] != 0
    wait_online(dev.spec.host, dev.spec.http_port)


def test_pip_upgrade_inside_the_device_writes_to_its_card(dev: SimpleNamespace) -> None:
    """pip runs inside the device with the card's own Python; the cached image stays as built."""
    before = dev.img.stat().st_mtime_ns
    with _login(dev) as c:
        rc, _, err = run(c, f"~/oprint/bin/pip install -q OctoPrint=={TARGET}", timeout=600)
        assert rc == 0, err
        assert run(c, "sudo service octoprint restart")[0] == 0
    assert dev.pi.installed_octoprint() == TARGET
    site = next(dev.pi.host_path("/home/pi/oprint").glob("lib/python*/site-packages"))
    dist = next(x for x in site.glob("*.dist-info") if x.name.lower().startswith("octoprint-"))
    assert dist.stat().st_uid == 1000  # pi's, on the card
    assert dev.img.stat().st_mtime_ns == before
    wait_online(dev.spec.host, dev.spec.http_port)
    with _login(dev) as c:
        log = c.open_sftp().open(".octoprint/logs/octoprint.log").read().decode()
    assert f"Starting OctoPrint {TARGET}" in log


def test_sudo_reboot_boots_again_with_the_card_s_state(dev: SimpleNamespace) -> None:
    boots = dev.pi.boots
    with _login(dev) as c:
        assert run(c, "echo survives > ~/kept")[0] == 0
        run(c, "sudo reboot")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and dev.pi.boots == boots:
        time.sleep(0.05)
    wait_phase(dev.pi, ("up",))
    assert dev.pi.boots == boots + 1
    with _login(dev) as c:
        assert run(c, "cat ~/kept")[1] == "survives\n"
    wait_online(dev.spec.host, dev.spec.http_port)


def test_reflash_resets_the_device(dev: SimpleNamespace) -> None:
    with _login(dev) as c:
        assert run(c, "echo kept > ~/marker")[0] == 0
        key_before = c.get_transport().get_remote_server_key().asbytes()
    dev.pi.power_cut()
    flash(dev.img, dev.card)
    provision(dev.card, dev.config, "pi3-a")
    dev.pi.power_on()
    wait_phase(dev.pi, ("up", "unreachable", "failed"))
    assert dev.pi.phase == "up", dev.pi.reason
    with _login(dev) as c:
        assert run(c, "test -e ~/marker")[0] != 0
        assert c.get_transport().get_remote_server_key().asbytes() != key_before
    assert dev.pi.installed_octoprint() == image_octoprint(IMAGE)


def test_power_cut_during_pip_install_leaves_it_half_done(dev: SimpleNamespace) -> None:
    """A real power cut stops pip mid-way: its stash of the old files stays on the card."""
    site = next(dev.pi.host_path("/home/pi/oprint").glob("lib/python*/site-packages"))
    rel = site.relative_to(dev.pi.host_path("/"))
    c = _login(dev)
    chan = c.get_transport().open_session()
    chan.exec_command(f"~/oprint/bin/pip install OctoPrint=={TARGET}")
    deadline = time.monotonic() + 300
    stash: list[str] = []
    while time.monotonic() < deadline and not stash:
        stash = [e.name for e in os.scandir(site) if e.name.startswith("~")]
        if chan.exit_status_ready():
            break
        time.sleep(0.002)
    assert stash, "pip finished before it was caught mid-way"
    sandbox_pid = dev.pi.status()["sandbox_pid"]
    dev.pi.power_cut()
    assert not Path(f"/proc/{sandbox_pid}").exists()
    left = subprocess.run(["pgrep", "-f", "oprint/bin/pip"], capture_output=True, check=False)
    assert left.stdout == b""
    with pytest.raises((paramiko.SSHException, OSError)):
        ssh(dev.spec.host, dev.spec.ssh_port, "pi", dev.password)
    c.close()
    # the card, unmounted with the power, keeps pip's half-done work
    from rig.virtual.card import Card
    from rig.virtual.firstboot import _root_ls

    assert any(n.startswith("~") for n in _root_ls(Card(dev.card), "/" + str(rel)))
    # and the next boot finds the card as the cut left it
    dev.pi.power_on()
    wait_phase(dev.pi, ("up", "unreachable", "failed"))
    assert [e.name for e in os.scandir(site) if e.name.startswith("~")]
