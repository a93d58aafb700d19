"""The two small interfaces everything above the hardware layer sees.

The scheduler and the scenario steps ask for a PowerSwitch and a Mux, never for
a model of hub or mux (labgrid's protocol/driver split).
"""

from __future__ import annotations

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
