"""The card is the device: a virtual OctoPi runs its image's own Debian and Python from
its card's root file system; what the device changes is on the card, and a reflash
brings back the image as shipped."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
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

from rig.virtual.card import Card
from rig.virtual.device import DeviceSpec, VirtualPi
from rig.virtual.faults import settings_from_config
from rig.virtual.sandbox import require_sandbox
from rig.virtual.twin import access_point

pytestmark = [pytest.mark.slow, pytest.mark.root]

# image -> (Debian VERSION_ID, Python of /usr/bin/python3 and of ~/oprint/bin/python)
EXPECTED = {"octopi-1.0.0": ("11", "3.9"), "octopi-1.1.0": ("12", "3.11")}


@contextlib.contextmanager
def card_root(card: Path) -> Iterator[Path]:
    """The card's root file system, mounted read-only, as the host would see it."""
    part = Card(card).root
    assert part is not None
    with tempfile.TemporaryDirectory() as at:
        subprocess.run(
            ["mount", "-o", f"ro,loop,offset={part.offset},sizelimit={part.size}", str(card), at],
            check=True,
        )
        try:
            yield Path(at)
        finally:
            subprocess.run(["umount", at], check=True)


def boot(tmp: Path, name: str, device: str) -> SimpleNamespace:
    config = write_config(tmp)
    img = image(name)
    card = tmp / "card.img"
    flash(img, card)
    provision(card, config, device)
    spec = DeviceSpec.from_config(config.devices[device])
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
    up = time.monotonic() - t0
    online = wait_online(spec.host, spec.http_port, timeout=240)
    print(f"{name}: boot to SSH {up:.1f} s, then OctoPrint up after {online:.1f} s")
    return SimpleNamespace(
        config=config, pi=pi, spec=spec, card=card, img=img, password=config.user.password.reveal()
    )


def login(d: SimpleNamespace):
    return ssh(d.spec.host, d.spec.ssh_port, d.config.user.name, d.password)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_device_reports_its_image_s_debian_and_python_over_ssh(
    tmp_path: Path, name: str
) -> None:
    require_sandbox()
    debian, python = EXPECTED[name]
    d = boot(tmp_path, name, "pi3-c")
    try:
        with login(d) as c:
            rc, out, err = run(
                c,
                ". /etc/os-release; echo $VERSION_ID; "
                "/usr/bin/python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'; "
                "~/oprint/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'; "
                "id -u; touch /usr/bin/x 2>/dev/null && echo writable || echo read-only",
            )
        assert rc == 0, err
        assert out.split() == [debian, python, python, "1000", "read-only"]
        # what OctoPrint itself says it runs on
        log = (d.pi.host_path(d.pi.basedir) / "logs" / "octoprint.log").read_text()
        assert f"Detected environment is Python {python}." in log
        # nothing of the device lies beside its card: the state holds the mount point only,
        # and the console file, which is the flash host's end of the DUT's UART (its serial
        # adapter's capture), not the device's state
        d.pi.power_cut()
        devices = d.config.paths.state / "virtual" / "devices" / "pi3-c"
        left = [
            p for p in devices.rglob("*") if p not in (devices / "card-root", devices / "console")
        ]
        assert left == [] and not any((devices / "card-root").iterdir())
    finally:
        d.pi.power_cut()


def test_updates_land_on_the_card_and_a_reflash_brings_back_the_shipped_version(
    tmp_path: Path,
) -> None:
    require_sandbox()
    name, target = "octopi-1.0.0", "1.11.8"
    shipped = image_octoprint(name)
    d = boot(tmp_path, name, "pi3-c")
    try:
        with login(d) as c:
            rc, _, err = run(c, f"~/oprint/bin/pip install -q OctoPrint=={target}", timeout=900)
            assert rc == 0, err
            assert run(c, "echo mine > ~/left-over")[0] == 0
        d.pi.power_cut()
        with card_root(d.card) as root:  # the card as the host sees it, device off
            site = next((root / "home/pi/oprint/lib").glob("python3.*/site-packages"))
            dists = [x.name.lower() for x in site.glob("*.dist-info")]
            assert f"octoprint-{target}.dist-info" in dists
            assert (root / "home/pi/left-over").read_text() == "mine\n"
            assert (root / "home/pi/left-over").stat().st_uid == 1000
            used = subprocess.run(
                ["df", "--output=used", "-B1M", str(root)], capture_output=True, text=True
            ).stdout.split()[-1]
        print(f"card root file system in use after the update: {used} MiB")
        assert int(used) > 200  # a realistic card: Debian and a venv, not a few files
        flash(d.img, d.card)
        provision(d.card, d.config, "pi3-c")
        d.pi.power_on()
        wait_phase(d.pi, ("up", "unreachable", "failed"))
        assert d.pi.phase == "up", d.pi.reason
        assert d.pi.installed_octoprint() == shipped
        with login(d) as c:
            assert run(c, "test -e ~/left-over")[0] != 0
            rc, out, _ = run(
                c, "ls ~/oprint/lib/python3.*/site-packages | grep -i '^octoprint-'", timeout=60
            )
        assert out.lower().split() == [f"octoprint-{shipped}.dist-info"]
    finally:
        d.pi.power_cut()
