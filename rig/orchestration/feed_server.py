"""Where the devices reach the rig: the address to advertise for the release feed."""

from __future__ import annotations

import socket


def reachable_address(device_host: str, port: int = 22) -> str:
    """The local address the kernel would use to reach a device (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((device_host, port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
