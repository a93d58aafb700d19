"""Serial console capture (issue 13, item 10c): a real pty stands in for the USB serial
adapter (the same tty layer: termios raw mode and baud rate apply to it)."""

from __future__ import annotations

import os
import termios
import time
from pathlib import Path

import pytest
import yaml

from rig.config import load_config
from rig.device.console import ConsoleCapture
from rig.errors import ValidationErrors


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_console_output_lands_in_the_results_file_raw(tmp_path):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    out = tmp_path / "console.log"
    capture = ConsoleCapture(port, out, baud=115200).start()
    try:
        assert capture.error == ""
        attrs = termios.tcgetattr(capture._fd)
        assert attrs[4] == termios.B115200 and not attrs[3] & termios.ICANON  # raw, 115200
        os.write(master, b"[    0.000000] Booting Linux on physical CPU 0x0\r\n")
        os.write(master, b"octopi login: ")  # no newline: raw mode still delivers it
        _until(lambda: out.exists() and b"octopi login: " in out.read_bytes())
    finally:
        capture.stop()
        os.close(master)
        os.close(slave)
    assert out.read_bytes().startswith(b"[    0.000000] Booting Linux")


def test_a_missing_adapter_is_recorded_not_a_crash(tmp_path):
    out = tmp_path / "console.log"
    capture = ConsoleCapture(str(tmp_path / "ttyUSB9"), out).start()
    capture.stop()
    assert "not captured" in capture.error and "No such file" in out.read_text()


def _config(tmp_path: Path, config_txt: list[str] | None) -> Path:
    data = {
        "devices": {
            "pi3-a": {
                "power": {"driver": "ykush", "port": 1},
                "mux": {"driver": "usb-sd-mux", "serial": "000000001"},
                "host": "127.87.0.10",
                "console": {"port": "/dev/ttyUSB0", "baud": 115200},
            }
        },
        "wifi": {"ssid": "lab", "psk": "a-long-enough-psk", "country": "DE"},
        "user": {"name": "pi", "password": "raspberry-rig"},
    }
    if config_txt is not None:
        data["provision"] = {"config_txt": config_txt}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_console_needs_the_uart_enabled_in_config_txt(tmp_path):
    with pytest.raises(ValidationErrors, match=r"devices\.pi3-a\.console.*enable_uart=1"):
        load_config(_config(tmp_path, None))
    config = load_config(_config(tmp_path, ["enable_uart=1"]))
    assert config.device("pi3-a").console == "/dev/ttyUSB0"
    assert config.device("pi3-a").console_baud == 115200
