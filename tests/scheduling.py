"""The order in which xdist's workers take tests: the longest first, one long test per worker.

The suite waits on real lease timeouts far more than it computes, so it runs
on many more workers than the machine has cores, and its wall time is then
set by the long tests: a 90 s torture run started last ends the run 90 s
after everything else.  So the tests are handed out longest first (the
greedy "longest processing time" rule), using the durations a previous run
recorded in ``tests/durations.json`` (``scripts/test --store-durations``
rewrites it).  A test missing from the file counts as :data:`UNKNOWN_SECONDS`.

xdist's ``load`` scheduler with ``--maxschedchunk 1`` first gives each worker
two consecutive tests and then one more each time one ends, so the order
here pairs the i-th longest test with the i-th shortest of the first
``2 * workers``: no worker starts with two long tests while another has none.
Tests are ranked by module (see :func:`longest_first`), not one by one.

The order changes only when tests run, never what they check: a stale or
missing file makes the run slower, not different.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

DURATIONS_FILE = Path(__file__).with_name("durations.json")
UNKNOWN_SECONDS = 1.0

_Item = TypeVar("_Item")


def load_durations(path: Path = DURATIONS_FILE) -> dict[str, float]:
    """Seconds per test id from ``path``; an absent or unreadable file gives no durations."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(key): float(value) for key, value in loaded.items() if isinstance(value, int | float)}


def store_durations(durations: Mapping[str, float], path: Path = DURATIONS_FILE) -> None:
    """Write the durations sorted by test id, so that a rewrite shows as a readable diff."""
    rounded = {key: round(durations[key], 2) for key in sorted(durations)}
    path.write_text(json.dumps(rounded, indent=0) + "\n")


def longest_first(
    items: Sequence[_Item],
    seconds: Callable[[_Item], float],
    group: Callable[[_Item], str],
    workers: int,
    late: Callable[[_Item], bool] = lambda item: False,
) -> list[_Item]:
    """``items`` by group, the longest test's group first, each in its own order; paired for the first hand-out.

    ``late`` items go last whatever they cost: they read what an earlier test
    made once for the whole run (tests/once.py), and taken early they would
    hold a worker waiting for it.

    A group is a test module: pytest tears a module's fixtures down whenever
    the next test is from another module, so a module's tests stay together
    (in the order pytest collected them, which also keeps parametrized
    module fixtures set up once per parameter).  Each worker then sets a
    module fixture up at most once per stretch of that module it runs.
    Groups are ranked by their longest test, not their total: a module of
    many short tests spreads over the workers anyway, while one 90 s test
    ends the run 90 s after it starts.
    """
    last = [item for item in items if late(item)]
    items = [item for item in items if not late(item)]
    longest: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        key = group(item)
        longest[key] = max(longest.get(key, 0.0), seconds(item))
        first_seen.setdefault(key, index)
    ranked = sorted(items, key=lambda item: (-longest[group(item)], first_seen[group(item)]))  # stable
    if workers <= 1:
        return ranked + last
    head, tail = ranked[: 2 * workers], ranked[2 * workers :]
    by_length = sorted(head, key=seconds, reverse=True)
    paired: list[_Item] = []
    for index in range((len(by_length) + 1) // 2):
        paired.append(by_length[index])
        partner = len(by_length) - 1 - index
        if partner != index:
            paired.append(by_length[partner])
    return paired + tail + last
