"""Fixtures: a throwaway virtual hardware state and the emulated USB bus on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.virtual.hw import VirtualHardware, cleanup
from rig.virtual.hw.usb import EmulatedBus, virtual_bus


@pytest.fixture
def hw(tmp_path: Path) -> Iterator[VirtualHardware]:
    state = VirtualHardware(tmp_path / "virtual", use_loop=False, card_size=8 << 20)
    yield state
    cleanup(tmp_path / "virtual")


@pytest.fixture
def bus(hw: VirtualHardware) -> EmulatedBus:
    return virtual_bus(hw)
