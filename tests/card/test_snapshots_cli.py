"""`rig snapshots list|remove` on a store of real snapshots (real ext4/FAT cards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _writer_images import have_tools, make_image, sample_trees

from rig.card.snapshots import SnapshotStore, key_of
from rig.cli import main
from rig.events import StepLog

pytestmark = pytest.mark.skipif(not have_tools(), reason="mkfs/mtools/e2fsprogs missing")


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, SnapshotStore, list[str]]:
    """A config whose store holds three snapshots of one real card, each other inputs."""
    work = tmp_path / "card"
    work.mkdir()
    card = make_image(work, *sample_trees(work))
    config = tmp_path / "rig.yaml"
    config.write_text(
        f"paths:\n  state: {tmp_path / 'state'}\nrun:\n  snapshot_cache: {tmp_path / 'snaps'}\n"
    )
    s = SnapshotStore(tmp_path / "snaps", 1 << 30)
    keys = []
    for version in ("1.10.3", "1.11.8", "2.0.0rc7"):
        inputs = {
            "image": {"name": "octopi-1.1.0.img", "sha256": "ab" * 32},
            "model": "pi3",
            "card_bytes": card.stat().st_size,
            "product": {"product": "octoprint", "start_version": version, "plugins": []},
        }
        keys.append(s.capture(key_of(inputs), inputs, card, StepLog()).key)
    return config, s, keys


def _listed(config: Path, capsys) -> dict:
    assert main(["--config", str(config), "snapshots", "list", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_says_what_each_snapshot_starts_from(store, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table as a wide terminal shows it
    config, s, keys = store
    data = _listed(config, capsys)
    assert data["root"] == str(s.root) and data["limit_bytes"] == 20 << 30
    by_key = {e["key"]: e for e in data["snapshots"]}
    assert set(by_key) == set(keys)
    assert {e["product"]["start_version"] for e in by_key.values()} == {
        "1.10.3", "1.11.8", "2.0.0rc7",
    }  # fmt: skip
    e = by_key[keys[0]]
    assert e["image"] == "octopi-1.1.0.img" and e["model"] == "pi3" and e["card_bytes"] > 0
    assert e["bytes_on_disk"] > 0 and data["bytes"] == sum(
        x["bytes_on_disk"] for x in by_key.values()
    )
    assert main(["--config", str(config), "snapshots", "list"]) == 0
    table = capsys.readouterr().out
    assert keys[1][:12] in table and "start_version=1.11.8" in table and "3 snapshot(s)" in table


def test_remove_by_unique_prefix_and_all(store, capsys) -> None:
    config, s, keys = store
    assert main(["--config", str(config), "snapshots", "remove", keys[0][:10]]) == 0
    assert f"removed {keys[0][:12]}" in capsys.readouterr().out
    assert s.lookup(keys[0]) is None and s.lookup(keys[1]) is not None
    assert main(["--config", str(config), "snapshots", "remove", "--all"]) == 0
    assert s.keys() == [] and "2 snapshot(s) removed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "name the snapshots to remove, or --all"),
        (["--all", "GOOD"], "not both"),
        (["GOOD", "ffffffff"], "'ffffffff' matches no snapshots"),
        (["GOOD", ""], "matches 3 snapshots: give more of the key"),
    ],
)
def test_a_bad_remove_says_why_and_removes_nothing(store, capsys, argv, says) -> None:
    """A good key beside a bad one: still nothing goes."""
    config, s, keys = store
    argv = [keys[2][:12] if a == "GOOD" else a for a in argv]
    assert main(["--config", str(config), "snapshots", "remove", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "rig snapshots list shows the keys" in err
    assert sorted(s.keys()) == sorted(keys)


def test_an_empty_or_missing_store_lists_nothing(tmp_path: Path, capsys) -> None:
    config = tmp_path / "rig.yaml"
    config.write_text(f"run:\n  snapshot_cache: {tmp_path / 'none'}\n")
    data = _listed(config, capsys)
    assert data["snapshots"] == [] and data["bytes"] == 0
    assert not (tmp_path / "none").exists()  # listing creates nothing
