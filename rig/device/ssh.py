"""SSH to a device with paramiko: wait until it answers, run commands, write files.

Freshly flashed devices get a new host key on every flash, so the host-key policy
is explicit (config `ssh.host_keys`):

- ``accept-new`` (default): trust a key on first contact and remember it; a
  *changed* key is refused (the rig forgets a device's key when it flashes it,
  see `forget_host_key`).
- ``strict``: only keys already in the known-hosts file.
- ``ignore``: accept anything, remember nothing (a lab network you trust).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import paramiko

from rig.device.shell import CommandResult, Log, check_result, log_result
from rig.errors import ConfigError, InfraError

HOST_KEY_POLICIES = ("accept-new", "strict", "ignore")


def default_known_hosts() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "rig" / "known_hosts"


def _host_id(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def forget_host_key(host: str, port: int = 22, known_hosts: Path | None = None) -> None:
    """Drop a device's remembered key: call after flashing it (its key is new)."""
    path = known_hosts or default_known_hosts()
    if not path.exists():
        return
    keys = paramiko.HostKeys(str(path))
    hid = _host_id(host, port)
    if hid in keys:
        del keys[hid]
        keys.save(str(path))


def learn_host_keys(
    host: str, port: int, public_keys: Iterable[str], known_hosts: Path | None = None
) -> None:
    """Remember a device's host keys the rig wrote to its card itself ("ssh-ed25519 AAAA...")
    in place of whatever was known: the first connection is then checked, not trusted."""
    path = known_hosts or default_known_hosts()
    keys = paramiko.HostKeys(str(path)) if path.exists() else paramiko.HostKeys()
    hid = _host_id(host, port)
    if hid in keys:
        del keys[hid]
    for line in public_keys:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{hid} {line}")
        if entry is not None and entry.key is not None:
            keys.add(hid, entry.key.get_name(), entry.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys.save(str(path))


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust an unknown key and save it; paramiko itself refuses changed keys."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        client.get_host_keys().save(str(self.path))


class SSHShell:
    """A connected SSH session to one device (see rig.device.shell.DeviceShell)."""

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        user: str = "pi",
        password: str | None = None,
        key_filename: str | None = None,
        host_keys: str = "accept-new",
        known_hosts: Path | None = None,
        name: str | None = None,
        log: Log | None = None,
    ) -> None:
        if host_keys not in HOST_KEY_POLICIES:
            raise ConfigError(
                f"unknown host key policy {host_keys!r}",
                where="ssh.host_keys",
                hint="use one of " + ", ".join(HOST_KEY_POLICIES),
            )
        self.host, self.port, self.user = host, port, user
        self.password, self.key_filename = password, key_filename
        self.host_keys = host_keys
        self.known_hosts = known_hosts or default_known_hosts()
        self.where = f"{name or host} (ssh {user}@{host}:{port})"
        self.log = log
        self._client: paramiko.SSHClient | None = None

    # -- connecting -----------------------------------------------------------

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.host_keys == "ignore":
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            if self.known_hosts.exists():
                client.load_host_keys(str(self.known_hosts))
            if self.host_keys == "strict":
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            else:
                client.set_missing_host_key_policy(_AcceptNew(self.known_hosts))
        return client

    def connect(self, timeout: float = 10) -> None:
        """One attempt; raises InfraError with the reason (refused, timeout, auth, host key)."""
        client = self._new_client()
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                password=self.password,
                key_filename=self.key_filename,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=self.key_filename is None and self.password is None,
            )
        except paramiko.BadHostKeyException as e:
            client.close()
            raise InfraError(
                "host key changed: the device presents a different key than remembered",
                where=self.where,
                hint=f"if the device was re-flashed, remove its line from {self.known_hosts} "
                "(rig forgets keys when it flashes); or set ssh.host_keys: ignore",
            ) from e
        except paramiko.AuthenticationException as e:
            client.close()
            raise InfraError(
                f"authentication failed for user {self.user!r}",
                where=self.where,
                hint="check the provisioned user/password or SSH key (config `user`)",
            ) from e
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise InfraError(
                    "unknown host key and ssh.host_keys is strict",
                    where=self.where,
                    hint=f"add the key to {self.known_hosts} or use accept-new",
                ) from e
            raise InfraError(f"SSH protocol error: {e}", where=self.where) from e
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            client.close()
            refused = all(isinstance(x, ConnectionRefusedError) for x in e.errors.values())
            reason = "connection refused (sshd not up yet?)" if refused else f"cannot connect: {e}"
            raise InfraError(reason, where=self.where) from e
        except ConnectionRefusedError as e:
            client.close()
            raise InfraError("connection refused (sshd not up yet?)", where=self.where) from e
        except TimeoutError as e:
            client.close()
            raise InfraError("connection timed out", where=self.where) from e
        except OSError as e:
            client.close()
            raise InfraError(f"cannot connect: {e.strerror or e}", where=self.where) from e
        self._client = client

    def wait_reachable(self, timeout: float = 300, interval: float = 2) -> None:
        """Retry until SSH works; a changed host key fails at once, others at the deadline."""
        deadline = time.monotonic() + timeout
        last: InfraError | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.connect(timeout=max(1.0, min(10.0, remaining)))
                if self.log:
                    self.log(f"ssh: connected to {self.where}")
                return
            except InfraError as e:
                if e.message.startswith(("host key changed", "unknown host key")):
                    raise
                last = e
            if time.monotonic() + interval >= deadline:
                raise InfraError(
                    f"not reachable over SSH within {timeout:.0f}s; last error: {last.message}",
                    where=self.where,
                    hint=last.hint or "is the device booted and on the network?",
                )
            time.sleep(interval)

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- using ----------------------------------------------------------------

    def run(
        self, command: str, *, timeout: float = 300, check: bool = True, quiet: bool = False
    ) -> CommandResult:
        start = time.monotonic()
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                self.close()
                transport = self.client.get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=30)
            chan.settimeout(1.0)
            chan.exec_command(command)
            out, err = bytearray(), bytearray()
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready():
                    while chan.recv_ready():
                        out += chan.recv(65536)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                    break
                else:
                    if time.monotonic() - start > timeout:
                        chan.close()
                        raise InfraError(
                            f"command timed out after {timeout:.0f}s: {command}",
                            where=self.where,
                        )
                    time.sleep(0.02)
            status = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError) as e:
            raise InfraError(f"SSH failed while running {command!r}: {e}", where=self.where) from e
        result = CommandResult(
            command,
            status,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - start,
        )
        log_result(self.log, result, quiet)
        return check_result(result, self.where) if check else result

    @staticmethod
    def _sftp_path(path: str) -> str:
        # SFTP paths are relative to the login directory, which is home
        return path[2:] if path.startswith("~/") else path

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            self.run(f"mkdir -p {parent}", quiet=True)
        try:
            with self.client.open_sftp() as sftp:
                with sftp.open(self._sftp_path(path), "w") as f:
                    f.write(text.encode())
                sftp.chmod(self._sftp_path(path), mode)
        except (paramiko.SSHException, OSError) as e:
            raise InfraError(f"cannot write {path}: {e}", where=self.where) from e
        if self.log:
            self.log(f"wrote {path} ({len(text)} bytes)")

    def read_bytes(self, path: str, offset: int = 0) -> bytes | None:
        try:
            with self.client.open_sftp() as sftp, sftp.open(self._sftp_path(path), "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, OSError) as e:
            raise InfraError(f"cannot read {path}: {e}", where=self.where) from e
