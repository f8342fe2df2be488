"""Acquire with a deadline: which failures are worth retrying, how long to back off, when to stop.

sanlock has no blocking acquire: an acquire that meets another holder fails
at once with a contention code, and every caller (lvmlockd, vdsm) writes its
own retry loop.  ``acquire(..., wait=SECONDS)`` is that loop, written once.
This module is its policy and nothing else: no sockets, no clock, no sleep.
The shells (:mod:`leased.client.blocking`, :mod:`leased.client.trio_shell`,
:mod:`leased.client.asyncio_shell`) read their own clock, hand the time to an
:class:`AcquireWait`, and sleep for as long as it says; so the whole policy
is tested with a fake clock and a seeded random generator.

The rules:

* **Only contention is retried.**  :data:`RETRYABLE` lists the codes that
  mean "someone else has (or is taking, or releasing) this lease right now",
  each with the place sanlock answers it and why retrying can succeed.  Any
  other failure (bad arguments, no such lockspace, an I/O error, a transport
  error, a reply out of step) is raised at once: time cannot fix it.  -EEXIST
  is contention only while another local process holds the lease; when the
  process the acquire is for holds it already, the attempt raises
  :class:`~leased.client.results.AlreadyHeld` instead (the exchange asks the
  daemon with an INQUIRE on the same connection), which is never retried.
* **Backoff is exponential with jitter** (:class:`Backoff`): the n-th retry
  waits a random time in ``[d/2, d]`` with ``d = min(cap, first * factor**(n-1))``
  ("equal jitter"), so waiters that met the same release do not come back in
  step, and none of them polls faster than ``first / 2``.
* **The deadline is the caller's ``wait``**, measured from the start of the
  first attempt.  A backoff never sleeps past it, and the time left when it
  arrives buys one last attempt.  An attempt already under way is never cut
  short by the deadline (that would leave the connection out of step), so a
  wait can end up to one attempt's duration late; a caller who needs a hard
  bound uses the client's ``timeout`` (per attempt) as well.  When the
  deadline has passed after a failed attempt, the wait raises
  :class:`~leased.client.results.WaitExpired`: the last contention code as
  ``rc``, with ``waited`` and ``attempts``.
* **Waiting costs the connection nothing.**  The shells sleep between
  attempts holding no lock and with no request in flight, so cancelling a
  wait there (trio cancel scope, asyncio task cancel, ``KeyboardInterrupt``)
  leaves the registration usable; only a cancellation that lands inside an
  attempt's exchange breaks it, as for any call.

Imports: the result types only (:mod:`leased.client.results`) and the result
codes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from leased.client.results import AcquiredLease, AlreadyHeld, SanlockError, SanlockProtocolError, WaitExpired
from leased.errors import LeaseError, ResultCode

RETRYABLE: Final[Mapping[int, str]] = {
    ResultCode.EAGAIN: (
        "the lease is being released on this host (sanlock's acquire_token finds it on resources_rem), "
        "or, in leased, held shared by other live hosts while we want it exclusive: both end by themselves"
    ),
    ResultCode.EBUSY: (
        "another client of this host is acquiring the lease right now (resources_add); "
        "its acquire ends one way or the other"
    ),
    ResultCode.EEXIST: (
        "another process on this host holds the lease (acquire_token: 'resource exists'); it may release it. "
        "When the process we acquire for holds it itself, the attempt raises AlreadyHeld, never retried"
    ),
    ResultCode.ACQUIRE_IDLIVE: "another host holds the lease and is alive (its delta lease renews); it may release it",
    ResultCode.ACQUIRE_OWNED: "another host committed the next lease version first, while we checked or balloted",
    ResultCode.ACQUIRE_OTHER: "our ballot committed another host's input: that host won this round",
    ResultCode.ACQUIRE_SHRETRY: "a shared acquire kept meeting short exclusive holds of other shared acquirers",
    ResultCode.ACQUIRE_OWNED_RETRY: (
        "owner_nowait: the owner's host is not yet known dead; it will be after host_dead_seconds, or it releases"
    ),
}
"""The contention codes an acquire with ``wait`` retries, each with why retrying can succeed.

The same set as the daemon's :data:`leased.transactions.CONTENTION_CODES`
(what it logs quietly as contention; a test keeps the two equal).  Not here,
on purpose: -240 ACQUIRE_LVER (the lease moved past the version asked for:
waiting only moves it further), -241 ACQUIRE_LOCKSPACE and -28 ENOSPC (no
lockspace to judge the owner, or not joined), -242 ACQUIRE_IDDISK, -5 EIO,
the -2xx storage codes and -202 AIO_TIMEOUT (storage trouble), -22 EINVAL,
-1 EPERM, -3 ESRCH, -117 EUCLEAN (an orphan held in the other mode), and the
transport's -107/-110/-71.
"""


def retryable(exc: SanlockError) -> bool:
    """Whether a failed attempt is contention that a later attempt may win."""
    return exc.rc in RETRYABLE and not isinstance(exc, AlreadyHeld | SanlockProtocolError)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: the n-th retry waits a random time in ``[d/2, d]``.

    ``d = min(cap, first * factor**(n-1))``.  The defaults start at 50-100 ms
    (a local release takes a few ms, a remote one up to a renewal) and level
    off at 1-2 s, so a waiter notices a lease freed by another host within
    about two seconds and sends no more than one acquire a second at worst.
    """

    first: float = 0.1
    factor: float = 2.0
    cap: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap < math.inf and self.factor >= 1):
            raise LeaseError(ResultCode.EINVAL, f"backoff needs 0 < first <= cap < inf and factor >= 1: {self}")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry ``retry`` (1 for the first retry)."""
        exponent = max(retry - 1, 0)
        # factor**exponent overflows long after it passes cap: stop computing once it has.
        limit = math.log(self.cap / self.first, self.factor) if self.factor > 1 else 0.0
        return self.cap if exponent > limit else min(self.cap, self.first * self.factor**exponent)

    def delay(self, retry: int, rng: random.Random) -> float:
        """A jittered wait before retry ``retry``: uniform in ``[ceiling/2, ceiling]``."""
        top = self.ceiling(retry)
        return top / 2 + rng.random() * top / 2


DEFAULT_BACKOFF: Final = Backoff()


class AcquireWait:
    """One acquire's wait: its deadline, its backoff, and what it has done so far.

    ``acquire(..., wait=5)`` makes one of these; pass one yourself
    (``wait=AcquireWait(5, backoff=..., rng=random.Random(seed))``) to choose
    the schedule, to seed the jitter, or to watch :attr:`attempts` from
    another thread or task while the acquire runs.  It serves one acquire.

    A shell calls :meth:`begin` with its clock's time before the first
    attempt, :meth:`retry_after` after each failed one (it returns how long
    to sleep, or raises), and :meth:`succeeded` with the lease.
    """

    def __init__(self, seconds: float, *, backoff: Backoff = DEFAULT_BACKOFF, rng: random.Random | None = None) -> None:
        if not 0 <= seconds < math.inf:
            raise LeaseError(ResultCode.EINVAL, f"wait must be a finite number of seconds >= 0, not {seconds!r}")
        self.seconds = float(seconds)
        self.backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self.started: float | None = None
        self.attempts = 0
        """Attempts so far, counting the one under way or about to start after the current backoff.

        Readable from another thread or task while the acquire runs: 2 or
        more means the first attempt met contention and the wait is retrying.
        """
        self.last_rc = 0
        """The code of the last failed attempt (0 before any)."""
        self.resume_at: float | None = None
        """When the current backoff ends, on the shell's clock (None before the first retry).

        While the shell's clock reads less than this, the acquire is asleep
        between attempts with nothing in flight: a cancellation then costs the
        connection nothing.
        """

    @property
    def deadline(self) -> float:
        if self.started is None:
            raise LeaseError(ResultCode.EINVAL, "this AcquireWait has not begun")
        return self.started + self.seconds

    def elapsed(self, now: float) -> float:
        """Seconds since the first attempt began."""
        return now - self.deadline + self.seconds

    def begin(self, now: float) -> None:
        """The first attempt starts now."""
        if self.started is not None:
            raise LeaseError(ResultCode.EINVAL, "an AcquireWait serves one acquire; make a new one")
        self.started = now
        self.attempts = 1

    def retry_after(self, exc: SanlockError, now: float) -> float:
        """How long to sleep before the next attempt, which the caller then makes.

        Raises ``exc`` itself when retrying cannot help, and
        :class:`WaitExpired` (from ``exc``) when the deadline has passed.
        """
        deadline = self.deadline
        if not retryable(exc):
            exc.add_note(f"acquire wait: not retried (attempt {self.attempts}, after {self.elapsed(now):.3f} s)")
            raise exc
        self.last_rc = exc.rc
        left = deadline - now
        if left <= 0:
            raise WaitExpired(exc.rc, self.elapsed(now), self.attempts, exc.detail, exc.cmd) from exc
        pause = min(self.backoff.delay(self.attempts, self._rng), left)
        self.attempts += 1
        self.resume_at = now + pause
        return pause

    def succeeded(self, lease: AcquiredLease, now: float) -> AcquiredLease:
        """The lease, with how long the wait took and how many attempts it made."""
        return replace(lease, waited=self.elapsed(now), attempts=self.attempts)


def acquire_wait(wait: float | AcquireWait) -> AcquireWait:
    """The wait a shell runs: the caller's own :class:`AcquireWait`, or a fresh one for a number of seconds."""
    return wait if isinstance(wait, AcquireWait) else AcquireWait(wait)
