"""The policy of an acquire with a deadline (:mod:`leased.client.waiting`), driven by a fake clock and random.

No daemon, no sleep: the tests hand :class:`AcquireWait` the times a shell
would read from its clock and check what it answers (how long to sleep, when
to give up, which errors it never retries).  The shells' loops over a real
daemon are ``test_acquire_wait.py``'s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest

from leased.client import (
    RETRYABLE,
    AcquiredLease,
    AcquireWait,
    AlreadyHeld,
    Backoff,
    SanlockError,
    SanlockProtocolError,
    WaitExpired,
)
from leased.client.waiting import DEFAULT_BACKOFF, acquire_wait, retryable
from leased.errors import LeaseError, ResultCode
from leased.protocol import Disk
from leased.transactions import CONTENTION_CODES

pytestmark = pytest.mark.timeout(60)


class ScriptedRandom(random.Random):
    """``random()`` answers from a script (then repeats its last value): jitter chosen by the test."""

    def __init__(self, values: Iterable[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def busy(rc: int = ResultCode.ACQUIRE_IDLIVE) -> SanlockError:
    return SanlockError(rc, "acquire b'LS':b'R1' failed", "acquire")


LEASE = AcquiredLease(b"LS", b"R1", (Disk("/tmp/leases", 1 << 20),), False, 7)


# --------------------------------------------------------------------------
# Which failures are retried


def test_the_retryable_codes_are_the_daemons_contention_codes() -> None:
    """One meaning of "contention" on both sides of the socket: the client's list is the daemon's."""
    assert set(RETRYABLE) == set(CONTENTION_CODES)
    assert all(reason for reason in RETRYABLE.values())


@pytest.mark.parametrize("rc", sorted(RETRYABLE))
def test_contention_is_retried(rc: int) -> None:
    assert retryable(busy(rc))


@pytest.mark.parametrize(
    "rc",
    [
        ResultCode.ENOSPC,
        ResultCode.EINVAL,
        ResultCode.EIO,
        ResultCode.EPERM,
        ResultCode.ESRCH,
        ResultCode.ENOTCONN,
        ResultCode.ETIMEDOUT,
        ResultCode.ACQUIRE_LVER,
        ResultCode.ACQUIRE_LOCKSPACE,
        ResultCode.ACQUIRE_IDDISK,
        ResultCode.AIO_TIMEOUT,
        ResultCode.LEADER_MAGIC,
        ResultCode.EUCLEAN,
    ],
)
def test_what_time_cannot_fix_is_not_retried(rc: int) -> None:
    assert not retryable(busy(rc))


def test_holding_it_ourselves_and_a_reply_out_of_step_are_not_retried() -> None:
    assert not retryable(AlreadyHeld("acquire b'LS':b'R1': this process holds it already"))
    assert AlreadyHeld("x").rc == ResultCode.EEXIST
    protocol = SanlockProtocolError("reply for cmd 9 seq 4", "acquire")
    protocol.rc = ResultCode.EEXIST  # even with a contention code
    assert not retryable(protocol)


# --------------------------------------------------------------------------
# The backoff schedule


def test_the_ceiling_doubles_from_first_to_cap() -> None:
    backoff = Backoff(first=0.1, factor=2, cap=2)
    assert [backoff.ceiling(n) for n in range(1, 8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2, 2])
    assert backoff.ceiling(10**9) == 2  # no overflow however long the wait
    assert Backoff(first=0.5, factor=1, cap=0.5).ceiling(50) == 0.5


def test_jitter_spans_the_upper_half_of_the_ceiling() -> None:
    backoff = Backoff(first=0.1, factor=2, cap=2)
    assert backoff.delay(3, ScriptedRandom([0.0])) == pytest.approx(0.2)
    assert backoff.delay(3, ScriptedRandom([0.999999])) == pytest.approx(0.4, rel=1e-5)
    seeded = random.Random(1)
    delays = [backoff.delay(n, seeded) for n in range(1, 200)]
    assert all(backoff.ceiling(n) / 2 <= d <= backoff.ceiling(n) for n, d in zip(range(1, 200), delays, strict=True))
    assert len({round(d, 9) for d in delays[10:]}) > 150  # the capped delays are not in step


@pytest.mark.parametrize(
    "kwargs", [{"first": 0}, {"first": 3, "cap": 2}, {"factor": 0.5}, {"cap": math.inf}, {"first": -1}]
)
def test_a_backoff_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LeaseError) as refused:
        Backoff(**kwargs)
    assert refused.value.rc == ResultCode.EINVAL


# --------------------------------------------------------------------------
# The deadline


def run_wait(
    plan: AcquireWait, free_at: float, attempt_takes: float = 0.01, start: float = 1000.0
) -> tuple[AcquiredLease | WaitExpired, list[float]]:
    """What a shell does, on a fake clock: attempts fail with -243 until ``free_at`` s after the start."""
    now = start
    sleeps: list[float] = []
    plan.begin(now)
    while True:
        now += attempt_takes
        if now - start >= free_at:
            return plan.succeeded(LEASE, now), sleeps
        try:
            pause = plan.retry_after(busy(), now)
        except WaitExpired as expired:
            return expired, sleeps
        assert pause >= 0
        sleeps.append(pause)
        now += pause


def test_a_wait_retries_until_the_lease_is_free() -> None:
    plan = AcquireWait(10, rng=random.Random(7))
    lease, sleeps = run_wait(plan, free_at=3.0)
    assert isinstance(lease, AcquiredLease)
    assert lease == LEASE and lease.lver == 7  # waited/attempts do not take part in equality
    assert lease.attempts == len(sleeps) + 1 == plan.attempts
    assert 3.0 <= lease.waited < 3.0 + DEFAULT_BACKOFF.cap + 0.01
    assert sleeps[:3] == sorted(sleeps[:3])  # growing while below the cap
    assert all(pause <= DEFAULT_BACKOFF.cap for pause in sleeps)


def test_a_wait_that_runs_out_raises_the_last_code_with_the_time_waited() -> None:
    plan = AcquireWait(5, rng=random.Random(3))
    expired, sleeps = run_wait(plan, free_at=math.inf)
    assert isinstance(expired, WaitExpired)
    assert expired.rc == ResultCode.ACQUIRE_IDLIVE and plan.last_rc == ResultCode.ACQUIRE_IDLIVE
    assert expired.attempts == len(sleeps) + 1
    # The last sleep is cut to the deadline, and one last attempt is made there.
    assert 5.0 <= expired.waited <= 5.0 + 0.01 + 1e-9
    assert sum(sleeps) <= 5.0
    assert isinstance(expired.__cause__, SanlockError) and expired.__cause__.rc == expired.rc
    assert "still contended after" in str(expired)


def test_wait_zero_is_one_attempt() -> None:
    plan = AcquireWait(0)
    expired, sleeps = run_wait(plan, free_at=math.inf)
    assert isinstance(expired, WaitExpired) and expired.attempts == 1 and sleeps == []


def test_an_error_time_cannot_fix_is_raised_at_once_unchanged() -> None:
    plan = AcquireWait(60)
    plan.begin(0.0)
    assert plan.retry_after(busy(ResultCode.EEXIST), 0.01) > 0
    refusal = busy(ResultCode.ENOSPC)
    with pytest.raises(SanlockError) as raised:
        plan.retry_after(refusal, 0.5)
    assert raised.value is refusal and not isinstance(raised.value, WaitExpired)
    assert plan.attempts == 2 and any("not retried (attempt 2" in note for note in refusal.__notes__)


def test_the_last_sleep_never_passes_the_deadline() -> None:
    plan = AcquireWait(1.0, backoff=Backoff(first=2, cap=2), rng=ScriptedRandom([1.0]))
    plan.begin(50.0)
    assert plan.retry_after(busy(), 50.25) == pytest.approx(0.75)
    assert plan.resume_at == pytest.approx(51.0)
    with pytest.raises(WaitExpired):
        plan.retry_after(busy(), 51.0)


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan])
def test_a_wait_that_cannot_end_or_has_ended_is_refused(seconds: float) -> None:
    with pytest.raises(LeaseError) as refused:
        AcquireWait(seconds)
    assert refused.value.rc == ResultCode.EINVAL


def test_an_acquire_wait_serves_one_acquire() -> None:
    plan = acquire_wait(2.5)
    assert plan.seconds == 2.5 and plan.attempts == 0
    assert acquire_wait(plan) is plan
    with pytest.raises(LeaseError):
        plan.deadline  # noqa: B018 - not begun
    plan.begin(1.0)
    assert plan.deadline == 3.5
    with pytest.raises(LeaseError):
        plan.begin(2.0)


def test_a_plain_acquire_reports_one_attempt_and_no_wait() -> None:
    assert (LEASE.waited, LEASE.attempts) == (0.0, 1)


def test_two_waiters_seeded_differently_do_not_come_back_in_step() -> None:
    """Jitter's point: two waiters that met the same release retry at different times."""

    def times(seed: int) -> list[float]:
        plan = AcquireWait(30, rng=random.Random(seed))
        _, sleeps = run_wait(plan, free_at=math.inf, attempt_takes=0.0, start=0.0)
        return [sum(sleeps[: i + 1]) for i in range(len(sleeps))]

    first, second = times(1), times(2)
    apart = [min(abs(t - other) for other in second) > 0.05 for t in first[3:]]
    assert sum(apart) > len(apart) // 2
