"""A real SSH server (paramiko's server side) for the device tests.

Speaks the SSH protocol for password auth, exec (through bash, in a home
directory) and SFTP open/read/write/chmod; the client under test is unchanged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko


class _Server(paramiko.ServerInterface):
    def __init__(self, owner: SSHServer) -> None:
        self.owner = owner

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (self.owner.user, self.owner.password)
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command: bytes) -> bool:
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    def _exec(self, channel, command: str) -> None:
        # let paramiko send the exec request's success reply before any output
        time.sleep(0.05)
        home = self.owner.home
        proc = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            cwd=home,
            env={**os.environ, "HOME": str(home)},
        )
        channel.sendall(proc.stdout)
        channel.sendall_stderr(proc.stderr)
        channel.send_exit_status(proc.returncode)
        channel.close()


class _Handle(paramiko.SFTPHandle):
    pass


class _SFTP(paramiko.SFTPServerInterface):
    def __init__(self, server, *args, **kwargs) -> None:
        super().__init__(server, *args, **kwargs)
        self.home: Path = server.owner.home

    def _path(self, path: str) -> Path:
        return Path(path) if path.startswith("/") else self.home / path

    def open(self, path: str, flags: int, attr):
        p = self._path(path)
        try:
            if flags & (os.O_WRONLY | os.O_RDWR):
                f = p.open("wb" if flags & os.O_TRUNC or flags & os.O_CREAT else "r+b")
            else:
                f = p.open("rb")
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno)
        handle = _Handle(flags)
        handle.readfile = f
        handle.writefile = f
        return handle

    def stat(self, path: str):
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._path(path)))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno)

    lstat = stat

    def chattr(self, path: str, attr) -> int:
        os.chmod(self._path(path), attr.st_mode)
        return paramiko.SFTP_OK

    def canonicalize(self, path: str) -> str:
        return str(self._path(path))


class SSHServer:
    """Listens on 127.0.0.1:<port>; ``host_key`` can be swapped to simulate a re-flash."""

    def __init__(self, home: Path, user: str = "pi", password: str = "raspberry") -> None:
        self.home, self.user, self.password = home, user, password
        self.host_key = paramiko.RSAKey.generate(2048)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._transports: list[paramiko.Transport] = []

    def start(self) -> SSHServer:
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = paramiko.Transport(conn)
            t.add_server_key(self.host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _SFTP)
            server = _Server(self)
            try:
                t.start_server(server=server)
            except (paramiko.SSHException, EOFError, OSError):
                # a client that gave up mid-handshake (its banner timeout on a loaded machine):
                # an sshd drops that connection and serves the next, it does not stop listening
                t.close()
                continue
            self._transports.append(t)

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
        for t in self._transports:
            t.close()
