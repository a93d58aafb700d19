"""`rig flash --target` and `rig images list` through the real CLI entry point."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _writer_images import fill_random, have_tools, make_image, sample_trees

from rig.card.usedmap import derive_map
from rig.cli import main

pytestmark = pytest.mark.skipif(not have_tools(), reason="needs mkfs.fat, mtools, e2fsprogs")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("img")
    boot, root = sample_trees(work)
    return make_image(work, boot, root)


def test_flash_target_file(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the unpacked copy goes here
    xz = tmp_path / "disk.img.xz"
    xz.write_bytes(lzma.compress(image.read_bytes(), preset=0))
    target = tmp_path / "card.bin"
    fill_random(target, image.stat().st_size)
    assert main(["flash", "--target", str(target), str(xz)]) == 0
    out = capsys.readouterr().out
    assert "derived map" in out and "verified" in out
    assert len(list((tmp_path / "xdg" / "rig" / "images" / "unpacked").iterdir())) == 1
    with open(target, "rb") as t, open(image, "rb") as s:
        for e in derive_map(image).extents:
            t.seek(e.start)
            s.seek(e.start)
            assert t.read(e.size) == s.read(e.size)


def test_flash_usage_errors(image, tmp_path, capsys):
    (tmp_path / "x").touch()  # an existing target file: the image's errors are the point here
    assert main(["flash", "--target", str(tmp_path / "x"), "a", "b"]) == 2
    assert main(["flash", "--target", str(tmp_path / "x"), str(tmp_path / "missing.img")]) == 2
    assert "no such image file" in capsys.readouterr().err
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert main(["flash", "--target", str(tmp_path / "x"), str(bad)]) == 2
    assert "unknown image format" in capsys.readouterr().err


def test_flash_refuses_a_mounted_disk_with_exit_2(image, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices and mount")
    fs = tmp_path / "fs.ext4"
    with open(fs, "wb") as f:
        f.truncate(image.stat().st_size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(fs)], check=True, capture_output=True, text=True
    ).stdout.strip()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        if subprocess.run(["mount", loop, str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot mount ext4 here")
        try:
            assert main(["flash", "--target", loop, str(image)]) == 2
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        assert "is mounted on" in capsys.readouterr().err
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_images_list(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["images", "list"]) == 0
    out = capsys.readouterr().out
    assert "octopi-1.1.0" in out and "cached: 0 image(s)" in out
    assert "cards written" not in out
    assert main(["images", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"version", "catalog", "cache", "images", "uncatalogued", "cards"}
    assert data["version"] == 1 and data["cards"] == [] and data["uncatalogued"] == []
    assert data["cache"] == {
        "root": str(tmp_path / "rig" / "images"),
        "limit_gb": 20.0,
        "images": 0,
        "bytes": 0,
    }
    images = {i["name"]: i for i in data["images"]}
    assert images["octopi-1.1.0"]["base"] == "bookworm" and images["octopi-1.1.0"]["cached"] is None
    assert set(images["octopi-1.1.0"]) == {
        "name",
        "description",
        "base",
        "product",
        "octopi",
        "version",
        "url",
        "sha256",
        "virtual_recipe",
        "cached",
    }


def test_images_list_shows_cards(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps long paths in narrow terminals
    target = tmp_path / "card.bin"
    target.touch()  # --target writes existing files only
    assert main(["flash", "--target", str(target), str(image)]) == 0
    capsys.readouterr()
    assert main(["images", "list"]) == 0
    out = capsys.readouterr().out
    assert "cards written" in out and "card.bin" in out
    assert main(["images", "list", "--json"]) == 0
    (card,) = json.loads(capsys.readouterr().out)["cards"]
    assert set(card) == {
        "card",
        "writes",
        "bytes",
        "verify_failures",
        "io_errors",
        "last_image",
        "last_result",
        "last_at",
    }
    assert card["card"].endswith("card.bin") and card["writes"] == 1 and card["bytes"] > 0
    assert card["verify_failures"] == 0 and card["io_errors"] == 0
