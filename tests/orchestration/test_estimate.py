import pytest

from rig.orchestration.estimate import Work, simulate


def test_equal_work_spreads_evenly() -> None:
    work = [Work(f"s{i}", 10, 50) for i in range(6)]
    est = simulate(work, devices=3, write_slots=3)
    assert est.wall == 120 and est.lower_bound == 120


def test_write_slots_serialise_writes() -> None:
    work = [Work(f"s{i}", 100, 0) for i in range(3)]
    assert simulate(work, devices=3, write_slots=1).wall == 300
    assert simulate(work, devices=3, write_slots=3).wall == 100


def test_longest_first_beats_the_bound_ratio_of_a_bad_order() -> None:
    work = [Work("long", 0, 90)] + [Work(f"s{i}", 0, 30) for i in range(6)]
    est = simulate(work, devices=3, write_slots=3)
    assert est.lower_bound == 90
    assert est.wall == 90


def test_a_snapshot_takes_the_first_boot_and_the_pin_off_and_keeping_one_costs() -> None:
    from rig.orchestration.estimate import PI3_SECONDS, pi3_work

    s = PI3_SECONDS
    plain = pi3_work("a", True, (), "updated")
    used = pi3_work("a", True, (), "updated", snapshot="use")
    kept = pi3_work("a", True, (), "updated", snapshot="keep")
    assert plain.write == used.write == kept.write
    saved = s["boot"] - s["boot-again"] + s["prepare-pinned"] - s["prepare"]
    assert plain.rest - used.rest == saved > 0
    assert kept.rest - plain.rest == pytest.approx(s["snapshot"] + s["boot-again"] + s["prepare"])
