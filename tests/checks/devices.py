"""A device for the plugin's tests: a real SSH server and a real HTTP server on loopback.

Both speak their real protocols (paramiko's server side, Python's HTTP server); only the
Raspberry Pi behind them is missing, which the plugin cannot tell.
"""

from __future__ import annotations

import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "device"))
from sshserver import SSHServer

USER, PASSWORD = "pi", "device-password-5512"
ADMIN_PASSWORD = "admin-password-7781"
PAGE = "<!doctype html><title>the device</title><h1 id=hello>hello from the device</h1>"


class Device:
    """SSH (home directory ``home``) and HTTP (serving ``www``) of one loopback 'device'."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.www = root / "www"
        self.home.mkdir(parents=True)
        self.www.mkdir(parents=True)
        (self.www / "index.html").write_text(PAGE)
        self.ssh = SSHServer(self.home, USER, PASSWORD).start()
        handler = functools.partial(_Quiet, directory=str(self.www))
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    def rig_yaml(self, path: Path, name: str = "dut") -> Path:
        """A rig.yaml whose one device is this one (power and mux never touched here)."""
        data = {
            "devices": {
                name: {
                    "power": {"driver": "command", "on": "true", "off": "true"},
                    "mux": {"driver": "usb-sd-mux", "serial": "000000000099"},
                    "host": "127.0.0.1",
                    "ssh_port": self.ssh.port,
                    "http_port": self.http_port,
                }
            },
            "wifi": {"ssid": "lab", "psk": "lab-psk-123", "country": "DE"},
            "user": {"name": USER, "password": PASSWORD},
            "admin": {"name": "boss", "password": ADMIN_PASSWORD},
            "ssh": {"host_keys": "ignore"},
        }
        path.write_text(yaml.safe_dump(data))
        return path

    def stop(self) -> None:
        self.ssh.stop()
        self.http.shutdown()
        self.http.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass
