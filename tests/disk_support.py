"""Disk hygiene for the tests: their cards and images go when they end."""

from __future__ import annotations

import os
import stat
import time
import warnings
from pathlib import Path

# a file this big under a test's own directories is a card, an image or a partition dump
# (a virtual OctoPi's card holds 350-860 MiB of real data): it goes when the test ends
BIG_FILE = 16 * 1024 * 1024
LOOP_RELEASE = 10.0  # seconds


def drop_big_files(top: Path) -> int:
    """Delete every regular file under ``top`` that takes ``BIG_FILE`` bytes or more on disk.

    Returns the bytes freed. A failed test keeps its logs and reports (pytest's
    ``tmp_path_retention_policy``), not its gigabytes of cards; ``RIG_KEEP_CARDS=1``
    keeps those too, for a post-mortem. A card still attached to a loop device is
    deleted all the same (its space comes back when the loop goes) and reported.
    """
    if os.environ.get("RIG_KEEP_CARDS") == "1" or not top.is_dir():
        return 0
    attached = _loop_backing_files()
    freed = 0
    for dirpath, dirnames, filenames in os.walk(top):
        # never into a mounted card root (a leaked mount is reported, not emptied)
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_blocks * 512 < BIG_FILE:
                continue
            if path in attached and not _released(path):
                warnings.warn(
                    f"{path}: still attached to {attached[path]} after the test", stacklevel=2
                )
            os.unlink(path)
            freed += st.st_blocks * 512
    return freed


def _released(path: str, timeout: float = LOOP_RELEASE) -> bool:
    """Wait for the loop device over ``path`` to go: a card-rooted Pi's loop clears when the
    last mount holding it is gone, moments after the power cut (seen as a warning at the end
    of card-rooted tests before this wait)."""
    deadline = time.monotonic() + timeout
    while path in _loop_backing_files():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _loop_backing_files() -> dict[str, str]:
    out = {}
    for loop in Path("/sys/block").glob("loop*"):
        try:
            out[(loop / "loop" / "backing_file").read_text().strip()] = f"/dev/{loop.name}"
        except OSError:
            continue
    return out
