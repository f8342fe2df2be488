"""Named points where a test may inject an allocation failure (MemoryError) into a running daemon.

The prepare-then-commit rule (acquire, release, moving leases to a new owner)
only matters when something fails half way, and the failure that can strike
anywhere is running out of memory.  In-process tests inject it through the
daemon's ``open_storage`` seam; a daemon that runs as its own process (the
torture harness's hosts) can only be reached through its environment:

    LEASED_TEST_FAULTPOINTS="acquire.prepare=0.02,release.prepare=0.02"

arms each named point with a probability; ``point@N`` makes the first N
checks of a point fail and no later one (a test's deterministic schedule).
Unset (always, in production) the check is one dictionary lookup that finds nothing.  An armed daemon says so
at start in its log, so nobody mistakes injected failures for real ones.

The points, each placed where the code has prepared something it has not yet
committed, so the failure must leave the old owner exactly as it was:

* ``acquire.prepare``: a lease is taken on disk, not yet given to the client;
* ``acquire.commit``: all disk work done, nothing attached yet;
* ``release.prepare``: a release was asked for, the token is still attached;
* ``orphan.move``: a closing client's persistent lease is about to become an orphan.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

ENV = "LEASED_TEST_FAULTPOINTS"

POINTS = ("acquire.prepare", "acquire.commit", "release.prepare", "orphan.move")

log = logging.getLogger(__name__)


class FaultPointError(ValueError):
    """The environment names an unknown point, a probability outside [0, 1] or a bad count."""


@dataclass
class Schedule:
    """When one armed point fails: its first ``failures_left`` checks, then each with ``probability``."""

    probability: float = 0.0
    failures_left: int = 0


def _point(name: str) -> str:
    name = name.strip()
    if name not in POINTS:
        raise FaultPointError(f"{ENV}: unknown fault point {name!r} (known: {', '.join(POINTS)})")
    return name


def parse(spec: str) -> dict[str, Schedule]:
    """``"point=p,point@n"`` to a table; a bare ``point`` means probability 1."""
    table: dict[str, Schedule] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if "@" in item:
            name, _, count = item.partition("@")
            name = _point(name)
            if not count.strip().isdigit():
                raise FaultPointError(f"{ENV}: {name}: count {count!r} is not a whole number")
            table[name] = Schedule(failures_left=int(count))
            continue
        name, _, value = item.partition("=")
        name = _point(name)
        try:
            probability = float(value) if value else 1.0
        except ValueError:
            raise FaultPointError(f"{ENV}: {name}: probability {value!r} is not a number") from None
        if not 0.0 <= probability <= 1.0:
            raise FaultPointError(f"{ENV}: {name}: probability {probability} is outside [0, 1]")
        table[name] = Schedule(probability)
    return table


_armed: dict[str, Schedule] = {}
_hits: dict[str, int] = {}


def arm(table: Mapping[str, float | Schedule]) -> None:
    """Replace the armed points (tests; the daemon calls :func:`arm_from_environment`).

    A bare number is a probability.  Schedules are copied: their counts run
    down here, not in the caller's table.
    """
    _armed.clear()
    for name, schedule in table.items():
        _armed[name] = replace(schedule) if isinstance(schedule, Schedule) else Schedule(schedule)
    _hits.clear()


def arm_from_environment() -> dict[str, Schedule]:
    table = parse(os.environ.get(ENV, ""))
    arm(table)
    if table:
        log.warning("TEST FAULT POINTS ARMED (%s): allocation failures will be injected: %s", ENV, table)
    return table


def hits() -> dict[str, int]:
    """How many failures each point injected so far."""
    return dict(_hits)


def check(point: str) -> None:
    """Raise MemoryError at ``point`` when it is armed and its schedule says so."""
    schedule = _armed.get(point)
    if schedule is None:
        return
    if schedule.failures_left:
        schedule.failures_left -= 1
    elif random.random() >= schedule.probability:
        return
    _hits[point] = _hits.get(point, 0) + 1
    log.warning("fault point %s: injecting MemoryError", point)
    raise MemoryError(f"injected allocation failure at {point}")
