"""The two moves everything above the hardware layer makes with a device's card.

``to_host``: power off -> mux host -> wait for the card's disk.
``to_dut``: mux dut -> power on (the mux does not toggle the DUT's card-detect
line, so the DUT must boot after the card is back).
Each step is logged with its duration through the event stream.
"""

from __future__ import annotations

from pathlib import Path

from rig.events import StepLog
from rig.hardware.protocols import CardMux, PowerSwitch

DISK_TIMEOUT = 30.0  # a USB card reader enumerates in ~2-5 s; 30 s is clearly broken


def to_host(
    power: PowerSwitch, mux: CardMux, log: StepLog, *, disk_timeout: float = DISK_TIMEOUT
) -> Path:
    """Take the card away from a powered-off DUT; returns the validated disk."""
    with log.step("power off"):
        power.off()
    with log.step("mux to host"):
        mux.host()
    with log.step("wait for the card's disk"):
        disk = mux.disk(disk_timeout)
    log(f"card disk: {disk}", disk=str(disk))
    return disk


def to_dut(power: PowerSwitch, mux: CardMux, log: StepLog) -> None:
    """Give the card back to the DUT, then boot it."""
    with log.step("mux to dut"):
        mux.dut()
    with log.step("power on"):
        power.on()
