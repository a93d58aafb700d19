"""The device shell: the few things a profile does on a device, whatever carries them.

Profiles talk to a `DeviceShell`; over the network that is `rig.device.ssh.SSHShell`,
and for an OctoPrint started on this machine (tests, a local sandbox) it is
`LocalShell`, which runs the very same command lines through bash with the
device's home directory. Every command and its output go to the scenario log.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rig.config import mask
from rig.errors import InfraError

Log = Callable[..., None]


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def tail(self, lines: int = 15) -> str:
        """The end of the output, for error messages."""
        text = (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()
        return "\n".join(text.splitlines()[-lines:])


class DeviceShell(Protocol):
    """What a profile may do on a device."""

    where: str  # device name, for error messages

    def run(
        self, command: str, *, timeout: float = 300, check: bool = True, quiet: bool = False
    ) -> CommandResult:
        """Run a shell command line; raise InfraError on a non-zero exit when check."""

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file on the device (``~`` is the device user's home)."""

    def read_bytes(self, path: str, offset: int = 0) -> bytes | None:
        """A file's bytes from ``offset``; None when it does not exist."""

    def close(self) -> None: ...


def log_result(log: Log | None, result: CommandResult, quiet: bool = False) -> None:
    """Command, status and (unless quiet) output into the scenario log."""
    if log is None:
        return
    command = mask(result.command)  # a secret in a command line is logged as ***
    log(
        f"$ {command}  -> exit {result.exit_status} ({result.duration:.1f}s)",
        command=command,
        exit_status=result.exit_status,
    )
    if not quiet:
        for stream in (result.stdout, result.stderr):
            for line in stream.splitlines()[-40:]:
                log(f"  | {mask(line)}")


def check_result(result: CommandResult, where: str) -> CommandResult:
    if not result.ok:
        raise InfraError(
            mask(
                f"command failed with exit {result.exit_status}: {result.command}\n{result.tail()}"
            ),
            where=where,
        )
    return result


class LocalShell:
    """A device whose 'home' is a directory on this machine.

    Runs the same command lines as SSH would, through ``bash -c`` with HOME set to
    ``home`` and, optionally, a wrapper in front (e.g. bwrap into a user namespace so
    that OctoPrint does not run as root). Used by the tests and for a local OctoPrint;
    documented as such, not a stand-in for SSH's failure modes.
    """

    def __init__(
        self,
        home: Path,
        *,
        name: str = "local",
        log: Log | None = None,
        wrapper: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.where = name
        self.log = log
        self.wrapper = list(wrapper)
        self.env = {**os.environ, "HOME": str(self.home), **(env or {})}

    def _path(self, path: str) -> Path:
        if path.startswith("~/"):
            return self.home / path[2:]
        return Path(path)

    def run(
        self, command: str, *, timeout: float = 300, check: bool = True, quiet: bool = False
    ) -> CommandResult:
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [*self.wrapper, "bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env,
                cwd=self.home,
            )
        except subprocess.TimeoutExpired as e:
            raise InfraError(
                f"command timed out after {timeout:.0f}s: {command}", where=self.where
            ) from e
        result = CommandResult(
            command, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start
        )
        log_result(self.log, result, quiet)
        return check_result(result, self.where) if check else result

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
        if self.log:
            self.log(f"wrote {path} ({len(text)} bytes)")

    def read_bytes(self, path: str, offset: int = 0) -> bytes | None:
        try:
            with self._path(path).open("rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None

    def close(self) -> None:
        pass


def quote(*words: str) -> str:
    """Shell-quote words for a command line."""
    return " ".join(shlex.quote(w) for w in words)
