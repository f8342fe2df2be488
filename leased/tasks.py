"""Background tasks that cannot take the daemon down: one boundary per task.

Every task the daemon starts besides a connection (a lockspace's join and
renewal, fencing, the examination of requests, a lockspace's removal, the
watch on a holder whose connection was lost) runs in the daemon's one
nursery.  An exception escaping any of them would cancel that nursery and
with it every connection and every lockspace: the daemon would exit, and
its lease holders would be left running with leases that nobody renews.
So each one is started through a :data:`Spawner`, which runs it inside
:func:`contained`: an exception is logged with what the task was doing and
ends that task alone.

Containing is not the same as ignoring.  A task whose failure leaves
something unsafe must make it safe itself before its exception reaches the
boundary: a lockspace whose renewal task breaks fails the lockspace, which
fences its holders (:meth:`leased.lockspace.JoinedLockspace.run`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

log = logging.getLogger(__name__)

Task = Callable[[], Awaitable[object]]


class Spawner(Protocol):
    """Start ``task`` in the background; ``what`` names it in the log line of its failure."""

    def __call__(self, what: str, task: Task) -> None: ...


async def contained(what: str, task: Task) -> None:
    """Run ``task``; an exception (not a cancellation) is logged and ends only this task."""
    try:
        await task()
    except Exception:
        log.exception("%s: internal error; this task ended, the daemon goes on", what)


def nursery_spawner(nursery: trio.Nursery) -> Spawner:
    """A :data:`Spawner` that starts contained tasks in ``nursery``."""

    def spawn(what: str, task: Task) -> None:
        nursery.start_soon(contained, what, task)

    return spawn
