"""What a Pi 3's board shows its software, for the real OctoPrint inside a virtual Pi.

OctoPrint's Pi support plugin (OctoPrint-PiSupport, ``octoprint_pi_support``) loads only
where ``/proc/device-tree/model`` names a Raspberry Pi, and reads the firmware's
throttle flags with ``vcgencmd get_throttled``; the software update plugin refuses
to update while those flags say "currently throttled". An x86 host has neither, and
``/proc`` cannot be given a new entry, so:

- the model is a file under the card's ``/var/lib/rig-virtual/``; a two-line ``.pth``
  hook in the device's venv makes reads of ``/proc/device-tree/model`` see it;
- ``vcgencmd`` is a shim beside ``service``, printing ``throttled=0x...`` from the same
  directory; OctoPi's config names it as Pi support's throttle command (the real one is
  ``/usr/bin/vcgencmd``, under the host's read-only ``/usr`` here).

A Pi 3's OctoPrint takes long to start: the server answers while the start-up
plugins still run, and only after them does OctoPrint remove ``.incomplete_startup``.
The ``slow_start`` fault is a single-file plugin that takes that long.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from rig.virtual.faults import DeviceFaults
from rig.virtual.sandbox import shims_target

MODEL = "Raspberry Pi 3 Model B Rev 1.2"
# vcgencmd get_throttled bits: 0 under-voltage now, 2 throttled now, 16/18 the same since boot
UNDERVOLTAGE = 0x50005
BOARD_DIR = "var/lib/rig-virtual"  # relative to the card's root state
SLOW_START_PLUGIN = "rig_virtual_slow_start.py"

_HOOK = '''"""Virtual Pi: /proc/device-tree/model as the board would have it (rig.virtual.board)."""
import builtins
import io

_MODEL = "/proc/device-tree/model"
_BOARD = "/var/lib/rig-virtual/device-tree-model"
_open = io.open


def _board_open(file, *args, **kwargs):
    if file == _MODEL:
        file = _BOARD
    return _open(file, *args, **kwargs)


builtins.open = io.open = _board_open
'''

_SLOW_START = '''"""Virtual Pi 3: start-up plugins taking {seconds} s (rig.virtual.board)."""
import time

import octoprint.plugin


class SlowStart(octoprint.plugin.StartupPlugin):
    def on_after_startup(self):
        self._logger.info("virtual Pi 3: start-up plugins busy for {seconds} s")
        time.sleep({seconds})


__plugin_name__ = "Virtual Pi 3 start-up time"
__plugin_pythoncompat__ = ">=2.7,<4"
__plugin_implementation__ = SlowStart()
'''


def lay_out_board(root: Path, venv: Path, basedir: Path, faults: DeviceFaults) -> None:
    """Write the board's files for this boot (faults may change between boots).

    What lands in the venv and the OctoPrint basedir belongs to their owner (on a
    card: uid 1000): OctoPrint refuses to start when its ``plugins`` folder is not
    writable ("Configured folders didn't pass sanity check")."""
    board = root / BOARD_DIR
    board.mkdir(parents=True, exist_ok=True)
    (board / "device-tree-model").write_text(MODEL + "\0")
    (board / "throttled").write_text(hex(UNDERVOLTAGE if faults.undervoltage else 0) + "\n")
    for site in venv.glob("lib/python*/site-packages"):
        for name, text in (
            ("_rig_virtual_board.py", _HOOK),
            ("_rig_virtual_board.pth", "import _rig_virtual_board\n"),
        ):
            (site / name).write_text(text)
            _own_like(site / name, site)
    config = basedir / "config.yaml"
    _name_vcgencmd(config)
    _own_like(config, basedir)
    plugin = basedir / "plugins" / SLOW_START_PLUGIN
    if faults.slow_start:
        plugin.parent.mkdir(parents=True, exist_ok=True)
        _own_like(plugin.parent, basedir)
        plugin.write_text(_SLOW_START.format(seconds=float(faults.slow_start)))
        _own_like(plugin, basedir)
    else:
        plugin.unlink(missing_ok=True)


def _own_like(path: Path, owner: Path) -> None:
    """Give ``path`` the owner of ``owner`` (a no-op where both are the caller's)."""
    if not path.exists() or not owner.exists():
        return
    st = owner.stat()
    mine = path.stat()
    if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
        os.chown(path, st.st_uid, st.st_gid)


def _name_vcgencmd(config: Path) -> None:
    data = (yaml.safe_load(config.read_text()) if config.exists() else None) or {}
    pi_support = data.setdefault("plugins", {}).setdefault("pi_support", {})
    command = f"{shims_target()}/vcgencmd get_throttled"
    if pi_support.get("vcgencmd_throttle_check_command") != command:
        pi_support["vcgencmd_throttle_check_command"] = command
        config.write_text(yaml.safe_dump(data, default_flow_style=False))
