"""Random sequences of writes, replacements and deletes (hypothesis) against a dict
model; after each sequence mtools must read exactly the model and fsck.fat must
find nothing to repair."""

from __future__ import annotations

import shutil

import provision_cards as cards  # loaded by conftest.py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.card.fat import open_boot_partition

pytestmark = pytest.mark.skipif(
    cards.tools_missing() is not None, reason=f"{cards.tools_missing()} not installed"
)

SHIPPED = {"cmdline.txt": b"root=PARTUUID=1234abcd-02\n", "overlays/README": b"x\n"}

name_chars = st.sampled_from(list("abcXYZ019-_ .~+Üé☕"))
names = st.builds(
    lambda stem, ext: (stem.strip(" .") or "f") + ext,
    st.text(name_chars, min_size=1, max_size=40),
    st.sampled_from(["", ".txt", ".conf", ".nmconnection", ".TXT", ".d"]),
)
ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "delete"]),
        st.sampled_from(["", "overlays/"]),
        names,
        st.integers(min_value=0, max_value=6000),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return {
        16: cards.build_card(tmp_path_factory.mktemp("f16"), SHIPPED, fat=16, size_mib=8),
        32: cards.build_card(tmp_path_factory.mktemp("f32"), SHIPPED, fat=32),
    }


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(fat=st.sampled_from([16, 32]), sequence=ops, commit_every=st.integers(1, 10))
def test_random_changes_match_the_model(pristine, tmp_path, fat, sequence, commit_every):
    base = pristine[fat]
    path = tmp_path / f"card{fat}.img"
    shutil.copyfile(base.path, path)
    card = cards.Card(path, base.start, base.size)
    model = {k.casefold(): (k, v) for k, v in SHIPPED.items()}
    with open_boot_partition(path) as vol:
        for i, (op, folder, name, size) in enumerate(sequence):
            full = folder + name
            if op == "write":
                data = bytes((i + j) % 251 for j in range(size))
                vol.write(full, data)
                key = full.casefold()
                model[key] = (model[key][0] if key in model else full, data)
            else:
                assert vol.delete(full) == (full.casefold() in model)
                model.pop(full.casefold(), None)
            if i % commit_every == 0:
                vol.commit()
    listed = {n.casefold() for n in card.names()} | {
        f"overlays/{n}".casefold() for n in card.names("overlays")
    }
    assert {k for k in model} <= listed
    for shown, data in model.values():
        assert card.mtype(shown) == data, shown
    card.fsck(tmp_path)
