"""The three failure families of the rig and the exit codes they map to.

Every error says *where* (file and key, device and phase, byte offset) and, when
there is one, *what to do*; the CLI turns them into exit codes in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PRODUCT = 1
EXIT_USAGE = 2
EXIT_INFRA = 3


def _never_empty(message: str, kind: str) -> str:
    """A message that ends at its colon (``f"...: {e}"`` of an exception that says nothing)
    tells the user nothing: say so instead of printing an empty cause."""
    text = (message or "").rstrip()
    if not text:
        return f"{kind} without a description (a bug in the rig: please report it)"
    if text.endswith(":"):
        return f"{text} (no further detail was given)"
    return message


class RigError(Exception):
    """Base class: a message, where it happened, and an optional hint."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, where: str = "", hint: str = "") -> None:
        message = _never_empty(message, type(self).__name__)
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(RigError):
    """The user's files or arguments are wrong; nothing was changed."""

    exit_code = EXIT_USAGE


class ValidationErrors(ConfigError):
    """Several located problems in one file, all reported at once."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} error(s)"]
        lines += [f"  {path or '(top)'}: {what}" for path, what in problems]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return self.message


class InfraError(RigError):
    """The rig or a device failed (hardware, network, device never came up)."""

    exit_code = EXIT_INFRA


class ProductError(RigError):
    """The software under test misbehaved; never retried away."""

    exit_code = EXIT_PRODUCT
