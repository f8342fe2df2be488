"""Lease-health notices (issue 15, item 4) from real daemons, through all three client shells.

A leased daemon joins ``LS`` through the fault filesystem, so the test can
make its renewals fail and recover at will; an application's health channel
must then say WARNING once no renewal has succeeded for 6N, OK when one
succeeds again, FAILING at 8N and REMOVED once the failed lockspace is
dropped, each exactly once and in that order.  A real sanlock daemon must be
recognised at once (it ignores the command and answers the VERSION probe),
and channels must be bounded and freed when their clients close them.

No test sleeps to synchronise: each waits for the daemon's notices, which
arrive when the daemon's own clock says so.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from daemons import Daemon, LeaseFile, init_lease_file, init_lease_file_direct, sanlock_daemon
from leased_daemons import leased_daemon

from leased.client import AsyncClient, AsyncioClient, HealthNotice, HealthState, SanlockError
from leased.errors import LeaseError, ResultCode
from leased.health import MAX_HEALTH_CHANNELS
from leased.lockspace import JoinedLockspace, lockspace_key
from leased.timeouts import Timeouts, id_renewal_fail_seconds, id_renewal_warn_seconds
from leased.torture.faultfs import FaultFS

pytestmark = pytest.mark.timeout(180)

LS = b"LS"


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, LeaseFile]]:
    """One leased daemon, host 1 of LS (io_timeout 1), for the tests that need no faults."""
    tmp = tmp_path_factory.mktemp("health")
    with leased_daemon(tmp) as daemon:
        lease_file = init_lease_file(daemon.client(), tmp / "leases", LS, [b"R1"])
        daemon.client().add_lockspace(LS, 1, lease_file.path, 0, io_timeout=1)
        yield daemon, lease_file


def test_a_new_channel_reports_each_joined_lockspace_first(joined: tuple[Daemon, LeaseFile]) -> None:
    daemon, _ = joined
    with daemon.client().watch_health() as channel:
        notice = channel.receive()
    assert notice == HealthNotice(LS, 1, HealthState.OK, notice.renewal_gap, 6, 8, seq=0)
    assert 0 <= notice.renewal_gap < 6


def test_removing_the_lockspace_is_announced_in_every_shell(tmp_path: Path) -> None:
    """trio and asyncio channels get what a blocking one gets: the snapshot, then REMOVED.

    Each awaitable shell runs its own loop in a thread: it reads its first
    notice, says so, and waits for the next, while the test removes the
    lockspace.
    """
    seen: dict[str, list[HealthNotice]] = {"trio": [], "asyncio": []}
    ready = {"trio": threading.Event(), "asyncio": threading.Event()}

    def trio_watcher(run_dir: Path) -> None:
        async def main() -> None:
            with trio.fail_after(60):
                async with await AsyncClient(run_dir, timeout=30).watch_health() as channel:
                    seen["trio"].append(await channel.receive())
                    ready["trio"].set()
                    seen["trio"].append(await channel.receive())

        trio.run(main)

    def asyncio_watcher(run_dir: Path) -> None:
        async def main() -> None:
            async with asyncio.timeout(60):
                async with await AsyncioClient(run_dir, timeout=30).watch_health() as channel:
                    seen["asyncio"].append(await channel.receive())
                    ready["asyncio"].set()
                    seen["asyncio"].append(await channel.receive())

        asyncio.run(main())

    with leased_daemon(tmp_path) as daemon:
        client = daemon.client()
        lease_file = init_lease_file(client, tmp_path / "leases", LS, [])
        client.add_lockspace(LS, 1, lease_file.path, 0, io_timeout=1)
        with client.watch_health() as blocking, ThreadPoolExecutor(2) as pool:
            watchers = [pool.submit(trio_watcher, daemon.run_dir), pool.submit(asyncio_watcher, daemon.run_dir)]
            seen["blocking"] = [blocking.receive()]
            for name, event in ready.items():
                assert event.wait(60), f"the {name} channel got no first notice"
            client.rem_lockspace(LS, 1, lease_file.path, 0)
            seen["blocking"].append(blocking.receive())
            for watcher in watchers:
                watcher.result(timeout=60)
    for name, notices in seen.items():
        assert [(n.lockspace, n.host_id, n.state, n.seq) for n in notices] == [
            (LS, 1, HealthState.OK, 0),
            (LS, 1, HealthState.REMOVED, 1),
        ], name


@pytest.mark.slow
def test_failing_renewals_warn_recover_fail_and_remove(tmp_path: Path, faults: FaultFS) -> None:
    """The whole life of a lockspace whose storage fails, as an application's channel tells it."""
    io_timeout = 3  # a 6 s window between the warning (6N) and the failure (8N) for the recovery
    warn, fail = id_renewal_warn_seconds(io_timeout), id_renewal_fail_seconds(io_timeout)
    init_lease_file_direct(faults.backing / "leases", LS, [], io_timeout=io_timeout)
    with ExitStack() as stack:
        daemon = stack.enter_context(leased_daemon(tmp_path))
        daemon.client().add_lockspace(LS, 1, faults.mountpoint / "leases", 0, io_timeout=io_timeout)
        channel = stack.enter_context(daemon.client(timeout=4 * fail).watch_health())
        stack.callback(faults.heal)
        notices = [channel.receive()]
        assert notices[0].state is HealthState.OK

        faults.set(read="eio", write="eio", path="leases")
        warning = channel.receive()
        assert warning.state is HealthState.WARNING
        faults.heal()
        recovered = channel.receive()
        assert recovered.state is HealthState.OK, "renewals recovered before 8N"
        assert "renewal failed" not in daemon.log()
        notices += [warning, recovered]

        faults.set(read="eio", write="eio", path="leases")
        failed_at = time.monotonic()
        notices.extend(channel.receive() for _ in range(3))
        assert "renewal failed" in daemon.log()

    assert [n.state for n in notices] == [
        HealthState.OK,
        HealthState.WARNING,
        HealthState.OK,
        HealthState.WARNING,
        HealthState.FAILING,
        HealthState.REMOVED,
    ]
    assert [n.seq for n in notices] == list(range(6))
    assert all((n.lockspace, n.host_id, n.warn_after, n.fail_after) == (LS, 1, warn, fail) for n in notices)
    failing = notices[4]
    assert warning.renewal_gap >= warn and failing.renewal_gap >= fail
    assert recovered.renewal_gap < warn
    assert time.monotonic() - failed_at < 4 * fail


@pytest.mark.sanlock
def test_sanlock_is_recognised_at_once(tmp_path: Path) -> None:
    """sanlock ignores LEASED_HEALTH and answers the VERSION probe: -95 at once, no timeout needed."""
    with sanlock_daemon(tmp_path) as daemon:
        for attempt in range(2):  # and the connection it left behind did sanlock no harm
            with pytest.raises(SanlockError) as info:
                daemon.client(timeout=None).watch_health()
            assert info.value.rc == ResultCode.EOPNOTSUPP, attempt
        assert daemon.client().version().version == "3.8.5"

        async def trio_attempt() -> int:
            with trio.fail_after(30):
                try:
                    await AsyncClient(daemon.run_dir).watch_health()
                except SanlockError as exc:
                    return exc.rc
            return 0

        async def asyncio_attempt() -> int:
            async with asyncio.timeout(30):
                try:
                    await AsyncioClient(daemon.run_dir).watch_health()
                except SanlockError as exc:
                    return exc.rc
            return 0

        assert trio.run(trio_attempt) == ResultCode.EOPNOTSUPP
        assert asyncio.run(asyncio_attempt()) == ResultCode.EOPNOTSUPP


def test_channels_are_bounded_and_freed_when_closed(joined: tuple[Daemon, LeaseFile]) -> None:
    daemon, lease_file = joined
    with ExitStack() as stack:
        channels = [stack.enter_context(daemon.client().watch_health()) for _ in range(MAX_HEALTH_CHANNELS)]
        with pytest.raises(SanlockError) as info:
            daemon.client().watch_health()
        assert info.value.rc == ResultCode.ENOCSI
        assert daemon.client().inq_lockspace(LS, 1, lease_file.path, 0) is True  # the daemon serves on
        channels.pop().close()
        # The daemon sees that close when it looks for room: no wait needed.
        with daemon.client().watch_health() as again:
            assert again.receive().state is HealthState.OK
    assert "health: all health channels in use" in daemon.log()


def test_health_moves_only_forward_from_failing_and_a_broken_listener_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """set_health's rules, without a daemon: FAILING never goes back, REMOVED is final, and a
    callback that raises is logged, never passed on to the renewal or fencing that called it."""
    told: list[HealthState] = []

    def listener(lockspace: JoinedLockspace) -> None:
        told.append(lockspace.health)
        if lockspace.health is HealthState.FAILING:
            raise RuntimeError("a notice bug")

    lockspace = JoinedLockspace(
        key=lockspace_key(LS, 1, "/dev/null", 0), io_timeout=1, timeouts=Timeouts(1, 60), host_name=b"h"
    )
    lockspace.on_health = listener
    for health in (HealthState.WARNING, HealthState.WARNING, HealthState.OK, HealthState.FAILING):
        lockspace.set_health(health)
    for health in (HealthState.OK, HealthState.WARNING, HealthState.REMOVED, HealthState.OK):
        lockspace.set_health(health)
    assert told == [HealthState.WARNING, HealthState.OK, HealthState.FAILING, HealthState.REMOVED]
    assert lockspace.health is HealthState.REMOVED
    assert "health notice failed" in caplog.text


def test_a_notice_round_trips_and_anything_else_is_refused() -> None:
    notice = HealthNotice(LS, 3, HealthState.WARNING, 12, 6, 8, seq=5)
    raw = notice.encode()
    assert len(raw) == 96 and HealthNotice.decode(raw) == notice
    bad_state = raw[:24] + (9).to_bytes(4, "little") + raw[28:]  # data, the state, is at offset 24
    for junk in (raw[:50], bytes(96), bad_state):
        with pytest.raises(LeaseError) as info:
            HealthNotice.decode(junk)
        assert info.value.rc == ResultCode.EPROTO
