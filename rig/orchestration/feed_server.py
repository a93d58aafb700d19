"""Serve a product's release feed to the devices for the length of a run.

The profile supplies the ASGI app (only it knows what a release looks like to
its product); this module only picks an address the devices can reach and runs
uvicorn in a background thread.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from rig.errors import InfraError


def reachable_address(device_host: str, port: int = 22) -> str:
    """The local address the kernel would use to reach a device (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((device_host, port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class FeedServer:
    def __init__(self, app, bind: str, advertise: str, port: int = 0) -> None:
        self.app = app
        self.bind = bind
        self.advertise = advertise
        self.port = port
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the URL devices use."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.bind, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True, name="release-feed"
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise InfraError(f"release feed did not start on {self.bind}:{self.port}")
            time.sleep(0.02)
        return f"http://{self.advertise}:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(5)
