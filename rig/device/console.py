"""The device's serial console, captured into the scenario's results.

A USB serial adapter on the flash host, wired to the DUT's UART (GPIO 14/15), shows
what SSH cannot: the kernel's and the first boot's messages, a boot that hangs
before sshd. Raspberry Pi OS puts a console on ``serial0`` at 115200 baud; the UART
needs ``enable_uart=1`` in config.txt on a Pi 3 (the rig's provision.config_txt).
The port is set raw with termios (a pty or a tty; a FIFO is read as it is, a
regular file - the virtual rig's console - followed from its end) and everything
read is appended to the results file as it arrives.
"""

from __future__ import annotations

import os
import select
import stat
import termios
import threading
import time
import tty
from pathlib import Path

BAUD = {
    9600: termios.B9600,
    19200: termios.B19200,
    38400: termios.B38400,
    57600: termios.B57600,
    115200: termios.B115200,
    230400: termios.B230400,
    460800: termios.B460800,
    921600: termios.B921600,
}


class ConsoleCapture:
    """Read ``port`` into ``out`` in a thread, from start() until stop()."""

    def __init__(self, port: str, out: Path, baud: int = 115200) -> None:
        self.port, self.out, self.baud = port, out, baud
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self.error = ""  # why nothing was captured, when the port could not be opened

    def start(self) -> ConsoleCapture:
        try:
            fd = os.open(self.port, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            self.error = f"console {self.port} not captured: {e.strerror or e}"
            self.out.write_text(self.error + "\n")
            return self
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.lseek(fd, 0, os.SEEK_END)  # a console log file: only what comes from now on
        elif os.isatty(fd):
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = BAUD[self.baud]  # ispeed, ospeed
            attrs[2] |= termios.CLOCAL | termios.CREAD  # no modem lines: a 3-wire UART
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._fd = fd
        self._thread = threading.Thread(target=self._read, name=f"console-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._fd is not None
        with self.out.open("ab") as sink:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(self._fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # the adapter went away (unplugged, pty closed)
                    time.sleep(0.2)
                    continue
                if data:
                    sink.write(data)
                    sink.flush()
                else:  # a file or FIFO at its end: more may come
                    self._stop.wait(0.2)

    def stop(self) -> None:
        """Stop reading; what was read is in ``out``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
