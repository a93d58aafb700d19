"""The host's package-index settings, as a virtual Pi's pip sees them.

A real Pi reaches its index with its own ``/etc/pip.conf`` and certificate
store. On the virtual rig the index is reached the way *this machine* reaches
it (a company CA bundle, a constraint file, a local find-links directory), so
the device must use the host's settings, without copying host files onto its
card: the settings go in as ``PIP_*`` environment variables (pip's highest
priority after the command line) and every host file or directory they name is
bound read-only under ``/run/rig-host`` (a tmpfs, not the card).

Read: the site-wide configuration files pip reads on Linux (each directory of
``XDG_CONFIG_DIRS``/pip/pip.conf, then ``/etc/pip.conf``; later wins), then the
``PIP_*`` environment, then the certificate-bundle and proxy variables. The
root user's own ``~/.config/pip`` is not the device user's and is not read.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

INSIDE = "/run/rig-host"
GLOBAL_CONF = Path("/etc/pip.conf")  # read after the XDG ones, so it wins
NETWORK_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


@dataclass
class HostPip:
    """Environment for the device and the host paths to bind (host path -> inside path)."""

    env: dict[str, str] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)


def site_config_files() -> list[Path]:
    dirs = os.environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in dirs.split(":") if d]
    files.append(GLOBAL_CONF)
    return [f for f in files if f.is_file()]


def _from_files(files: list[Path]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for f in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(f)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                for key, value in parser.items(section):
                    env = "PIP_" + key.upper().replace("-", "_")
                    settings[env] = " ".join(value.split())
    return settings


def host_pip() -> HostPip:
    """The host's pip settings, rewritten to the paths they have inside a device."""
    raw = _from_files(site_config_files())
    raw.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    raw.update({k: os.environ[k] for k in NETWORK_ENV if k in os.environ})
    out = HostPip()
    for key, value in raw.items():
        out.env[key] = " ".join(_rewrite(token, out.binds) for token in value.split(" "))
    return out


def _rewrite(token: str, binds: dict[str, str]) -> str:
    scheme = "file://" if token.startswith("file://") else ""
    path = token.removeprefix(scheme)
    if not path.startswith("/") or not os.path.exists(path):
        return token
    inside = INSIDE + os.path.realpath(path)
    binds[os.path.realpath(path)] = inside
    return scheme + inside


def bwrap_binds(binds: dict[str, str]) -> list[str]:
    """bwrap arguments binding ``binds`` read-only, their directories readable by uid 1000
    (bwrap makes missing directories 0700 for root otherwise)."""
    args: list[str] = []
    made: set[str] = set()
    for host, inside in sorted(binds.items(), key=lambda kv: kv[1]):
        parts = inside.rsplit("/", 1)[0].strip("/").split("/")
        for i in range(2, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in made:
                made.add(d)
                args += ["--perms", "0755", "--dir", d]
        args += ["--ro-bind", host, inside]
    return args
