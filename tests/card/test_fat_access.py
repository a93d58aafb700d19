"""rig.card.fat on real FAT16/FAT32 file systems made by mkfs.fat, checked with mtools
and fsck.fat (implementations independent of ours)."""

from __future__ import annotations

import random
import struct

import provision_cards as cards  # loaded by conftest.py
import pytest

from rig.card.fat import FatVolume, open_boot_partition, read_boot_file
from rig.errors import ConfigError, InfraError

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)

SHIPPED = {
    "cmdline.txt": b"console=serial0,115200 root=PARTUUID=1234abcd-02 rootwait\n",
    "config.txt": b"dtparam=audio=on\n",
    "bcm2710-rpi-3-b-plus.dtb": bytes(range(256)) * 40,  # 10 KiB, several clusters
    "overlays/README": b"overlays\n",
    "LICENCE.broadcom": b"licence text\n",
}


@pytest.fixture(params=[16, 32], ids=["fat16", "fat32"])
def card(request, tmp_path):
    return cards.build_card(tmp_path, SHIPPED, fat=request.param)


def test_reads_what_mtools_wrote(card):
    with open_boot_partition(card.path, write=False) as vol:
        names = {e.name for e in vol.listdir("/")}
        assert {"cmdline.txt", "config.txt", "bcm2710-rpi-3-b-plus.dtb", "overlays"} <= names
        for name, data in SHIPPED.items():
            assert vol.read(name) == data
        assert vol.read("CMDLINE.TXT") == SHIPPED["cmdline.txt"]  # FAT is case-insensitive


def test_fat_type_matches_mkfs(tmp_path):
    for fat in (16, 32):
        c = cards.build_card(tmp_path, SHIPPED, fat=fat, name=f"c{fat}.img")
        with open_boot_partition(c.path, write=False) as vol:
            assert vol.fat_type == f"FAT{fat}"


def test_write_long_names_replace_delete(card, tmp_path):
    long_name = "octopi-wpa-supplicant.txt"
    unicode_name = "Wi-Fi Ünïcode ☕ name.nmconnection"
    big = bytes(random.Random(1).randrange(256) for _ in range(70_000))
    with open_boot_partition(card.path) as vol:
        vol.write(long_name, b"network={}\n")
        vol.write(unicode_name, b"[connection]\n")
        vol.write("ssh", b"")
        vol.write("cmdline.txt", b"console=tty1 root=PARTUUID=1234abcd-02 rootwait quiet\n")
        vol.write("bcm2710-rpi-3-b-plus.dtb", big)  # grows over many clusters
        vol.write("overlays/new-overlay.dtbo", b"overlay")
        assert vol.delete("LICENCE.broadcom")
        assert not vol.delete("not-there.txt")
    assert card.mtype(long_name) == b"network={}\n"
    assert card.mtype(unicode_name) == b"[connection]\n"
    assert card.mtype("ssh") == b""
    assert card.mtype("cmdline.txt").endswith(b"quiet\n")
    assert card.mtype("bcm2710-rpi-3-b-plus.dtb") == big
    assert card.mtype("overlays/new-overlay.dtbo") == b"overlay"
    assert card.mtype("overlays/README") == SHIPPED["overlays/README"]
    assert card.mtype("config.txt") == SHIPPED["config.txt"]
    listed = card.names()
    assert {long_name, unicode_name, "ssh", "cmdline.txt"} <= listed
    assert "LICENCE.broadcom" not in listed
    card.fsck(tmp_path)


def test_replace_keeps_the_existing_names(card):
    with open_boot_partition(card.path) as vol:
        vol.write("OCTOPI-WPA-SUPPLICANT.TXT", b"first")  # new: long name as given
        vol.write("octopi-wpa-supplicant.txt", b"second")  # same file, any case
    assert card.mtype("octopi-wpa-supplicant.txt") == b"second"
    assert "OCTOPI-WPA-SUPPLICANT.TXT" in card.names()


def test_short_names_are_unique(card, tmp_path):
    names = [f"firmware-file-number-{i}.dat" for i in range(12)]
    with open_boot_partition(card.path) as vol:
        for i, n in enumerate(names):
            vol.write(n, str(i).encode())
        shorts = {e.short_name for e in vol.listdir("/") if e.name in names}
    assert len(shorts) == len(names)
    for i, n in enumerate(names):
        assert card.mtype(n) == str(i).encode()
    card.fsck(tmp_path)


def test_lowercase_8_3_names_need_no_long_entry(card):
    with open_boot_partition(card.path) as vol:
        vol.write("userconf.txt", b"pi:x\n")
        entry = vol.stat("userconf.txt")
    assert entry is not None and len(entry.slots) == 1  # 8.3 entry with the lower-case flags
    assert "userconf.txt" in card.names()


def test_directory_grows_past_one_cluster(tmp_path):
    c = cards.build_card(tmp_path, {"cmdline.txt": b"root=x\n"}, fat=32)  # 512-byte clusters
    names = [f"a-rather-long-file-name-{i:03d}.txt" for i in range(60)]
    with open_boot_partition(c.path) as vol:
        for n in names:
            vol.write(n, n.encode())
    assert set(names) <= c.names()
    for n in names[::7]:
        assert c.mtype(n) == n.encode()
    c.fsck(tmp_path)


def test_mkdir_and_nested_files(card, tmp_path):
    with open_boot_partition(card.path) as vol:
        vol.mkdir("rig")
        vol.mkdir("rig")  # exists: nothing to do
        vol.write("rig/state-of-the-card.json", b"{}")
        with pytest.raises(FileNotFoundError):
            vol.write("missing/file.txt", b"x")
    assert card.mtype("rig/state-of-the-card.json") == b"{}"
    card.fsck(tmp_path)


def test_fragmented_files_round_trip(card, tmp_path):
    rnd = random.Random(7)
    model = dict(SHIPPED)
    with open_boot_partition(card.path) as vol:
        for step in range(60):
            name = f"file-{rnd.randrange(15)}.bin"
            if rnd.random() < 0.25 and name in model:
                vol.delete(name)
                del model[name]
            else:
                data = bytes(rnd.randrange(256) for _ in range(rnd.choice((0, 1, 511, 513, 5000))))
                vol.write(name, data)
                model[name] = data
            if step % 20 == 19:
                vol.commit()
    for name, data in model.items():
        assert card.mtype(name) == data, name
    card.fsck(tmp_path)


def test_failed_change_leaves_the_card_untouched(card):
    before = card.sha256()
    with pytest.raises(RuntimeError), open_boot_partition(card.path) as vol:
        vol.write("cmdline.txt", b"half done\n")
        vol.write("new-file.txt", b"x" * 5000)
        raise RuntimeError("boom")
    assert card.sha256() == before


def test_full_partition_is_refused_and_nothing_changes(tmp_path):
    c = cards.build_card(tmp_path, {"cmdline.txt": b"root=x\n"}, fat=16, size_mib=8)
    with open_boot_partition(c.path, write=False) as vol:
        free = vol.free_bytes
    c.mcopy_in("filler.bin", b"\0" * (free - 4096))
    before = c.sha256()
    with pytest.raises(InfraError, match="full"), open_boot_partition(c.path) as vol:
        vol.write("small.txt", b"fits")
        vol.write("too-big.bin", b"x" * 100_000)
    assert c.sha256() == before
    c.fsck(tmp_path)


def test_fat16_root_directory_full(tmp_path):
    c = cards.build_card(tmp_path, {}, fat=16, size_mib=8)
    with open_boot_partition(c.path, write=False) as vol:
        slots = vol.root_entries
    before = c.sha256()
    with (
        pytest.raises(InfraError, match="root directory is full"),
        open_boot_partition(c.path) as vol,
    ):
        for i in range(slots):
            vol.write(f"F{i}", b"")
    assert c.sha256() == before


def test_fsinfo_free_count_stays_right(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=32)
    with open_boot_partition(c.path) as vol:
        vol.write("big.bin", b"y" * 50_000)
        vol.delete("bcm2710-rpi-3-b-plus.dtb")
    out = c.fsck(tmp_path)
    assert "Free cluster summary wrong" not in out


def test_gpt_is_refused(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=32)
    with open(c.path, "r+b") as f:  # turn the MBR into a protective MBR
        f.seek(0x1BE + 4)
        f.write(b"\xee")
    with pytest.raises(ConfigError, match="GPT"), open_boot_partition(c.path):
        pass


def test_missing_fat_partition_is_refused(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=32)
    cards.write_mbr(c.path, [(0x83, c.start // 512, c.size // 512)])
    with pytest.raises(ConfigError, match="no FAT boot partition"), open_boot_partition(c.path):
        pass


def test_partition_without_a_file_system_is_refused(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=32)
    with open(c.path, "r+b") as f:
        f.seek(c.start)
        f.write(bytes(512))
    with pytest.raises(ConfigError, match="no FAT file system"), open_boot_partition(c.path):
        pass


def test_truncated_image_is_refused(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=32)
    with open(c.path, "r+b") as f:
        f.truncate(c.start + c.size // 2)
    with pytest.raises(ConfigError, match="beyond the end"), open_boot_partition(c.path):
        pass


def test_works_at_any_offset_from_a_file_object(tmp_path):
    c = cards.build_card(tmp_path, SHIPPED, fat=16, start_mib=8)
    with open(c.path, "rb") as f:
        vol = FatVolume(f, c.start, c.size)
        assert vol.read("config.txt") == SHIPPED["config.txt"]
    assert read_boot_file(c.path, "cmdline.txt") == SHIPPED["cmdline.txt"]
    assert read_boot_file(c.path, "absent.txt") is None
    (disk_id,) = struct.unpack_from("<I", c.path.read_bytes()[:512], 0x1B8)
    assert disk_id == 0x1234ABCD
