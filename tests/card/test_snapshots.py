"""Starting-state snapshots: the key, the store and the fresh identity, on real ext4/FAT images."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import paramiko
import pytest
from _writer_images import have_tools, make_image, sample_trees

from rig.card.identity import refresh_identity, root_offset
from rig.card.snapshots import (
    CardSnapshots,
    NotCapturable,
    SnapshotCorrupt,
    SnapshotStore,
    key_of,
)
from rig.card.writer import write_image
from rig.config import load_config
from rig.errors import ConfigError
from rig.events import StepLog
from rig.product.octoprint.profile import OctoPrintProfile
from rig.product.profile import DeviceAddress, ScenarioContext
from rig.root import Rig

pytestmark = pytest.mark.skipif(not have_tools(), reason="mkfs/mtools/e2fsprogs missing")


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Pi-like card (MBR, FAT boot, ext4 root) with host keys, machine id and hostname."""
    work = tmp_path_factory.mktemp("card")
    boot, root = sample_trees(work)
    (root / "etc" / "ssh").mkdir()
    for kind in ("ecdsa", "ed25519"):
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                kind,
                "-N",
                "",
                "-f",
                str(root / f"etc/ssh/ssh_host_{kind}_key"),
            ],
            check=True,
        )
    (root / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\toctopi\n")
    return make_image(work, boot, root)


@pytest.fixture
def card(disk: Path, tmp_path: Path) -> Path:
    copy_ = tmp_path / "card.img"
    shutil.copyfile(disk, copy_)
    return copy_


def _ctx(tmp_path: Path, **kw: Any) -> ScenarioContext:
    base = dict(
        device=DeviceAddress("pi3-a", "127.0.0.1"),
        scenario_id="s",
        channel="maintenance",
        target_version="1.11.8",
        release_channel="maintenance",
        expect="updated",
        checks=(),
        results=tmp_path,
        log=StepLog(),
        start_version="1.10.3",
        release_options={"plugins": {}},
    )
    base.update(kw)
    return ScenarioContext(**base)  # type: ignore[arg-type]


def _snapshots(tmp_path: Path, image: Path) -> CardSnapshots:
    """The rig's own snapshot view of a device (the built-in virtual config), store in tmp."""
    config = load_config(None, search=False)  # the built-in virtual rig
    config.sections["run"] = {"snapshot_cache": str(tmp_path / "snaps")}
    rig = Rig(config, backend=None)  # type: ignore[arg-type]
    name = next(iter(rig.config.devices))
    snaps = rig.snapshots(name, image, mux=object())  # type: ignore[arg-type]
    assert snaps is not None
    return snaps


def _leaves(tree: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(tree, list):
        return [(*path, "[]")] + [
            leaf for i, v in enumerate(tree) for leaf in _leaves(v, (*path, i))
        ]
    return [path]


def _changed(tree: Any, path: tuple) -> Any:
    """A copy of ``tree`` with the one input at ``path`` changed."""
    out = copy.deepcopy(tree)
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if last == "[]":
        parent.append("one-more")
        return out
    value = parent[last]
    parent[last] = (
        not value
        if isinstance(value, bool)
        else value + 1
        if isinstance(value, int | float)
        else "changed"
        if value is None
        else value + "-changed"
    )
    return out


def test_a_snapshot_is_never_reused_after_any_of_its_inputs_changes(
    card: Path, tmp_path: Path
) -> None:
    """The issue's done-when: every input of the key (enumerated from the key's own input
    tree, so a new input is covered without touching this test) changes the key, and the
    store then has no snapshot for it."""
    snaps = _snapshots(tmp_path, card)
    product = OctoPrintProfile().snapshot_inputs(_ctx(tmp_path))
    assert product is not None
    key, inputs = snaps.key(product, card)
    snaps.capture(key, inputs, card, StepLog())
    assert snaps.lookup(key) is not None
    leaves = _leaves(inputs)
    # what must be in it, by name: image hash, product inputs, provisioning, model, rig source
    names = {"/".join(map(str, p)) for p in leaves}
    for must in (
        "image/sha256",
        "product/start_version",
        "product/channel",
        "product/requirements/[]",
        "provision/user",
        "provision/password",
        "provision/psk",
        "provision/ssid",
        "provision/country",
        "provision/ssh_keys/[]",
        "model",
        "card_bytes",
        "rig/version",
        "rig/source_sha256",
    ):
        assert must in names, must
    seen = {key}
    for path in leaves:
        other = _changed(inputs, path)
        changed = key_of(other)
        assert changed not in seen, path
        seen.add(changed)
        assert snaps.lookup(changed) is None, path
    assert snaps.lookup(key) is not None  # the unchanged inputs still find it


def test_per_run_values_do_not_enter_the_key(tmp_path: Path) -> None:
    """What prepare applies again on every run must not make every run miss."""
    profile = OctoPrintProfile()
    a = profile.snapshot_inputs(_ctx(tmp_path))
    b = profile.snapshot_inputs(
        _ctx(tmp_path, target_version="9.9.9", feed_url="http://x:1", admin_password="other")
    )
    assert a == b
    assert a != profile.snapshot_inputs(_ctx(tmp_path, start_version="1.9.3"))
    assert profile.snapshot_inputs(_ctx(tmp_path, interactive=True)) is None


def test_secrets_are_not_in_the_meta_in_clear(card: Path, tmp_path: Path) -> None:
    snaps = _snapshots(tmp_path, card)
    key, inputs = snaps.key({"x": 1}, card)
    snap = snaps.capture(key, inputs, card, StepLog())
    text = (snap.directory / "meta.json").read_text()
    assert json.loads(text)["inputs"]["provision"]["psk"].startswith("hmac-sha256:")
    config = load_config(None, search=False)
    for secret in (config.wifi.psk.reveal(), config.user.password.reveal()):
        assert secret and secret not in text


def test_capture_then_write_gives_the_card_back(card: Path, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 1 << 30)
    inputs = {"a": 1}
    snap = store.capture(key_of(inputs), inputs, card, StepLog())
    assert os.stat(snap.image).st_blocks * 512 < os.path.getsize(snap.image)  # sparse
    target = tmp_path / "target.img"
    target.write_bytes(os.urandom(1 << 20))
    result = write_image(snap.image, target, bmap=snap.bmap, log=StepLog())
    assert result.verified and result.origin == "bmap"
    with open(card, "rb") as a, open(target, "rb") as b:
        for e in _extents(snap.bmap):
            a.seek(e[0])
            b.seek(e[0])
            assert a.read(e[1] - e[0]) == b.read(e[1] - e[0])


def test_a_card_of_another_size_has_its_own_snapshot_and_a_smaller_one_keeps_it(
    card: Path, tmp_path: Path
) -> None:
    """The first boot grew the root to fill its card, so a snapshot is as big as the card it
    was taken from. A card of another size is another key; a card too small for a snapshot
    is refused as a card (ConfigError about the card) and the snapshot stays."""
    snaps = _snapshots(tmp_path, card)
    key, inputs = snaps.key({"x": 1}, card)
    snap = snaps.capture(key, inputs, card, StepLog())
    bigger = tmp_path / "bigger.img"
    shutil.copyfile(card, bigger)
    os.truncate(bigger, card.stat().st_size + (8 << 20))
    assert snaps.key({"x": 1}, bigger)[0] != key
    assert snaps.lookup(snaps.key({"x": 1}, bigger)[0]) is None

    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("a card smaller than the snapshot needs a loop device (root, losetup)")
    backing = tmp_path / "small.bin"
    backing.write_bytes(b"")
    os.truncate(backing, card.stat().st_size - (1 << 20))
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:

        def write(image: Path, bmap: Path, disk: Path, log: StepLog) -> dict[str, Any]:
            return {"written": write_image(image, disk, bmap=bmap, log=log).bytes_written}

        small = CardSnapshots(snaps.store, lambda: {}, write, lambda disk, log: {})
        with pytest.raises(ConfigError, match="larger than the card"):
            small.write(snap, Path(loop), StepLog())
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert snaps.lookup(key) is not None, "a good snapshot was thrown away for a small card"


def _extents(bmap: Path) -> list[tuple[int, int]]:
    from rig.card.bmap import parse_bmap

    return [(e.start, e.end) for e in parse_bmap(bmap).extents]


def test_a_failed_capture_leaves_nothing(card: Path, tmp_path: Path, monkeypatch) -> None:
    import rig.card.snapshots as mod

    store = SnapshotStore(tmp_path / "s", 1 << 30)
    inputs = {"a": 1}

    def boom(*a: Any, **k: Any) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(mod, "render_bmap", boom)
    with pytest.raises(OSError):
        store.capture(key_of(inputs), inputs, card, StepLog())
    assert store.lookup(key_of(inputs)) is None
    assert [p.name for p in store.root.iterdir() if not p.name.startswith((".salt",))] == []


def test_a_half_written_snapshot_directory_is_not_a_snapshot(card: Path, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 1 << 30)
    inputs = {"a": 1}
    key = key_of(inputs)
    snap = store.capture(key, inputs, card, StepLog())
    snap.bmap.unlink()
    assert store.lookup(key) is None
    assert not snap.directory.exists()
    # a meta.json that does not hash to its directory's name is refused too
    snap = store.capture(key, inputs, card, StepLog())
    meta = json.loads((snap.directory / "meta.json").read_text())
    meta["inputs"]["a"] = 2
    (snap.directory / "meta.json").write_text(json.dumps(meta))
    assert store.lookup(key) is None


def test_a_corrupted_snapshot_is_refused_and_removed(card: Path, tmp_path: Path) -> None:
    snaps = _snapshots(tmp_path, card)
    key, inputs = snaps.key({"a": 1}, card)
    snap = snaps.capture(key, inputs, card, StepLog())
    first = _extents(snap.bmap)[-1]
    with open(snap.image, "r+b") as f:  # one flipped byte inside a mapped range
        f.seek(first[0] + 100)
        byte = f.read(1)
        f.seek(first[0] + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "target.img"
    with pytest.raises(SnapshotCorrupt, match="refused and removed"):
        snaps.write(snaps.lookup(key), target, StepLog())  # type: ignore[arg-type]
    assert snaps.lookup(key) is None and not snap.directory.exists()
    snap = snaps.capture(key, inputs, card, StepLog())
    with open(snap.image, "r+b") as f:
        f.seek(first[0] + 100)
        f.write(b"\x00\x01")
    with pytest.raises(SnapshotCorrupt):
        snaps.store.verify(snap)
    assert not snap.directory.exists()


def test_least_recently_used_snapshots_go_first(card: Path, tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "s", 1 << 40)
    keys = []
    for i in range(3):
        inputs = {"n": i}
        keys.append(store.capture(key_of(inputs), inputs, card, StepLog()).key)
        os.utime(store.root / keys[-1] / "meta.json", (1000 + i, 1000 + i))
    store.lookup(keys[0])  # used now: the most recent
    one = store.usage()[0][1]
    store.limit_bytes = 2 * one
    assert store.evict() == [keys[1]]
    assert set(store.keys()) == {keys[0], keys[2]}


def test_a_card_not_cleanly_unmounted_is_not_kept(card: Path, tmp_path: Path) -> None:
    off = root_offset(card)
    with open(card, "r+b") as f:
        f.seek(off + 1024 + 0x60)
        incompat = struct.unpack("<I", f.read(4))[0]
        f.seek(off + 1024 + 0x60)
        f.write(struct.pack("<I", incompat | 0x4))  # needs_recovery: mounted when power went
    store = SnapshotStore(tmp_path / "s", 1 << 30)
    with pytest.raises(NotCapturable, match="not cleanly unmounted"):
        store.capture(key_of({}), {}, card, StepLog())
    assert store.keys() == []


def _cat(card: Path, path: str) -> str:
    out = subprocess.run(
        ["debugfs", "-R", f'cat "{path}"', f"{card}?offset={root_offset(card)}"],
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


def test_refresh_identity_writes_new_keys_machine_id_and_hostname(
    card: Path, tmp_path: Path
) -> None:
    old_key = _cat(card, "/etc/ssh/ssh_host_ecdsa_key")
    ident = refresh_identity(card, "pi3-b")
    assert set(ident.host_keys) == {"ecdsa", "ed25519"}
    new_key = _cat(card, "/etc/ssh/ssh_host_ecdsa_key")
    assert new_key != old_key
    local = tmp_path / "k"
    local.write_text(new_key)
    loaded = paramiko.ECDSAKey.from_private_key_file(str(local))  # what the virtual sshd reads
    assert ident.host_keys["ecdsa"].split()[1] == loaded.get_base64()
    assert _cat(card, "/etc/ssh/ssh_host_ed25519_key.pub").strip() == ident.host_keys["ed25519"]
    assert re.fullmatch(r"[0-9a-f]{32}\n", _cat(card, "/etc/machine-id"))
    assert _cat(card, "/etc/machine-id").strip() == ident.machine_id
    assert _cat(card, "/etc/hostname") == "pi3-b\n"
    assert "127.0.1.1\tpi3-b" in _cat(card, "/etc/hosts")
    assert "octopi" not in _cat(card, "/etc/hosts")
    stat = subprocess.run(
        [
            "debugfs",
            "-R",
            'stat "/etc/ssh/ssh_host_ecdsa_key"',
            f"{card}?offset={root_offset(card)}",
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert "Mode:  0600" in stat and "User:     0" in stat
    ext = tmp_path / "root.ext4"
    with open(card, "rb") as f:
        f.seek(root_offset(card))
        ext.write_bytes(f.read(48 << 20))
    subprocess.run(["e2fsck", "-fn", str(ext)], check=True, capture_output=True)
    again = refresh_identity(card, "pi3-b")
    assert again.host_keys != ident.host_keys and again.machine_id != ident.machine_id
