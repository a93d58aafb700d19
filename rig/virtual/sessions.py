"""SSH logins into a virtual Pi: who may log in, and each session run inside the device.

The device's sshd (rig.virtual.sshd) asks here: a password is checked against
the crypt hash the card's boot gave the user (unless the card turned password
logins off), a key against the user's ``~/.ssh/authorized_keys`` on the card.
Every command runs with the user's environment inside the device's sandbox; a
login with a terminal gets a pty of the device's own ``/dev/pts``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
from typing import TYPE_CHECKING

import paramiko

from rig.errors import InfraError
from rig.virtual.sandbox import Sandbox
from rig.virtual.sshd import Pty, pump_process, pump_pty

if TYPE_CHECKING:
    from rig.virtual.device import VirtualPi

log = logging.getLogger(__name__)

TIOCGPTPEER = 0x5441  # Linux >= 4.13: the slave of a master, whatever mount it lives in
TIOCSPTLCK = 0x40045431


class Sessions:
    """The login checks and sessions of one device (read at each login: a reboot may
    have changed the users)."""

    def __init__(self, device: VirtualPi) -> None:
        self._pi = device

    def check_password(self, user: str, password: str) -> bool:
        from rig.virtual.firstboot import check_password

        outcome = self._pi.outcome
        if outcome is None or not outcome.ssh_password_auth:
            return False
        hashed = outcome.users.get(user)
        return bool(hashed) and check_password(hashed, password)

    def authorized_keys(self, user: str) -> list[paramiko.PKey]:
        pi = self._pi
        layout, outcome = pi.layout, pi.outcome
        if layout is None or outcome is None or user not in outcome.users:
            return []
        path = layout.host_path(layout.home_of(user)) / ".ssh" / "authorized_keys"
        keys: list[paramiko.PKey] = []
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and not line.startswith("#"):
                    with contextlib.suppress(Exception):
                        keys.append(
                            paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
                        )
        return keys

    def run(
        self, user: str, argv: list[str], channel: paramiko.Channel, pty: Pty | None = None
    ) -> None:
        """One session's command in the device; the exit status goes back to the client."""
        box, layout = self._pi.sandbox, self._pi.layout
        group = None
        try:
            if box is None or box.pid is None or layout is None:
                channel.close()
                return
            env = layout.environment(user)
            cwd = layout.home_of(user)
            # one Pi 3 core per session (pi3 profile): a single-threaded pip is as slow as there
            if pty is not None:
                env["TERM"] = pty.term
            group = box.cgroup.leaf("session") if box.cgroup else None
            cmd = box.command(argv, cwd=cwd, env=env, group=group)
            if pty is not None:
                rc = _run_on_pty(box, cmd, channel, pty)
            else:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                rc = pump_process(proc, channel)
            if box.pid is None:  # power cut: the connection just drops
                channel.close()
                return
            channel.send_exit_status(rc if rc is not None and rc >= 0 else 128 - (rc or 0))
            channel.shutdown_write()
            channel.close()
        except (OSError, EOFError, paramiko.SSHException, InfraError) as e:  # client gone
            log.warning("%s: session ended: %s", self._pi.spec.name, e)
            with contextlib.suppress(Exception):
                channel.close()
        finally:
            if group is not None and box is not None and box.cgroup is not None:
                box.cgroup.release(group)


def _run_on_pty(box: Sandbox, cmd: list[str], channel: paramiko.Channel, pty: Pty) -> int | None:
    """A login with a terminal: the pty becomes the session's controlling terminal."""
    import fcntl
    import termios

    master, slave = _device_pty(box)
    pty.master = master
    pty.apply_size()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
    finally:
        os.close(slave)
    try:
        return pump_pty(proc, master, channel)
    finally:
        pty.master = None
        os.close(master)


def _device_pty(box: Sandbox) -> tuple[int, int]:
    """A terminal from the device's own /dev/pts (so `tty` names it inside), else the host's."""
    import fcntl
    import struct

    try:
        master = os.open(f"/proc/{box.pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, int(slave)
