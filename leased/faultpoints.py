"""Named points where a test may inject an allocation failure (MemoryError) into a running daemon.

The prepare-then-commit rule (acquire, release, moving leases to a new owner)
only matters when something fails half way, and the failure that can strike
anywhere is running out of memory.  The points are a seam like the daemon's
others (``open_storage``, the fencer): a :class:`FaultPoints` object given to
the :class:`~leased.daemon.Daemon`, whose default arms nothing, so that a
production daemon's check is one dictionary lookup that finds nothing.
Nothing in the daemon reads the environment for them: in-process tests pass
an armed object, and a daemon that runs as its own process (the torture
harness's hosts, tests of the final release) is started through
``python -m leased.torture.armed_daemon --faultpoints SPEC``, the test-only
entry point that builds one from a spec such as

    acquire.prepare=0.02,release.prepare=0.02

``point=p`` arms a point with a probability (a bare ``point`` means 1);
``point@N`` makes the first N checks of a point fail and no later one (a
test's deterministic schedule).  An armed daemon says so at start in its
log, so nobody mistakes injected failures for real ones.

The points, each placed where the code has prepared something it has not yet
committed, so the failure must leave the old owner exactly as it was:

* ``acquire.prepare``: a lease is taken on disk, not yet given to the client;
* ``acquire.commit``: all disk work done, nothing attached yet;
* ``release.prepare``: a release was asked for, the token is still attached;
* ``orphan.move``: a closing client's persistent lease is about to become an orphan.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace

POINTS = ("acquire.prepare", "acquire.commit", "release.prepare", "orphan.move")

log = logging.getLogger(__name__)


class FaultPointError(ValueError):
    """A spec names an unknown point, a probability outside [0, 1] or a bad count."""


@dataclass
class Schedule:
    """When one armed point fails: its first ``failures_left`` checks, then each with ``probability``."""

    probability: float = 0.0
    failures_left: int = 0


def _point(name: str) -> str:
    name = name.strip()
    if name not in POINTS:
        raise FaultPointError(f"unknown fault point {name!r} (known: {', '.join(POINTS)})")
    return name


def parse(spec: str) -> dict[str, Schedule]:
    """``"point=p,point@n"`` to a table; a bare ``point`` means probability 1."""
    table: dict[str, Schedule] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if "@" in item:
            name, _, count = item.partition("@")
            name = _point(name)
            if not count.strip().isdigit():
                raise FaultPointError(f"{name}: count {count!r} is not a whole number")
            table[name] = Schedule(failures_left=int(count))
            continue
        name, _, value = item.partition("=")
        name = _point(name)
        try:
            probability = float(value) if value else 1.0
        except ValueError:
            raise FaultPointError(f"{name}: probability {value!r} is not a number") from None
        if not 0.0 <= probability <= 1.0:
            raise FaultPointError(f"{name}: probability {probability} is outside [0, 1]")
        table[name] = Schedule(probability)
    return table


class FaultPoints:
    """The armed points of one daemon and how often each fired; unarmed (the default) it never fails.

    One object per daemon, never module state: two daemons in one process
    (tests) do not arm each other.
    """

    def __init__(self, table: Mapping[str, float | Schedule] | None = None, rng: random.Random | None = None) -> None:
        self._armed: dict[str, Schedule] = {}
        self._hits: dict[str, int] = {}
        self._rng = rng or random.Random()
        self.arm(table or {})

    def arm(self, table: Mapping[str, float | Schedule]) -> None:
        """Replace the armed points and forget the hits.

        A bare number is a probability.  Schedules are copied: their counts
        run down here, not in the caller's table.
        """
        self._armed = {
            name: replace(schedule) if isinstance(schedule, Schedule) else Schedule(schedule)
            for name, schedule in table.items()
        }
        self._hits = {}

    @property
    def armed(self) -> dict[str, Schedule]:
        return {name: replace(schedule) for name, schedule in self._armed.items()}

    def hits(self) -> dict[str, int]:
        """How many failures each point injected so far."""
        return dict(self._hits)

    def check(self, point: str) -> None:
        """Raise MemoryError at ``point`` when it is armed and its schedule says so."""
        schedule = self._armed.get(point)
        if schedule is None:
            return
        if schedule.failures_left:
            schedule.failures_left -= 1
        elif self._rng.random() >= schedule.probability:
            return
        self._hits[point] = self._hits.get(point, 0) + 1
        log.warning("fault point %s: injecting MemoryError", point)
        raise MemoryError(f"injected allocation failure at {point}")
