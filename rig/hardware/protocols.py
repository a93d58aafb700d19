"""The two small interfaces everything above the hardware layer sees.

The scheduler and the scenario steps ask for a PowerSwitch and a Mux, never for
a model of hub or mux (labgrid's protocol/driver split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class PowerSwitch(Protocol):
    def on(self) -> None: ...
    def off(self) -> None: ...
    def cycle(self) -> None: ...
    def state(self) -> bool | None:
        """True on, False off, None when the hardware cannot tell."""
        ...


class Mux(Protocol):
    def host(self) -> None: ...
    def dut(self) -> None: ...
    def off(self) -> None: ...
    def state(self) -> str:
        """'host', 'dut' or 'off'."""
        ...


class CardMux(Mux, Protocol):
    """A mux as the writer sees it: where its card is while on the host side, and which card."""

    def disk(self, timeout: float) -> Path:
        """The validated block device of the card (after ``host()``), waited for."""
        ...

    def card_identity(self) -> str | None:
        """A stable name of the card in the mux (e.g. its CID), None when it cannot be read."""
        ...
