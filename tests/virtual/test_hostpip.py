"""The host's pip settings reach a device as PIP_* variables naming paths under /run/rig-host,
each bound read-only from the host: nothing of the host is copied onto the card."""

from __future__ import annotations

from pathlib import Path

import pytest

import rig.virtual.hostpip as hostpip
from rig.virtual.hostpip import INSIDE, bwrap_binds, host_pip


def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("PIP_")] + list(hostpip.NETWORK_ENV):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(hostpip, "GLOBAL_CONF", tmp_path / "etc-pip.conf")


def test_site_config_and_environment_become_device_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    xdg = tmp_path / "xdg"
    (xdg / "pip").mkdir(parents=True)
    (xdg / "pip" / "pip.conf").write_text(
        f"[global]\ncert = {ca}\nconstraint = {constraints}\nindex-url = https://pypi.org/simple\n"
    )
    _clean(monkeypatch, tmp_path)
    # /etc/pip.conf is read after the XDG files: its timeout wins over theirs
    (xdg / "pip" / "pip.conf").write_text((xdg / "pip" / "pip.conf").read_text() + "timeout = 10\n")
    (tmp_path / "etc-pip.conf").write_text("[global]\ntimeout = 60\n")
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(xdg))
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheels} file:///nonexistent/simple")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "180")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))

    pip = host_pip()

    assert pip.env["PIP_CERT"] == f"{INSIDE}{ca}"
    assert pip.env["PIP_CONSTRAINT"] == f"{INSIDE}{constraints}"
    assert pip.env["PIP_INDEX_URL"] == "https://pypi.org/simple"  # not a path: as it is
    assert pip.env["PIP_FIND_LINKS"] == f"{INSIDE}{wheels} file:///nonexistent/simple"
    assert pip.env["PIP_DEFAULT_TIMEOUT"] == "180"
    assert pip.env["PIP_TIMEOUT"] == "60"
    assert pip.env["SSL_CERT_FILE"] == f"{INSIDE}{ca}"
    assert pip.binds == {
        str(ca): f"{INSIDE}{ca}",
        str(constraints): f"{INSIDE}{constraints}",
        str(wheels): f"{INSIDE}{wheels}",
    }
    args = bwrap_binds(pip.binds)
    # read-only, and every directory on the way made readable for uid 1000
    assert args.count("--ro-bind") == 3 and "--bind" not in args
    dirs = [args[i + 3] for i, a in enumerate(args) if a == "--perms" and args[i + 2] == "--dir"]
    assert f"{INSIDE}{tmp_path}" in dirs and all(d.startswith(INSIDE) for d in dirs)


def test_no_settings_means_nothing_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch, tmp_path)
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    pip = host_pip()
    assert pip.env == {} and pip.binds == {} and bwrap_binds(pip.binds) == []
