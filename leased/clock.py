"""Monotonic time, as a seam.

On-disk timestamps are whole seconds of the writer's ``CLOCK_MONOTONIC`` and
never 0 (0 means "free").  Lease algorithms take a :class:`Clock` so tests
and fault injection can stand in a different source without patching.
"""

from __future__ import annotations

import time
from typing import Protocol

import trio


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds (fractional)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The production clock: ``time.monotonic`` (CLOCK_MONOTONIC on Linux) and trio.sleep."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def disk_timestamp(clock: Clock) -> int:
    """The clock as an on-disk timestamp: whole seconds, never 0."""
    return max(1, int(clock.now()))


DEFAULT_CLOCK = MonotonicClock()
