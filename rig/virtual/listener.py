"""A virtual device's listening sockets: bind its own address, one thread per connection.

Both the device's SSH server and its HTTP front use this; a second virtual rig
on the same address gets a clear error instead of a silent takeover.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from rig.errors import InfraError


def listen(address: str, port: int, where: str, backlog: int = 16) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        raise InfraError(
            f"cannot listen on {address}:{port}: {e.strerror}",
            where=where,
            hint="another virtual rig (or program) uses this address; `rig twin down`",
        ) from e
    sock.listen(backlog)
    return sock


def accept_in_background(
    sock: socket.socket,
    stopped: threading.Event,
    serve: Callable[[socket.socket], None],
    name: str,
) -> None:
    """Accept until the socket is closed or ``stopped`` is set; each connection in a thread."""

    def loop() -> None:
        while not stopped.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, name=name, daemon=True).start()
