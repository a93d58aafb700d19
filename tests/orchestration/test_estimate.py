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
