"""Helpers for the virtual Pi tests: real images, real provisioning, real SSH and HTTP."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import paramiko
import yaml

from rig.config import VIRTUAL_CONFIG, RigConfig, load_config

# the tests' virtual Pis live on their own addresses, away from a developer's `rig twin up`
# (RIG_TEST_NET moves them, so two checkouts can run their suites side by side)
TEST_NET = os.environ.get("RIG_TEST_NET", "127.0.77")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rig" / "test-virtual-images"


def image(name: str) -> Path:
    """The virtual OctoPi image ``name`` built from its recipe (cached between runs)."""
    from rig.virtual.images import build_image

    return build_image(name, name, cache_dir())


def image_octoprint(name: str) -> str:
    from rig.card.catalog import load_catalog

    return load_catalog().get(name).virtual.version


def write_config(tmp_path: Path, virtual: dict[str, Any] | None = None) -> RigConfig:
    devices = {}
    for name, dev in VIRTUAL_CONFIG["devices"].items():
        host = dev["host"].rsplit(".", 1)[1]
        devices[name] = {**dev, "host": f"{TEST_NET}.{host}"}
    data = {
        "devices": devices,
        "wifi": VIRTUAL_CONFIG["wifi"],
        "user": VIRTUAL_CONFIG["user"],
        "paths": {"state": str(tmp_path / "state"), "reports": str(tmp_path / "reports")},
        "virtual": {"boot_delay": 0.2, **(virtual or {})},
    }
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def flash(image_path: Path, card: Path) -> None:
    """What the writer leaves on the card (the writer itself is tested elsewhere)."""
    card.parent.mkdir(parents=True, exist_ok=True)
    tmp = card.with_suffix(".tmp")
    # sparse, like the writer, which skips the image's unused blocks
    subprocess.run(["cp", "--sparse=always", str(image_path), str(tmp)], check=True)
    os.replace(tmp, card)


def provision(card: Path, config: RigConfig, device: str) -> None:
    from rig.card.provision import ProvisionSettings, provision_card

    provision_card(card, ProvisionSettings.from_config(config, device), log=lambda _m: None)


def wait_phase(pi: Any, phases: tuple[str, ...], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pi.phase in phases:
            return
        time.sleep(0.05)
    raise AssertionError(f"{pi.spec.name} stayed {pi.phase} ({pi.reason}), wanted {phases}")


def ssh(host: str, port: int, user: str, password: str) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host, port, user, password, look_for_keys=False, allow_agent=False, timeout=10)
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 300) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=timeout)
    o, e = out.read().decode(), err.read().decode()
    return out.channel.recv_exit_status(), o, e


def wait_online(host: str, port: int, timeout: float = 90) -> float:
    """Seconds until GET /online.txt answers 200 (OctoPi's liveness URL)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(f"http://{host}:{port}/online.txt", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"http://{host}:{port}/online.txt not 200 within {timeout} s")


def tree_digest(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``path``: (inode, size, content hash) — to prove a tree unchanged."""
    import hashlib

    out: dict[str, tuple[int, int, bytes]] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p.relative_to(path))] = (
                st.st_ino,
                st.st_size,
                hashlib.sha1(p.read_bytes()).digest(),
            )
    return out
