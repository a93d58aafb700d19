"""Scheme detection from the card: boot markers first, then the ext4 root file system
(/etc/octopi_version, /etc/os-release, made here by mkfs.ext4 -d), then cmdline.txt."""

from __future__ import annotations

import shutil

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.card.fat import open_boot_partition
from rig.card.provision import detect
from rig.card.provision.common import CardView
from rig.card.provision.rootfs import read_root_file

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None or shutil.which("mkfs.ext4") is None,
    reason="mtools, dosfstools and e2fsprogs are needed",
)

BULLSEYE_OS = b'PRETTY_NAME="Raspbian GNU/Linux 11 (bullseye)"\nVERSION_CODENAME=bullseye\n'
BOOKWORM_OS = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n'
TRIXIE_OS = b'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_CODENAME=trixie\n'
BARE_BOOT = {"cmdline.txt": b"console=tty1 root=PARTUUID=1234abcd-02 rootwait\n"}


def root_tree(os_release: bytes, octopi: bytes | None = None, filler: int = 0) -> dict:
    tree: dict[str, bytes | str] = {
        "usr/lib/os-release": os_release,
        "etc/os-release": "../usr/lib/os-release",  # a symlink, as on Debian
        "etc/hostname": b"raspberrypi\n",
        "home/pi/.bashrc": b"# bash\n",
    }
    for i in range(filler):  # a big /etc: several directory blocks (hashed index)
        tree[f"etc/filler-config-file-number-{i:04d}.conf"] = b"x=1\n"
    if octopi is not None:
        tree["etc/octopi_version"] = octopi
    return tree


def detected(card) -> tuple[str, str]:
    with open_boot_partition(card.path, write=False) as vol:
        return detect(CardView(vol))


@pytest.mark.parametrize("block", [1024, 4096])
def test_reads_files_and_symlinks_from_ext4(tmp_path, block):
    big = bytes(range(256)) * 300  # 75 KiB: many blocks, extents
    tree = root_tree(BOOKWORM_OS, b"1.1.0\n", filler=400)
    tree["opt/big.bin"] = big
    tree["etc/absolute-link"] = "/usr/lib/os-release"
    card = cards.build_card(
        tmp_path, BARE_BOOT, fat=16, size_mib=8, root=tree, root_mib=8, root_block=block
    )
    with open(card.path, "rb") as f:
        assert read_root_file(f, "/etc/octopi_version") == b"1.1.0\n"
        assert read_root_file(f, "/etc/os-release") == BOOKWORM_OS
        assert read_root_file(f, "/etc/absolute-link") == BOOKWORM_OS
        assert read_root_file(f, "/etc/filler-config-file-number-0399.conf") == b"x=1\n"
        assert read_root_file(f, "/opt/big.bin") == big
        assert read_root_file(f, "/etc/missing") is None
        assert read_root_file(f, "/etc") is None  # a directory, not a file
        assert read_root_file(f, "/etc/hostname/x") is None


def test_no_readable_root_means_no_root_facts(tmp_path):
    card = cards.build_card(tmp_path, BARE_BOOT, fat=16, size_mib=8)  # root never formatted
    with open(card.path, "rb") as f:
        assert read_root_file(f, "/etc/os-release") is None
    assert detected(card)[0] == "firstrun"


@pytest.mark.parametrize(
    ("tree", "boot", "scheme", "says"),
    [
        (root_tree(BULLSEYE_OS, b"1.0.0\n"), {}, "octopi-legacy", "OctoPi 1.0.0"),
        (root_tree(BOOKWORM_OS, b"1.1.0\n"), {}, "nmconnection", "OctoPi 1.1.0"),
        (root_tree(BULLSEYE_OS), {}, "wpa-supplicant", "bullseye"),
        (root_tree(BOOKWORM_OS), {}, "custom-toml", "bookworm"),
        (root_tree(TRIXIE_OS), {}, "firstrun", "trixie"),
        (root_tree(BOOKWORM_OS), {"octopi.txt": b"#\n"}, "nmconnection", "bookworm"),
        # the boot partition's own markers win: that is what first boot reads
        (root_tree(TRIXIE_OS), {"user-data": b"#cloud-config\n"}, "cloud-init", "trixie"),
        (
            root_tree(BULLSEYE_OS, b"1.0.0\n"),
            {"octopi-wpa-supplicant.txt": b"#\n"},
            "octopi-legacy",
            "OctoPi 1.0.0",
        ),
    ],
)
def test_detection_uses_the_root_file_system(tmp_path, tree, boot, scheme, says):
    card = cards.build_card(
        tmp_path, {**BARE_BOOT, **boot}, fat=16, size_mib=8, root=tree, root_mib=4
    )
    name, reason = detected(card)
    assert name == scheme
    assert says in reason


def test_virtual_recipes_boot_files_detect_as_the_catalogue_says(tmp_path):
    """The project's own virtual images ship these boot files; detection must agree
    with rig/card/catalog.yaml's scheme for each."""
    from rig.card.catalog import load_catalog
    from rig.virtual.images import RECIPES_DIR as recipes

    for image in load_catalog().images.values():
        if not image.virtual:
            continue
        boot = recipes / image.virtual.recipe / "boot"
        files = {
            p.relative_to(boot).as_posix(): p.read_bytes().replace(b"{partuuid}", b"1234abcd")
            for p in boot.rglob("*")
            if p.is_file()
        }
        d = tmp_path / image.name
        d.mkdir()
        card = cards.build_card(d, files, fat=16, size_mib=8)
        assert detected(card)[0] == image.scheme, image.name


@pytest.mark.parametrize(
    ("tree_extra", "boot", "says"),
    [
        ({"usr/lib/systemd/system/rpi-preseed.service": b"[Unit]\n"}, {}, "rpi-preseed.service"),
        ({}, {"rpi-preseed.toml": b"[system]\n"}, "has an rpi-preseed.toml"),
    ],
)
def test_imagers_rpi_preseed_format_is_refused_clearly(tmp_path, tree_extra, boot, says):
    from rig.errors import ConfigError

    tree = {**root_tree(TRIXIE_OS), **tree_extra}
    card = cards.build_card(
        tmp_path, {**BARE_BOOT, **boot}, fat=16, size_mib=8, root=tree, root_mib=4
    )
    with pytest.raises(ConfigError, match="does not write yet") as e:
        detected(card)
    assert says in e.value.message and "--scheme" in e.value.hint


def test_an_octopi_uptodate_image_is_octopi_and_says_its_build(tmp_path):
    tree = {
        **root_tree(BOOKWORM_OS, b"1.1.0\n"),
        "etc/octopiuptodate_build": b"1.1.0-1.11.8-20260101000000\n",
    }
    card = cards.build_card(tmp_path, BARE_BOOT, fat=16, size_mib=8, root=tree, root_mib=4)
    name, reason = detected(card)
    assert name == "nmconnection"
    assert "OctoPi-UpToDate build 1.1.0-1.11.8-20260101000000" in reason
