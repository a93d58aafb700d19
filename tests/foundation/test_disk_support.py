"""The tests' disk hygiene: a test's cards go when it ends, its logs stay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from disk_support import BIG_FILE, drop_big_files


def _sparse_card(path: Path, data: int) -> None:
    """A 1 GiB sparse file with ``data`` bytes really written, like a flashed card."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        f.seek(4 << 20)
        f.write(b"\x5a" * data)


def test_cards_go_and_logs_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIG_KEEP_CARDS", raising=False)
    card = tmp_path / "state" / "cards" / "mux-a.img"
    _sparse_card(card, BIG_FILE + (1 << 20))
    empty = tmp_path / "state" / "cards" / "mux-b.img"  # a never-written card: 1 GiB of holes
    _sparse_card(empty, 0)
    log = tmp_path / "reports" / "run.log"
    log.parent.mkdir()
    log.write_text("kept\n")
    freed = drop_big_files(tmp_path)
    assert not card.exists()
    assert freed >= BIG_FILE
    assert empty.exists() and log.read_text() == "kept\n"  # costs nothing, stays


def test_keep_cards_keeps_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIG_KEEP_CARDS", "1")
    card = tmp_path / "card.img"
    _sparse_card(card, BIG_FILE)
    assert drop_big_files(tmp_path) == 0
    assert card.exists()
    os.unlink(card)  # this test's own card, by hand: the fixture keeps it under RIG_KEEP_CARDS
