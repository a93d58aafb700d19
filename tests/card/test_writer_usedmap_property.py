"""Property: the map derived from generated FAT and ext file systems never skips a used block.

Each example builds real file systems (mkfs.fat + mcopy, mkfs.ext4 -d) from a generated
tree with generated mkfs options, writes the image over garbage with the derived map, and
checks with independent tools: both file systems fsck clean and every file reads back
identical (debugfs rdump, mcopy). Also, since mkfs starts from zeros, no non-zero block of
the image may lie outside the map.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from _writer_images import check_trees, fill_random, have_tools, make_ext4, make_fat

from rig.card.compose import compose_image
from rig.card.usedmap import derive_map
from rig.card.writer import write_image

pytestmark = [
    pytest.mark.skipif(not have_tools(), reason="needs mkfs.fat, mtools, e2fsprogs"),
    pytest.mark.slow,
]

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
contents = st.one_of(
    st.integers(0, 300_000).map(lambda n: ("random", n)),
    st.integers(0, 200_000).map(lambda n: ("zeros", n)),
    st.integers(0, 2_000).map(lambda n: ("text", n)),
)
files = st.lists(st.tuples(st.lists(names, max_size=2), names, contents), min_size=0, max_size=25)
ext_opts = st.sampled_from(
    [
        (),
        ("-b", "1024"),  # many block groups, first_data_block = 1
        ("-O", "^flex_bg"),
        ("-O", "^has_journal"),
        ("-O", "^metadata_csum,^uninit_bg"),  # no BLOCK_UNINIT groups
        ("-b", "1024", "-O", "sparse_super2"),
        ("-T", "small", "-I", "128"),
    ]
)
fat_kinds = st.sampled_from([("12", 4), ("16", 20), ("32", 40)])


def _make_tree(root: Path, spec, seed: int) -> None:
    root.mkdir()
    rnd = __import__("random").Random(seed)
    for dirs, name, (kind, n) in spec:
        d = root.joinpath(*dirs)
        if d.exists() and not d.is_dir():
            continue
        d.mkdir(parents=True, exist_ok=True)
        p = d / (name + ".f")
        if p.exists():
            continue
        if kind == "random":
            p.write_bytes(rnd.randbytes(n))
        elif kind == "zeros":
            p.write_bytes(bytes(n))
        else:
            p.write_text("x=1\n" * (n // 4))


@settings(
    max_examples=int(os.environ.get("RIG_PROPERTY_EXAMPLES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(boot_spec=files, root_spec=files, opts=ext_opts, fat=fat_kinds, seed=st.integers(0, 9))
def test_derived_map_never_skips_a_used_block(boot_spec, root_spec, opts, fat, seed):
    work = Path(tempfile.mkdtemp(prefix="rig-usedmap-"))
    try:
        boot_tree, root_tree = work / "boot", work / "root"
        _make_tree(boot_tree, [(d[:1], n, c) for d, n, c in boot_spec], seed)
        _make_tree(root_tree, root_spec, seed + 1)
        fat_type, fat_mib = fat
        fat_img = work / "boot.fat"
        from _writer_images import run

        run("mkfs.fat", "-F", fat_type, "-C", str(fat_img), str(fat_mib * 1024))
        entries = [str(p) for p in sorted(boot_tree.iterdir())]
        if entries:
            try:
                run("mcopy", "-s", "-i", str(fat_img), *entries, "::/")
            except subprocess.CalledProcessError as e:
                if b"full" not in e.stderr.lower():
                    raise
                return  # the generated tree does not fit this small FAT: nothing to check
        ext_img = make_ext4(work / "root.ext4", root_tree, 24, opts)
        img = compose_image(work / "disk.img", [(0x0C, fat_img), (0x83, ext_img)])
        m = derive_map(img)
        assert m.origin == "derived"
        assert not any("in full" in n for n in m.notes), m.notes  # both understood
        # no non-zero block outside the map (the file systems were made from zeros)
        data = img.read_bytes()
        pos = 0
        for e in [*m.extents, None]:
            end = e.start if e else len(data)
            gap = data[pos:end]
            assert gap.count(0) == len(gap), f"non-zero bytes in skipped {pos}..{end}"
            pos = e.end if e else pos
        target = work / "card.bin"
        fill_random(target, len(data))
        write_image(img, target)
        check_trees(target, boot_tree, root_tree, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_fat_maker_is_exercised(tmp_path):
    """The helper used above really builds each FAT type the property draws from."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.txt").write_text("hello")
    for fat_type, mib in (("12", 4), ("16", 20)):
        img = tmp_path / f"f{fat_type}.fat"
        from _writer_images import run

        run("mkfs.fat", "-F", fat_type, "-C", str(img), str(mib * 1024))
        assert img.stat().st_size == mib << 20
    assert make_fat(tmp_path / "f32.fat", tree, 40).stat().st_size == 40 << 20
