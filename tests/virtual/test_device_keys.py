"""SSH keys the provisioning put on the card (Imager's firstrun.sh) are the device's
authorized_keys: that key logs in, another is refused."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest
import yaml
from twin_support import flash, image, wait_phase, write_config

from rig.card.provision import ProvisionSettings, provision_card
from rig.config import load_config
from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import access_point

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _connect(spec: DeviceSpec, key: paramiko.PKey) -> paramiko.SSHClient:
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    c.connect(
        spec.host,
        spec.ssh_port,
        "pi",
        pkey=key,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return c


def test_provisioned_key_logs_in_and_another_is_refused(tmp_path: Path) -> None:
    require_sandbox()
    key, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    base = write_config(tmp_path)
    raw = yaml.safe_load(Path(base.source).read_text())
    raw["user"] = {**raw["user"], "ssh_keys": [f"{key.get_name()} {key.get_base64()} rig-test"]}
    Path(base.source).write_text(yaml.safe_dump(raw))
    config = load_config(base.source)
    card = tmp_path / "card.img"
    flash(image("octopi-1.1.0"), card)
    settings = ProvisionSettings.from_config(config, "pi3-c")
    provision_card(card, settings, scheme="firstrun", log=lambda _m: None)
    spec = DeviceSpec.from_config(config.devices["pi3-c"])
    pi = VirtualPi(
        spec,
        card=lambda: card,
        state_dir=config.paths.state / "virtual",
        ap=access_point(config),
        settings=settings_from_config(config),
    )
    pi.power_on()
    try:
        wait_phase(pi, ("up", "unreachable", "failed"))
        assert pi.phase == "up", pi.reason
        with _connect(spec, key) as c:
            _, out, _ = c.exec_command("id -un; cat ~/.ssh/authorized_keys")
            text = out.read().decode()
        assert text.startswith("pi\n") and key.get_base64() in text
        with pytest.raises(paramiko.AuthenticationException):
            _connect(spec, other)
    finally:
        pi.power_cut()
