"""The HTTP front of a virtual Pi: what haproxy is on OctoPi.

OctoPi runs OctoPrint on 127.0.0.1:5000 behind haproxy on port 80; while
OctoPrint is down (starting, restarting after an update) haproxy answers
503. This forwarder does the same on the device's address, byte for byte
(websockets included), and is what a Wi-Fi drop or a power cut closes: with
no network namespace per device, closing the front is how the device leaves
the network.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from rig.virtual.listener import accept_in_background, listen

UNAVAILABLE = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    b"Cache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n"
    b"<html><body><h1>503 Service Unavailable</h1>\n"
    b"OctoPrint is currently not running.</body></html>\n"
)
BAD_GATEWAY = (
    b"HTTP/1.0 502 Bad Gateway\r\n"
    b"Cache-Control: no-cache\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n"
    b"<html><body><h1>502 Bad Gateway</h1>\n"
    b"The server returned an invalid or incomplete response.</body></html>\n"
)


class HttpFront:
    def __init__(self, name: str, address: str, port: int, backend: tuple[str, int]) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.backend = backend
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        self._sock = listen(self.address, self.port, f"device {self.name} http", 64)
        accept_in_background(self._sock, self._stopped, self._serve, f"{self.name}-http")

    def _track(self, *socks: socket.socket) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            self._conns.update(socks)
            return True

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.backend, timeout=5)
        except OSError:
            _refuse(client)
            return
        upstream.settimeout(None)
        if not self._track(client, upstream):
            client.close()
            upstream.close()
            return
        t = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
        t.start()
        if _pipe(upstream, client, shut=False) == 0:
            # OctoPrint closed without answering (its start-up server handing over)
            with contextlib.suppress(OSError):
                client.sendall(BAD_GATEWAY)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        t.join()
        with self._lock:
            self._conns.discard(client)
            self._conns.discard(upstream)
        client.close()
        upstream.close()

    def stop(self) -> None:
        self._stopped.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def _pipe(src: socket.socket, dst: socket.socket, shut: bool = True) -> int:
    sent = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            sent += len(data)
    except OSError:
        pass
    if shut:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    return sent


def _refuse(client: socket.socket) -> None:
    """Answer 503 after reading the request, so the client sees the answer, not a reset."""
    with contextlib.suppress(OSError):
        client.settimeout(2)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
        client.sendall(UNAVAILABLE)
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass
    client.close()
