"""The person at the desk, on the virtual rig: `rig run --interactive` and `rig up`/`rig down`.

The interactive run is driven the way a person drives it: in a terminal (a pty)
without a display, through the rig's hand-over link, and under Xvfb with the
visible browser. The device is reached through the forward on the flash host's
address, as from the person's own machine.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from rig.config import VIRTUAL_CONFIG, load_config

# a whole run each; a loaded 2-core machine needs more than the default 600 s, and the
# tests' own waits (below) end first, with what the terminal showed
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

NET = "127.83"  # this file's own addresses
BIND = f"{NET}.0.1"  # the "flash host's address" the person is shown
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
RELEASE = {"version": "1.11.8", "channel": "maintenance", "pip": "OctoPrint=={target_version}"}


@pytest.fixture
def rig_yaml(tmp_path):
    configs = []

    def make(net: int, **extra) -> Path:
        devices = {
            name: {**dev, "host": f"{NET}.{net}.{10 + i}"}
            for i, (name, dev) in enumerate(VIRTUAL_CONFIG["devices"].items(), start=1)
        }
        data = {
            "devices": devices,
            "paths": {"state": str(tmp_path / "state"), "reports": str(tmp_path / "reports")},
            "virtual": {},
            "run": {"handover_bind": BIND, "snapshots": False},  # each run from the image
            **extra,
        }
        path = tmp_path / "rig.yaml"
        path.write_text(yaml.safe_dump(data))
        configs.append(path)
        return path

    yield make
    from rig.virtual.hw.state import cleanup
    from rig.virtual.twin import stop_twin

    for path in configs:
        data = yaml.safe_load(path.read_text())
        data.pop("admin", None)  # its secret lived in the test's environment only
        path.write_text(yaml.safe_dump(data))
        config = load_config(path)
        stop_twin(config)
        cleanup(config.paths.state / "virtual")


def _matrix(tmp_path: Path, checks: list[str]) -> Path:
    data = {
        "release": RELEASE,
        "scenarios": [
            {"id": "desk", "image": "octopi-1.1.0", "channel": "maintenance", "checks": checks}
        ],
    }
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(data))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(extra)
    return env


class Terminal:
    """A rig command in a pseudo-terminal, read like a person reads it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.text = ""

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, ANSI.sub("", self.text))
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._read(0.2)):
                raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.text[-4000:]}")
            self._read(min(left, 1.0))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.text += data.decode("utf-8", "replace")
        return bool(data)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.5)
        while self._read(0.1):
            pass
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def _rig(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rig", "--config", str(config), *args]


def _no_secret_anywhere(report: Path, secret: str) -> None:
    """Not in any file of the report, Playwright traces (zip members) included."""
    checked = 0
    for path in report.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                for member in z.namelist():
                    assert secret.encode() not in z.read(member), f"{path}:{member}"
        else:
            assert secret.encode() not in path.read_bytes(), path
        checked += 1
    assert checked > 5


def test_interactive_in_a_terminal_without_display(rig_yaml, tmp_path) -> None:
    config = rig_yaml(1)
    out = tmp_path / "report"
    term = Terminal(
        _rig(
            config,
            "run",
            str(_matrix(tmp_path, ["update", "smoke"])),
            "--interactive",
            "--report-dir",
            str(out),
        ),
        _env(),
    )
    try:
        url = term.expect(r"open\s+(http://\S+)", 500).group(1)
        password = term.expect(r"log in\s+admin / (\S+)\s+\(generated for this run\)", 5).group(1)
        term.expect(r"ssh -p 2222 pi@127\.83\.1\.11\s+password raspberry-rig", 5)
        term.expect(r"Enter: the rig does the update", 5)
        # the person's browser reaches the device through the flash host's address
        assert url.startswith(f"http://{BIND}:")
        assert httpx.get(f"{url}/online.txt", timeout=10).status_code == 200
        term.send("\n")
        assert term.wait(550) == 0, term.text[-4000:]
    finally:
        term.close()
    data = json.loads((out / "results.json").read_text())
    assert data["outcome"] == "passed"
    assert data["scenarios"][0]["facts"]["final_version"] == "1.11.8"
    assert "updated_by" not in data["scenarios"][0]["facts"]
    assert (out / "scenarios/desk/update/trace.zip").exists()  # the browser update ran headless
    assert (out / "scenarios/desk/smoke/junit.xml").exists()
    _no_secret_anywhere(out, password)
    # the person who ran it is told the card's password at the end, on their terminal only
    assert re.search(
        rf"pi3-\w keeps OctoPrint admin admin\s+with\s+this\s+run's\s+password\s+"
        rf"{re.escape(password)}",
        ANSI.sub("", term.text),
    )


def test_the_person_updates_and_clicks_the_link_the_rig_verifies(rig_yaml, tmp_path) -> None:
    secret = "desk-" + os.urandom(6).hex()
    config = rig_yaml(2, admin={"name": "maker", "password": {"secret": "octoprint_admin"}})
    out = tmp_path / "report"
    proc = subprocess.Popen(
        _rig(
            config,
            "run",
            str(_matrix(tmp_path, ["update"])),
            "--interactive",
            "--report-dir",
            str(out),
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(RIG_SECRET_OCTOPRINT_ADMIN=secret),
    )
    lines: list[str] = []
    try:
        url = link = None
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"open\s+(http://\S+)", line):
                url = m.group(1)
            if m := re.search(r"then\s+(http://\S+/)", line):
                link = m.group(1)
                break
        assert url and link, "".join(lines)
        text = "".join(lines)
        assert "maker / (shown only on a terminal)" in text and secret not in text
        # the person updates in their own browser (here: the same requests the UI makes)
        from rig.product.octoprint.api import OctoPrintAPI

        api = OctoPrintAPI(url, "maker", secret)
        api.login()
        api.start_update()
        api.close()
        page = httpx.get(link, timeout=10)
        assert "I updated it" in page.text
        assert httpx.post(link + "verify", timeout=10).status_code == 200
        rest = proc.communicate(timeout=550)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest[-4000:]
    facts = json.loads((out / "results.json").read_text())["scenarios"][0]["facts"]
    assert facts["updated_by"] == "person" and facts["final_version"] == "1.11.8"
    assert facts["restarts"] == 1
    assert not (out / "scenarios/desk/update").exists()  # the rig did not click anything
    _no_secret_anywhere(out, secret)


@pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xwininfo")),
    reason="needs Xvfb and xwininfo (apt-get install xvfb x11-utils)",
)
def test_interactive_with_a_display_opens_the_visible_browser(rig_yaml, tmp_path) -> None:
    config = rig_yaml(3)
    out = tmp_path / "report"
    display = f":{83 + os.getpid() % 100}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"])
    term = None
    try:
        term = Terminal(
            _rig(
                config,
                "run",
                str(_matrix(tmp_path, ["update"])),
                "--interactive",
                "--report-dir",
                str(out),
            ),
            _env(DISPLAY=display),
        )
        link = term.expect(r"then\s+(http://\S+/)", 500).group(1)
        term.expect(r"a browser window is open on the device", 120)
        # the window really is on the display: Chromium's top-level window, titled by its tab
        deadline = time.monotonic() + 60
        tree = ""
        while time.monotonic() < deadline and "Chromium" not in tree:
            tree = subprocess.run(
                ["xwininfo", "-root", "-tree"],
                env={"DISPLAY": display},
                capture_output=True,
                text=True,
            ).stdout
            time.sleep(0.5)
        assert "Chromium" in tree, tree[-2000:]
        assert httpx.post(link + "continue", timeout=10).status_code == 200
        assert term.wait(550) == 0, term.text[-4000:]
    finally:
        if term:
            term.close()
        xvfb.terminate()
        xvfb.wait()
    data = json.loads((out / "results.json").read_text())
    assert data["outcome"] == "passed"
    shots = sorted(p.name for p in (out / "scenarios/desk/update").glob("*.png"))
    assert any("reloaded" in s for s in shots), shots


def test_rig_up_holds_one_device_until_rig_down(rig_yaml, tmp_path) -> None:
    config = rig_yaml(4)
    up = subprocess.Popen(
        _rig(
            config,
            "up",
            "--image",
            "octopi-1.1.0",
            "--channel",
            "maintenance",
            "--release",
            "1.11.8",
            "--device",
            "pi3-b",
            "--report-dir",
            str(tmp_path / "up"),
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    try:
        url = None
        for line in up.stdout:
            lines.append(line)
            if m := re.search(r"open\s+(http://\S+)", line):
                url = m.group(1)
            if "rig down pi3-b" in line:
                break
        assert url, "".join(lines)
        assert httpx.get(f"{url}/online.txt", timeout=10).status_code == 200
        devices = subprocess.run(_rig(config, "devices"), capture_output=True, text=True)
        assert "rig up" in devices.stdout, devices.stdout
        # a run cannot take it while it is up
        busy = subprocess.run(
            _rig(
                config,
                "run",
                str(_matrix(tmp_path, ["update-api"])),
                "--device",
                "pi3-b",
                "--report-dir",
                str(tmp_path / "busy"),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert busy.returncode == 3 and "busy" in busy.stdout + busy.stderr
        assert up.poll() is None  # still up
        assert httpx.get(f"{url}/online.txt", timeout=10).status_code == 200
        down = subprocess.run(
            _rig(config, "down", "pi3-b"), capture_output=True, text=True, timeout=400
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert "pi3-b is down and free" in down.stdout
        rest = up.communicate(timeout=60)[0]
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, "".join(lines) + rest
    power = subprocess.run(_rig(config, "power", "pi3-b", "status"), capture_output=True, text=True)
    assert "off" in power.stdout, power.stdout
    again = subprocess.run(_rig(config, "down", "pi3-b"), capture_output=True, text=True)
    assert again.returncode == 2 and "not up" in again.stderr
