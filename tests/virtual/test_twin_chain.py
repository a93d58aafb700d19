"""The whole chain through the production code: drivers -> writer -> provisioning -> boot -> SSH.

power off -> card to host -> write the image -> provision -> card to DUT -> power on ->
SSH as the provisioned user -> /etc/octopi_version -> /online.txt -> OctoPrint version
equals the image's -> `sudo service octoprint restart` -> reflash resets; an injected
write error surfaces in the writer.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from twin_support import image, image_octoprint, wait_online, write_config

from rig.card.provision import ProvisionSettings, provision_card
from rig.card.writer import write_image
from rig.config import RigConfig
from rig.device.ssh import SSHShell
from rig.errors import InfraError
from rig.events import StepLog
from rig.hardware.sequences import to_dut, to_host
from rig.root import Rig
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import ensure_twin, read_status, stop_twin

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "octopi-1.1.0"


def _flash_and_boot(config: RigConfig, device: str, img: Path) -> None:
    rig = Rig.from_config(config)
    power, mux, log = rig.power(device), rig.mux(device), StepLog()
    disk = to_host(power, mux, log)
    write_image(img, disk, log=log)
    provision_card(disk, ProvisionSettings.from_config(config, device), log=lambda _m: None)
    to_dut(power, mux, log)


def _status(config: RigConfig, device: str, phases: tuple[str, ...], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in (read_status(config) or {}).get("devices", []):
            if d["device"] == device and d["phase"] in phases:
                return d
        time.sleep(0.1)
    raise AssertionError(f"{device} never reached {phases}: {read_status(config)}")


def _shell(config: RigConfig, device: str, tmp_path: Path) -> SSHShell:
    dev = config.devices[device]
    shell = SSHShell(
        dev.host,
        port=dev.ssh_port,
        user=config.user.name,
        password=config.user.password.reveal(),
        known_hosts=tmp_path / "known_hosts",
        host_keys="ignore",
        name=device,
    )
    shell.wait_reachable(timeout=60, interval=0.2)
    return shell


def test_flash_provision_boot_login_restart_reflash(tmp_path: Path) -> None:
    require_sandbox()
    config = write_config(tmp_path)
    dev = config.devices["pi3-a"]
    img = image(IMAGE)
    ensure_twin(config)
    try:
        _flash_and_boot(config, "pi3-a", img)
        st = _status(config, "pi3-a", ("up", "unreachable", "failed"))
        assert st["phase"] == "up", st
        shell = _shell(config, "pi3-a", tmp_path)
        assert shell.run("cat /etc/octopi_version").stdout.strip() == "1.1.0"
        assert shell.run("id -un").stdout.strip() == config.user.name
        shell.put_text("~/marker", "before reflash\n")
        wait_online(dev.host, dev.http_port)
        assert httpx.get(f"http://{dev.host}:{dev.http_port}/online.txt").status_code == 200
        st = _status(config, "pi3-a", ("up",))
        assert st["octoprint_version"] == image_octoprint(IMAGE)
        pid = st["pid"]
        shell.run("sudo service octoprint restart")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _status(config, "pi3-a", ("up",))["pid"] in (
            pid,
            None,
        ):
            time.sleep(0.1)
        assert _status(config, "pi3-a", ("up",))["pid"] not in (pid, None)
        wait_online(dev.host, dev.http_port)
        shell.close()

        # reflash: the card's state goes with it
        _flash_and_boot(config, "pi3-a", img)
        _status(config, "pi3-a", ("up",))
        shell = _shell(config, "pi3-a", tmp_path)
        assert shell.read_bytes("~/marker") is None
        shell.close()
    finally:
        stop_twin(config)


def test_injected_write_error_surfaces_in_the_writer(tmp_path: Path) -> None:
    from rig.virtual.hw.state import write_fault_available

    if not write_fault_available():
        pytest.skip("write_error_at needs loop devices and device-mapper or /dev/fuse")
    config = write_config(tmp_path, {"faults": {"pi3-b": {"write_error_at": 8 * 1024 * 1024}}})
    try:
        power, mux = Rig.from_config(config).power("pi3-b"), Rig.from_config(config).mux("pi3-b")
        disk = to_host(power, mux, StepLog())
        with pytest.raises(InfraError) as err:
            write_image(image(IMAGE), disk, log=StepLog())
        assert "8388608" in str(err.value) or "byte" in str(err.value)
    finally:
        stop_twin(config)
