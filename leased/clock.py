"""Monotonic time, as a seam.

On-disk timestamps are whole seconds of the writer's ``CLOCK_MONOTONIC`` and
never 0 (0 means "free").  Lease algorithms take a :class:`Clock` so tests
and fault injection can stand in a different source without patching.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Protocol, TypeVar

T = TypeVar("T")


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
        import trio  # only the daemon's event loop needs it; the CLI stays trio-free

        await trio.sleep(seconds)


class BlockingClock(MonotonicClock):
    """Monotonic time whose sleep blocks the thread: for coroutines run by :func:`run_blocking`."""

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def disk_timestamp(clock: Clock) -> int:
    """The clock as an on-disk timestamp: whole seconds, never 0."""
    return max(1, int(clock.now()))


DEFAULT_CLOCK = MonotonicClock()
BLOCKING_CLOCK = BlockingClock()


def run_blocking(coro: Coroutine[object, None, T]) -> T:
    """Run a coroutine that never suspends (blocking storage and clock) to completion.

    The lease drivers are async so the daemon can run them under trio; the
    daemon-less CLI gives them :class:`BlockingClock` and blocking storage and
    runs them here, without importing an event loop.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("coroutine tried to suspend; it needs blocking storage and BLOCKING_CLOCK")
