"""A virtual Pi's SSH server: the real protocol (paramiko), the provisioned users only.

Every session command runs with ``bash -c`` inside the device's sandbox as uid
1000, with stdin, stdout, stderr and the exit status carried over the channel.
SFTP is OpenSSH's own ``sftp-server`` run inside the sandbox over the channel,
so paths, symlinks and file ownership are the device's, never the host's.
A pty is given when the client asks for one (``ssh`` from a terminal), so an
interactive login behaves like one on a Pi.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from rig.virtual.listener import accept_in_background, listen
from rig.virtual.sandbox import SFTP_SERVER

log = logging.getLogger(__name__)


@dataclass
class Pty:
    """A terminal the client asked for; ``master`` is set once a process runs on it."""

    term: str
    width: int
    height: int
    master: int | None = None

    def apply_size(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                size = struct.pack("HHHH", self.height, self.width, 0, 0)
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)


# (user, argv, channel, pty or None) -> None; runs argv in the device, closes the channel
Runner = Callable[[str, list[str], paramiko.Channel, "Pty | None"], None]


def load_or_create_host_key(path: Path) -> paramiko.PKey:
    """The device's host key: made on the first boot of a card, kept until it is reflashed."""
    if path.exists():
        return paramiko.ECDSAKey.from_private_key_file(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = paramiko.ECDSAKey.generate(bits=256)
    key.write_private_key_file(str(path))
    return key


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: DeviceSSHServer) -> None:
        self.server = server
        self.user = ""
        self.ptys: dict[int, Pty] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_password(self, username: str, password: str) -> int:
        if self.server.check_password(username, password):
            self.user = username
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        for allowed in self.server.authorized_keys(username):
            if allowed.get_name() == key.get_name() and allowed.asbytes() == key.asbytes():
                self.user = username
                return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(
        self,
        channel: paramiko.Channel,
        term: bytes,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
        modes: bytes,
    ) -> bool:
        name = term.decode(errors="replace") if isinstance(term, bytes) else str(term)
        self.ptys[channel.get_id()] = Pty(name or "vt100", width or 80, height or 24)
        return True

    def check_channel_window_change_request(
        self,
        channel: paramiko.Channel,
        width: int,
        height: int,
        pixelwidth: int,
        pixelheight: int,
    ) -> bool:
        pty = self.ptys.get(channel.get_id())
        if pty is None:
            return False
        pty.width, pty.height = width, height
        pty.apply_size()
        return True

    def check_channel_env_request(
        self, channel: paramiko.Channel, name: bytes, value: bytes
    ) -> bool:
        return False  # OpenSSH's default AcceptEnv on Raspberry Pi OS is LANG LC_* only

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "replace")
        pty = self.ptys.get(channel.get_id())
        self.server.spawn(self.user, ["/bin/bash", "-c", text], channel, pty)
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        pty = self.ptys.get(channel.get_id())
        argv = ["/bin/bash", "-l", "-i"] if pty else ["/bin/bash", "-l"]
        self.server.spawn(self.user, argv, channel, pty)
        return True

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp" or not Path(SFTP_SERVER).exists():
            return False
        self.server.spawn(self.user, [SFTP_SERVER], channel, None)
        return True


class DeviceSSHServer:
    """Listens on the device's address while it is up and reachable; ``stop`` drops everyone."""

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        host_key: paramiko.PKey,
        check_password: Callable[[str, str], bool],
        authorized_keys: Callable[[str], list[paramiko.PKey]],
        runner: Runner,
    ) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.host_key = host_key
        self.check_password = check_password
        self.authorized_keys = authorized_keys
        self.runner = runner
        self._sock: socket.socket | None = None
        self._transports: set[paramiko.Transport] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        self._sock = listen(self.address, self.port, f"device {self.name} sshd", 16)
        accept_in_background(self._sock, self._stopped, self._serve, f"{self.name}-sshd")

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.local_version = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
        transport.add_server_key(self.host_key)
        with self._lock:
            if self._stopped.is_set():
                transport.close()
                return
            self._transports.add(transport)
        try:
            transport.start_server(server=_Interface(self))
            # paramiko keeps channels weakly: hold them, or they die before their request
            channels: list[paramiko.Channel] = []
            while transport.is_active() and not self._stopped.is_set():
                chan = transport.accept(timeout=1.0)  # served from their requests
                channels = [c for c in channels if not c.closed]
                if chan is not None:
                    channels.append(chan)
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.debug("%s: ssh connection ended: %s", self.name, e)
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)

    def spawn(self, user: str, argv: list[str], channel: paramiko.Channel, pty: Pty | None) -> None:
        threading.Thread(
            target=self.runner,
            args=(user, argv, channel, pty),
            name=f"{self.name}-exec",
            daemon=True,
        ).start()

    def stop(self) -> None:
        """Power cut or Wi-Fi gone: the port closes and open sessions die."""
        self._stopped.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with self._lock:
            transports = list(self._transports)
            self._transports.clear()
        for t in transports:
            t.close()


def pump_process(proc: subprocess.Popen[bytes], channel: paramiko.Channel) -> int | None:
    """Carry a process's stdio over an SSH channel; returns its exit status (None: killed)."""
    assert proc.stdin and proc.stdout and proc.stderr

    def to_process() -> None:
        try:
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                proc.stdin.write(data)
                proc.stdin.flush()
        except (OSError, ValueError, EOFError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def from_process(stream: object, send: Callable[[bytes], None]) -> None:
        try:
            while True:
                data = stream.read1(65536)  # type: ignore[attr-defined]
                if not data:
                    break
                send(data)
        except (OSError, ValueError, EOFError, paramiko.SSHException):
            pass

    threading.Thread(target=to_process, daemon=True).start()
    outs = [
        threading.Thread(target=from_process, args=(proc.stdout, channel.sendall), daemon=True),
        threading.Thread(
            target=from_process, args=(proc.stderr, channel.sendall_stderr), daemon=True
        ),
    ]
    for t in outs:
        t.start()
    rc = proc.wait()
    for t in outs:
        t.join(timeout=5)
    return rc


def pump_pty(proc: subprocess.Popen[bytes], master: int, channel: paramiko.Channel) -> int | None:
    """Carry a terminal session (one stream both ways) over an SSH channel."""

    def to_terminal() -> None:
        try:
            while True:
                data = channel.recv(65536)
                if not data:
                    break
                os.write(master, data)
        except (OSError, EOFError):
            pass

    threading.Thread(target=to_terminal, daemon=True).start()
    try:
        while True:
            data = os.read(master, 65536)  # EIO once the last process closed the terminal
            if not data:
                break
            channel.sendall(data)
    except (OSError, paramiko.SSHException):
        pass
    return proc.wait()
