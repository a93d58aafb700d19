"""`rig doctor --power-test`: the DUT must stop answering, whatever the hub's status bit says.

The DUT here is a listener on loopback that runs while its port has VBUS (what the
emulated hub really does to the port), like a Pi's sshd."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from rig.hardware.power import UsbHubPower
from rig.hardware.powertest import power_test, tcp_probe
from rig.virtual.hw.usb import EmulatedBus, hub_pair


class Dut:
    """Answers on a loopback port while hub 1-1 port 1 has VBUS."""

    def __init__(self, hw) -> None:
        self.hw = hw
        self.port = 0
        self.stop = threading.Event()
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            powered = self.hw.port_power("1-1", 1)
            if powered and self.sock is None:
                self.sock = socket.create_server(("127.0.0.1", self.port))
                self.port = self.sock.getsockname()[1]
            elif not powered and self.sock is not None:
                self.sock.close()
                self.sock = None
            self.stop.wait(0.05)
        if self.sock:
            self.sock.close()


@pytest.fixture
def dut(hw) -> Iterator[Dut]:
    d = Dut(hw)
    hw.set_port_power("1-1", 1, True)
    d.thread.start()
    while d.sock is None:
        d.stop.wait(0.01)
    yield d
    d.stop.set()
    d.thread.join()


def test_a_hub_that_cuts_vbus_passes_and_the_dut_is_powered_again(hw, dut) -> None:
    power = UsbHubPower("1-1", 1, backend=EmulatedBus(list(hub_pair(hw, "1-1"))))
    result = power_test(
        power, tcp_probe("127.0.0.1", dut.port), what="pi3-a", switch="usb-hub 1-1 port 1"
    )
    assert result.ok, result.detail
    assert "cut pi3-a within" in result.detail
    assert hw.port_power("1-1", 1) is True


def test_a_hub_whose_status_bit_lies_is_named(hw, dut) -> None:
    bus = EmulatedBus(list(hub_pair(hw, "1-1", status_lies=True)))
    power = UsbHubPower("1-1", 1, backend=bus)
    power.off()
    assert power.state() is False  # what the driver alone would believe
    result = power_test(
        power,
        tcp_probe("127.0.0.1", dut.port),
        what="pi3-a",
        switch="usb-hub 1-1 port 1",
        timeout=1.0,
    )
    assert not result.ok
    assert "usb-hub 1-1 port 1 lies: its status says off" in result.detail
    assert "does not cut VBUS" in result.fix


def test_a_dut_that_is_not_up_is_not_tested(hw) -> None:
    power = UsbHubPower("1-1", 1, backend=EmulatedBus(list(hub_pair(hw, "1-1"))))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    result = power_test(power, tcp_probe("127.0.0.1", free), what="pi3-a", switch="hub")
    assert not result.ok and "does not answer before the test" in result.detail
