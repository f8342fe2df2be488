"""``acquire(..., wait=SECONDS)`` in the three shells, against real leased daemons.

Two leased daemons serve the module as hosts 1 and 2 of ``LS`` on one lease
file (io_timeout 1).  A lease is held by a second process (a small script
run with this interpreter), either on host 1 (the waiter then meets -17
EEXIST, a local holder) or on host 2 (-243 ACQUIRE_IDLIVE, a live remote
one).  The holder releases only once the waiter has been seen retrying: the
test polls the waiter's :class:`AcquireWait` (``attempts``), never sleeps to
synchronise, and asserts no timing beyond ordering facts (the waiter's lease
version follows the holder's; a wait that ran out waited at least ``wait``).

Cancellation is checked where it is promised to cost nothing: while the
waiter sleeps between attempts.  The test knows it does when the shell's
clock reads less than ``plan.resume_at`` (the waiter cannot wake before it);
then a trio cancel scope, an asyncio ``task.cancel()`` or a SIGINT (in a
child process, for the blocking shell) stops the wait and the registration
stays usable.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import pytest
import trio
from daemons import Daemon, LeaseFile, init_lease_file, wait_for
from leased_daemons import leased_daemon

from leased.client import (
    RETRYABLE,
    AcquiredLease,
    AcquireWait,
    AlreadyHeld,
    AsyncClient,
    AsyncioClient,
    SanlockError,
    WaitExpired,
)
from leased.errors import ResultCode

LS = b"LS"

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------
# Fixtures: two hosts of LS, a pool of fresh resources, a holder process


@dataclass
class Cluster:
    hosts: dict[int, Daemon]
    lease_file: LeaseFile
    _next: Iterator[bytes]

    def take(self) -> tuple[bytes, list[tuple[str, int]]]:
        """A resource no test of this module used before, and its disks."""
        name = next(self._next)
        return name, self.lease_file.disks(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("acquire-wait")
    with leased_daemon(tmp, "host1", "wait-host-1") as one, leased_daemon(tmp, "host2", "wait-host-2") as two:
        resources = [b"W%02d" % index for index in range(1, 25)]
        lease_file = init_lease_file(one.client(), tmp / "leases.img", LS, resources, io_timeout=1)
        hosts = {1: one, 2: two}
        for host_id, daemon in hosts.items():
            daemon.client().add_lockspace(LS, host_id, lease_file.path, 0, io_timeout=1, wait=False)
        for host_id, daemon in hosts.items():
            assert daemon.client().inq_lockspace(LS, host_id, lease_file.path, 0, wait=True) is True
        yield Cluster(hosts, lease_file, iter(resources))


HOLDER = textwrap.dedent(
    """
    import sys
    from leased.client import Client

    run_dir, resource, path, offset = sys.argv[1:5]
    with Client(run_dir, timeout=30).register() as me:
        lease = me.acquire(b"LS", resource.encode(), [(path, int(offset))])
        print(lease.lver, flush=True)
        sys.stdin.readline()
        me.release(b"LS", resource.encode())
        print("released", flush=True)
        sys.stdin.readline()
    """
)


@dataclass
class Holder:
    process: subprocess.Popen[str]
    lver: int

    def release(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("release\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"


@contextmanager
def holding(daemon: Daemon, name: bytes, disks: list[tuple[str, int]]) -> Iterator[Holder]:
    """Another process, registered with ``daemon``, holding ``name`` until told to release it."""
    path, offset = disks[0]
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(daemon.run_dir), name.decode(), path, str(offset)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip().isdigit(), f"holder did not get {name!r}: {line!r}"
        yield Holder(process, int(line))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


# --------------------------------------------------------------------------
# The blocking shell


@pytest.mark.parametrize(("holder_host", "code"), [(1, ResultCode.EEXIST), (2, ResultCode.ACQUIRE_IDLIVE)])
def test_a_waiter_gets_the_lease_once_its_holder_releases_it(cluster: Cluster, holder_host: int, code: int) -> None:
    name, disks = cluster.take()
    with holding(cluster.hosts[holder_host], name, disks) as holder, cluster.hosts[1].client().register() as me:
        plan = AcquireWait(60)
        outcome: list[AcquiredLease | BaseException] = []

        def waiter() -> None:
            try:
                outcome.append(me.acquire(LS, name, disks, wait=plan))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        try:
            wait_for(lambda: plan.attempts >= 3, 60, "the waiter retrying")
            assert plan.last_rc == code and not outcome
            holder.release()
        finally:
            thread.join(60)
        [lease] = outcome
        assert isinstance(lease, AcquiredLease), lease
        assert lease.attempts == plan.attempts >= 3 and lease.waited > 0
        assert lease.lver is not None and lease.lver > holder.lver
        assert [held.resource for held in me.inquire()] == [name]


def test_the_pid_form_waits_too(cluster: Cluster) -> None:
    """``Client.acquire(pid=...)``: one connection per attempt, the same policy."""
    name, disks = cluster.take()
    client = cluster.hosts[1].client()
    with holding(cluster.hosts[2], name, disks) as holder, client.register() as me:
        plan = AcquireWait(60)
        outcome: list[AcquiredLease | BaseException] = []

        def waiter() -> None:
            try:
                outcome.append(client.acquire(LS, name, disks, pid=me.pid, wait=plan))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        try:
            wait_for(lambda: plan.attempts >= 2, 60, "the waiter retrying")
            holder.release()
        finally:
            thread.join(60)
        [lease] = outcome
        assert isinstance(lease, AcquiredLease), lease
        assert lease.lver is not None and lease.lver > holder.lver
        with pytest.raises(AlreadyHeld):
            client.acquire(LS, name, disks, pid=me.pid, wait=60)


@pytest.mark.parametrize("holder_host", [1, 2])
def test_a_wait_that_runs_out_raises_the_contention_code_and_the_time_waited(
    cluster: Cluster, holder_host: int
) -> None:
    name, disks = cluster.take()
    with holding(cluster.hosts[holder_host], name, disks), cluster.hosts[1].client().register() as me:
        with pytest.raises(WaitExpired) as expired:
            me.acquire(LS, name, disks, wait=1.0)
        assert expired.value.rc in RETRYABLE
        assert expired.value.rc == (ResultCode.EEXIST if holder_host == 1 else ResultCode.ACQUIRE_IDLIVE)
        assert expired.value.waited >= 1.0 and expired.value.attempts >= 2
        assert me.broken is None and me.inquire() == []


def test_errors_time_cannot_fix_stop_the_wait_at_once(cluster: Cluster) -> None:
    name, disks = cluster.take()
    with cluster.hosts[1].client().register() as me:
        plan = AcquireWait(60)
        with pytest.raises(SanlockError) as no_lockspace:
            me.acquire(b"NOPE", name, disks, wait=plan)
        assert no_lockspace.value.rc == ResultCode.ENOSPC and not isinstance(no_lockspace.value, WaitExpired)
        assert plan.attempts == 1

        me.acquire(LS, name, disks)
        plan = AcquireWait(60)
        with pytest.raises(AlreadyHeld) as ours:
            me.acquire(LS, name, disks, wait=plan)
        assert ours.value.rc == ResultCode.EEXIST and plan.attempts == 1
        assert me.broken is None and [held.resource for held in me.inquire()] == [name]

        with pytest.raises(SanlockError) as bad_offset:
            me.acquire(LS, b"W-nowhere", [(str(cluster.lease_file.path), 123)], wait=60)
        assert bad_offset.value.rc not in RETRYABLE


INTERRUPTED = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, threading, time
    from leased.client import AcquireWait, Backoff, Client

    faulthandler.dump_traceback_later(50, exit=True)  # a hang shows where, before the test's timeout
    # A process started in the background by a non-interactive shell (nohup ... &, some CI runners)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: install it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir, resource, path, offset = sys.argv[1:5]
    # One long sleep after the first refusal (20-40 s): SIGINT is sent at least 15 s before the
    # waiter could wake, so it lands in the sleep however slow the machine is.
    plan = AcquireWait(120, backoff=Backoff(first=40.0, cap=40.0))

    def interrupt():
        while not (plan.attempts >= 2 and plan.resume_at is not None and time.monotonic() < plan.resume_at - 15):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    with Client(run_dir, timeout=30).register() as me:
        threading.Thread(target=interrupt, daemon=True).start()
        try:
            me.acquire(b"LS", resource.encode(), [(path, int(offset))], wait=plan)
        except KeyboardInterrupt:
            print("interrupted", plan.attempts >= 2, me.broken, me.inquire(), flush=True)
    """
)


def test_keyboard_interrupt_between_attempts_leaves_the_registration_usable(cluster: Cluster) -> None:
    name, disks = cluster.take()
    daemon = cluster.hosts[1]
    with holding(daemon, name, disks):
        path, offset = disks[0]
        done = subprocess.run(
            [sys.executable, "-c", INTERRUPTED, str(daemon.run_dir), name.decode(), path, str(offset)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.stdout.split() == ["interrupted", "True", "None", "[]"], done.stderr


# --------------------------------------------------------------------------
# trio and asyncio


async def test_trio_wait_gets_the_lease_and_is_cancellable_between_attempts(cluster: Cluster) -> None:
    name, disks = cluster.take()
    client = AsyncClient(cluster.hosts[1].run_dir, timeout=30)
    with holding(cluster.hosts[2], name, disks) as holder:
        async with client.register() as me:
            plan = AcquireWait(60)
            with trio.fail_after(60), trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(me.acquire, LS, name, disks, wait=plan))
                    # Asleep between attempts: it cannot wake before resume_at.
                    while not (plan.attempts >= 2 and plan.resume_at and trio.current_time() < plan.resume_at):
                        await trio.sleep(0.005)
                    scope.cancel()
            assert scope.cancelled_caught
            assert me.broken is None and await me.inquire() == []

            plan = AcquireWait(60)
            async with trio.open_nursery() as nursery:
                outcome: list[AcquiredLease] = []

                async def waiter() -> None:
                    outcome.append(await me.acquire(LS, name, disks, wait=plan))

                nursery.start_soon(waiter)
                with trio.fail_after(60):
                    while plan.attempts < 2:
                        await trio.sleep(0.01)
                await trio.to_thread.run_sync(holder.release)
            [lease] = outcome
            assert lease.attempts >= 2 and lease.lver is not None and lease.lver > holder.lver


def test_asyncio_wait_gets_the_lease_and_is_cancellable_between_attempts(cluster: Cluster) -> None:
    name, disks = cluster.take()

    async def main(holder: Holder) -> AcquiredLease:
        client = AsyncioClient(cluster.hosts[1].run_dir, timeout=30)
        loop = asyncio.get_running_loop()
        async with client.register() as me:
            plan = AcquireWait(60)
            task = asyncio.create_task(me.acquire(LS, name, disks, wait=plan))
            async with asyncio.timeout(60):
                while not (plan.attempts >= 2 and plan.resume_at and loop.time() < plan.resume_at):
                    await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert me.broken is None and await me.inquire() == []

            plan = AcquireWait(60)
            task = asyncio.create_task(me.acquire(LS, name, disks, wait=plan))
            async with asyncio.timeout(60):
                while plan.attempts < 2:
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(holder.release)
            async with asyncio.timeout(60):
                return await task

    with holding(cluster.hosts[1], name, disks) as holder:
        lease = asyncio.run(main(holder))
    assert lease.attempts >= 2 and lease.lver is not None and lease.lver > holder.lver
