"""The run's test order (tests/scheduling.py): longest test's module first, modules kept together, long with short."""

from __future__ import annotations

from pathlib import Path

from scheduling import load_durations, longest_first, store_durations

SECONDS = {"a::1": 1.0, "a::2": 2.0, "b::1": 90.0, "c::1": 40.0, "c::2": 0.1, "d::1": 5.0, "e::1": 0.5}


def order(items: list[str], workers: int) -> list[str]:
    return longest_first(items, SECONDS.__getitem__, lambda item: item.partition("::")[0], workers)


def test_one_worker_runs_the_longest_module_first_and_keeps_each_module_in_order() -> None:
    assert order(list(SECONDS), 1) == ["b::1", "c::1", "c::2", "d::1", "a::1", "a::2", "e::1"]


def test_the_first_hand_out_pairs_each_long_test_with_a_short_one() -> None:
    # two workers take two tests each first: b::1 with the shortest, c::1 with the next shortest
    ranked = order(list(SECONDS), 2)
    assert ranked[:4] == ["b::1", "c::2", "c::1", "d::1"]
    assert ranked[4:] == ["a::1", "a::2", "e::1"]
    assert sorted(ranked) == sorted(SECONDS)


def test_the_module_of_the_longest_test_goes_first_however_much_the_others_add_up_to() -> None:
    seconds = {"many::1": 3.0, "many::2": 3.0, "many::3": 3.0, "many::4": 3.0, "one::1": 10.0}
    ranked = longest_first(list(seconds), seconds.__getitem__, lambda item: item.partition("::")[0], 1)
    assert ranked[0] == "one::1"


def test_late_tests_go_last_whatever_they_cost() -> None:
    late = {"b::1", "a::1"}
    ranked = longest_first(list(SECONDS), SECONDS.__getitem__, lambda item: item[0], 2, late.__contains__)
    assert ranked[-2:] == ["a::1", "b::1"], "collection order among the late ones"
    assert ranked[:4] == ["c::1", "c::2", "d::1", "a::2"]


def test_durations_round_trip_and_a_missing_file_is_no_durations(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    assert load_durations(path) == {}
    store_durations({"b::1": 90.123, "a::1": 1.0}, path)
    assert load_durations(path) == {"a::1": 1.0, "b::1": 90.12}
    path.write_text("[1, 2]")
    assert load_durations(path) == {}
