"""The asyncio shell against a real leased daemon, under a plain ``asyncio.run`` loop.

:mod:`leased.client.asyncio_shell` drives the same exchanges as the trio
shell; ``tests/test_client_shells.py`` proves its methods are the trio
shell's.  What that cannot prove is the transport: asyncio's streams, its
lock, its cancellation and its timeout.  So the behaviours the trio shell is
tested for run here through asyncio against a real daemon process:
registering, lockspaces, acquire/inquire/release, many tasks sharing one
registered connection, cancellation (a pending one, and one that interrupts
an exchange while the daemon works on it), a call's timeout, and events.

One leased daemon serves the module as host 1 of ``LS`` (io_timeout 1, so a
join takes about 3 s).  Its ``watchdog_fire_timeout`` is 8, so a host that
stops renewing counts as dead 8 + 8 s after the daemon last saw it live: the
cancellation tests make such a host (host 2, "ghost", written by ``leased
direct``) own a lease, so that an acquire of it waits in the daemon for that
long, and the test can interrupt it at leisure.  No test sleeps to
synchronise: waits poll the daemon's own state against a deadline.

What a real daemon does not do on request (close a connection half way
through a reply) is scripted with the fake daemon of
``test_client_vs_sanlock``, as there for the blocking and trio shells.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from daemons import Daemon, LeaseFile, init_lease_file, new_file
from leased_daemons import leased_daemon
from test_client_vs_sanlock import fake_daemon, read_request, serve_register, wait_eof

from leased.client import (
    AsyncioClient,
    AsyncioRegistration,
    Client,
    HostInfo,
    SanlockError,
    state_fields,
)
from leased.errors import ResultCode
from leased.protocol import SETEV_REPLACE_EVENT, Cmd, StateType
from leased.torture import local_daemons

MiB = 1 << 20
LS = b"LS"
W = 8
"""The module daemon's watchdog_fire_timeout: the ghost is dead 8 * 1 + W s after it was last seen live."""

pytestmark = pytest.mark.timeout(120)

_T = TypeVar("_T")


def run(main: Callable[[], Awaitable[_T]], seconds: float = 60) -> _T:
    """Run ``main`` on a fresh plain asyncio loop, failing after ``seconds``."""

    async def bounded() -> _T:
        async with asyncio.timeout(seconds):
            return await main()

    return asyncio.run(bounded())


async def poll(condition: Callable[[], Awaitable[_T | None]], what: str, seconds: float = 30) -> _T:
    """Await ``condition`` until it returns something other than None/False (the daemon's state, polled)."""
    try:
        async with asyncio.timeout(seconds):
            while (value := await condition()) is None or value is False:
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not true after {seconds} s") from None
    return value


def rc_of(exc_info: pytest.ExceptionInfo[SanlockError]) -> int:
    return exc_info.value.rc


# --------------------------------------------------------------------------
# Fixtures: one leased daemon, LS joined as host 1, a pool of resources


class ResourcePool:
    """Hands out resources never used before in this module."""

    def __init__(self, lease_file: LeaseFile) -> None:
        self.file = lease_file
        self._next = iter(lease_file.resources)

    def take(self) -> tuple[bytes, list[tuple[str, int]]]:
        name = next(self._next)
        return name, self.file.disks(name)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with leased_daemon(tmp_path_factory.mktemp("asyncio"), "leased", "asyncio-host", watchdog_fire_timeout=W) as up:
        yield up


@pytest.fixture(scope="module")
def pool(daemon: Daemon) -> ResourcePool:
    client = daemon.client(timeout=30)
    resources = [b"R%02d" % index for index in range(1, 31)]
    lease_file = init_lease_file(client, daemon.run_dir.parent / "leases.img", LS, resources, io_timeout=1)
    client.add_lockspace(LS, 1, lease_file.path, 0, io_timeout=1)
    return ResourcePool(lease_file)


# --------------------------------------------------------------------------
# Register, acquire, inquire, release


def test_register_acquire_inquire_release(daemon: Daemon, pool: ResourcePool) -> None:
    name, disks = pool.take()
    pid = os.getpid()

    async def main() -> None:
        client = AsyncioClient(daemon.run_dir, timeout=30)
        assert await client.version() == Client(daemon.run_dir).version()
        async with client.register() as reg:
            assert reg.pid == pid and reg.broken is None
            assert await reg.inquire() == []
            lease = await reg.acquire(LS, name, disks)
            assert (lease.lockspace, lease.resource, lease.lver) == (LS, name, 1)
            assert [held.resource for held in await reg.inquire()] == [name]
            assert [held.resource for held in await client.inquire(pid=pid)] == [name]
            with pytest.raises(SanlockError) as again:
                await reg.acquire(LS, name, disks)
            assert rc_of(again) == ResultCode.EEXIST
            _, owners = await client.read_resource_owners(LS, name, disks)
            assert [owner.host_id for owner in owners] == [1]
            await reg.release(LS, name)
            assert await reg.inquire() == []
            with pytest.raises(SanlockError) as not_held:
                await reg.release(LS, name)
            assert rc_of(not_held) == ResultCode.EPERM
            # The same through the client, naming the registered pid.
            assert (await client.acquire(LS, name, disks, pid=pid)).lver == 2
            await client.release(LS, name, pid=pid)
            assert await client.inquire(pid=pid) == []
            assert reg.broken is None

    run(main)


def test_a_call_on_a_registration_never_opened_is_refused(daemon: Daemon) -> None:
    async def main() -> None:
        reg = AsyncioClient(daemon.run_dir, timeout=30).register()
        with pytest.raises(SanlockError) as refused:
            await reg.inquire()
        assert rc_of(refused) == ResultCode.EPERM
        await reg.aclose()  # closing what was never opened is allowed

    run(main)


# --------------------------------------------------------------------------
# Lockspaces


def test_add_inq_and_remove_a_lockspace(daemon: Daemon) -> None:
    path = new_file(daemon.run_dir.parent / "add.img", MiB)

    async def main() -> None:
        client = AsyncioClient(daemon.run_dir, timeout=30)
        await client.write_lockspace(b"ADD", path, io_timeout=1)
        assert (await client.read_lockspace(path)).name == b"ADD"
        assert await client.inq_lockspace(b"ADD", 1, path) is False
        await client.add_lockspace(b"ADD", 1, path, io_timeout=1, wait=False)
        assert await client.inq_lockspace(b"ADD", 1, path) is None  # being added: the join takes >= 2 s
        assert await client.inq_lockspace(b"ADD", 1, path, wait=True) is True
        (info,) = [ls for ls in await client.get_lockspaces() if ls.name == b"ADD"]
        assert (info.host_id, info.path, info.offset, info.joined) == (1, str(path), 0, True)
        await client.rem_lockspace(b"ADD", 1, path)
        assert await client.inq_lockspace(b"ADD", 1, path) is False
        with pytest.raises(SanlockError) as gone:
            await client.rem_lockspace(b"ADD", 1, path)
        assert rc_of(gone) == ResultCode.ENOENT

    run(main)


def test_cancelled_one_shot_call_closes_only_its_own_connection(daemon: Daemon) -> None:
    """A cancelled add_lockspace(wait=True): its connection is closed, the add goes on, the client works."""
    path = new_file(daemon.run_dir.parent / "cancelled.img", MiB)

    async def main() -> None:
        client = AsyncioClient(daemon.run_dir, timeout=30)
        await client.write_lockspace(b"CANCEL", path, io_timeout=1)
        adding = asyncio.create_task(client.add_lockspace(b"CANCEL", 1, path, io_timeout=1))
        # The daemon has the request once it reports the lockspace as being added.
        await poll(lambda: is_none(client.inq_lockspace(b"CANCEL", 1, path)), "CANCEL being added")
        assert not adding.done()
        adding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await adding
        assert await client.inq_lockspace(b"CANCEL", 1, path, wait=True) is True
        await client.rem_lockspace(b"CANCEL", 1, path)

    run(main)


async def is_none(call: Awaitable[object]) -> bool:
    return await call is None


# --------------------------------------------------------------------------
# Many tasks, one registered connection


CYCLES = 5


def test_tasks_share_one_registration(daemon: Daemon, pool: ResourcePool) -> None:
    """Calls from several tasks at once on one connection: each gets its own reply, the daemon sees clean messages."""
    owned = [pool.take() for _ in range(6)]
    log_before = len(daemon.log())
    done: dict[bytes, int] = {}

    async def cycle(reg: AsyncioRegistration, name: bytes, disks: list[tuple[str, int]]) -> None:
        lver = 0
        for _ in range(CYCLES):
            assert name not in [held.resource for held in await reg.inquire()]
            lease = await reg.acquire(LS, name, disks)
            assert (lease.resource, lease.lver) == (name, lver + 1)
            lver += 1
            assert name in [held.resource for held in await reg.inquire()]
            await reg.release(LS, name)
        done[name] = lver

    async def watch(reg: AsyncioRegistration) -> None:
        names = {name for name, _ in owned}
        for _ in range(3 * CYCLES):
            assert {held.resource for held in await reg.inquire()} <= names

    async def main() -> None:
        async with AsyncioClient(daemon.run_dir, timeout=30).register() as reg:
            async with asyncio.TaskGroup() as group:
                for name, disks in owned:
                    group.create_task(cycle(reg, name, disks))
                for _ in range(3):
                    group.create_task(watch(reg))
            assert reg.broken is None
            assert await reg.inquire() == []

    run(main, 90)
    assert done == {name: CYCLES for name, _ in owned}
    complaints = [line for line in daemon.log()[log_before:].splitlines() if "client connection" in line]
    assert complaints == [], "the daemon saw a mangled or refused message"


# --------------------------------------------------------------------------
# Cancellation and timeouts on the registered connection


def test_pending_cancellation_does_not_cost_the_registration(daemon: Daemon) -> None:
    """A cancellation requested before the call is taken before any byte goes out."""

    async def main() -> None:
        async with AsyncioClient(daemon.run_dir, timeout=30).register() as reg:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reg.inquire()
            assert task.uncancel() == 0
            assert reg.broken is None  # nothing had been sent
            assert await reg.inquire() == []

    run(main)


def make_ghost(lease_file: LeaseFile, names: list[bytes]) -> None:
    """Host 2 joins once on disk (``leased direct``), takes ``names``, and never renews: dead after 8 + W s."""
    leased = local_daemons.leased_command()
    path = lease_file.path
    commands = [[*leased, "direct", "acquire_id", "-s", f"LS:2:{path}:0", "-o", "1", "-e", "ghost"]]
    for name in names:
        spec = f"LS:{name.decode()}:{path}:{lease_file.offset(name)}"
        commands.append([*leased, "direct", "acquire", "-r", spec, "-i", "2", "-g", "1", "-o", "1"])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0 and done.stdout.endswith("done 0\n"), (command, done.stdout, done.stderr)


async def ghost_seen_still(client: AsyncioClient) -> bool:
    """The daemon has checked host 2 since it last saw it renew, so an acquire now waits for it to die."""
    for record in await client.host_status(LS):
        if record.data32 == 2:
            fields = state_fields(record.text)
            return 0 < int(fields["last_live"]) < int(fields["last_check"])
    return False


async def acquiring(client: AsyncioClient) -> bool:
    """Our registered connection's ACQUIRE is running in the daemon."""
    records = await client.status()
    return any(
        record.type == StateType.CLIENT
        and record.state.data32 == os.getpid()
        and record.fields["cmd_active"] == str(int(Cmd.ACQUIRE))
        for record in records
    )


async def no_registration_left(client: AsyncioClient) -> bool:
    """The daemon has forgotten our registrations (their orphaned acquires done, their leases released)."""
    try:
        await client.inquire(pid=os.getpid())
    except SanlockError as exc:
        if exc.rc == ResultCode.ESRCH:
            return True
        if exc.rc != ResultCode.EBUSY:  # EBUSY: an ACQUIRE is still running for it
            raise
    return False


@pytest.mark.slow
def test_cancelled_or_timed_out_acquire_retires_the_registration(daemon: Daemon, pool: ResourcePool) -> None:
    """An acquire interrupted while the daemon waits for a dead owner: as the trio shell, the connection is retired.

    A late reply would be read as the answer to the next call, so every later
    call is refused with -107 (ENOTCONN) and only closing is left; the
    daemon then finishes the acquire, sees the connection closed, and
    releases the lease on disk (the release rule).
    """
    (cancelled, cancelled_disks), (timed_out, timed_out_disks) = pool.take(), pool.take()
    make_ghost(pool.file, [cancelled, timed_out])

    async def main() -> None:
        client = AsyncioClient(daemon.run_dir, timeout=30)
        await poll(lambda: ghost_seen_still(client), "the daemon sees host 2 stop renewing")

        async with client.register() as reg:
            call = asyncio.create_task(reg.acquire(LS, cancelled, cancelled_disks))
            await poll(lambda: acquiring(client), "the ACQUIRE runs in the daemon")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert reg.broken is not None and "acquire" in reg.broken
            with pytest.raises(SanlockError) as refused:
                await reg.inquire()
            assert rc_of(refused) == ResultCode.ENOTCONN

        async with AsyncioClient(daemon.run_dir, timeout=1).register() as reg:
            with pytest.raises(SanlockError) as slow:
                await reg.acquire(LS, timed_out, timed_out_disks)
            assert rc_of(slow) == ResultCode.ETIMEDOUT
            assert reg.broken is not None
            with pytest.raises(SanlockError) as refused:
                await reg.release(LS, timed_out)
            assert rc_of(refused) == ResultCode.ENOTCONN

        # The daemon still answers everyone else, and cleans up after the closed connections.
        assert (await client.version()).version
        await poll(lambda: no_registration_left(client), "both orphaned acquires finished", 8 + W + 20)
        for name, disks in ((cancelled, cancelled_disks), (timed_out, timed_out_disks)):
            _, owners = await client.read_resource_owners(LS, name, disks)
            assert owners == [], f"{name!r} still held on disk"

    run(main, 90)


# --------------------------------------------------------------------------
# Events (host 3 is a second leased daemon on the same lockspace)


@pytest.mark.slow
def test_event_delivered_to_an_asyncio_channel(daemon: Daemon, pool: ResourcePool, tmp_path: Path) -> None:
    with leased_daemon(tmp_path, "peer", "asyncio-peer", watchdog_fire_timeout=W) as peer:

        async def main() -> None:
            sender = AsyncioClient(daemon.run_dir, timeout=30)
            receiver = AsyncioClient(peer.run_dir, timeout=30)
            await receiver.add_lockspace(LS, 3, pool.file.path, io_timeout=1)
            us = await poll(lambda: own_host(sender, 1), "host 1 knows itself")
            them = await poll(lambda: own_host(receiver, 3), "host 3 knows itself")
            async with await receiver.reg_event(LS) as channel:
                # A receive cancelled while it waits leaves the channel usable.
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await channel.receive()
                await sender.set_event(LS, 3, them.generation, 42, 7, flags=SETEV_REPLACE_EVENT)
                event = await channel.receive()
                assert (event.host_id, event.generation, event.event, event.data) == (3, them.generation, 42, 7)
                assert (event.from_host_id, event.from_generation) == (1, us.generation)
            await receiver.rem_lockspace(LS, 3, pool.file.path)

        run(main, 90)


async def own_host(client: AsyncioClient, host_id: int) -> HostInfo | None:
    """A daemon's entry for ``host_id``, or None until its first scan is done (-11)."""
    try:
        (host,) = await client.get_hosts(LS, host_id)
    except SanlockError as exc:
        if exc.rc != ResultCode.EAGAIN:
            raise
        return None
    return host if host.generation else None


# --------------------------------------------------------------------------
# What only a scripted daemon does


def test_no_daemon_is_enoent(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(SanlockError) as missing:
            await AsyncioClient(tmp_path, timeout=5).version()
        assert rc_of(missing) == ResultCode.ENOENT

    run(main)


def test_short_reply_is_enotconn(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        request, _ = read_request(conn)
        conn.sendall(request.reply(0).encode()[:20])

    async def main() -> None:
        with pytest.raises(SanlockError) as short:
            await AsyncioClient(tmp_path, timeout=10).version()
        assert rc_of(short) == ResultCode.ENOTCONN
        assert "connection closed after 20 of 32 bytes" in str(short.value)

    with fake_daemon(tmp_path, handler):
        run(main)


def test_registration_closed_by_the_daemon_mid_call_is_retired(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        read_request(conn)  # an inquire, answered by closing the connection

    async def main() -> None:
        async with AsyncioClient(tmp_path, timeout=10).register() as reg:
            with pytest.raises(SanlockError) as lost:
                await reg.inquire()
            assert rc_of(lost) == ResultCode.ENOTCONN
            assert reg.broken is not None
            with pytest.raises(SanlockError) as refused:
                await reg.inquire()
            assert rc_of(refused) == ResultCode.ENOTCONN
            assert "connection unusable" in str(refused.value)

    with fake_daemon(tmp_path, handler):
        run(main)


def test_closing_a_registration_ends_a_call_waiting_on_it(tmp_path: Path) -> None:
    """Another task's aclose() while a call waits for its reply: the call fails with -107, nothing hangs."""

    received = threading.Event()

    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        read_request(conn)  # never answered
        received.set()
        assert wait_eof(conn) == b""

    async def main() -> None:
        async with AsyncioClient(tmp_path, timeout=10).register() as reg:
            call = asyncio.create_task(reg.inquire())
            assert await asyncio.to_thread(received.wait, 10)
            assert not call.done()
            await reg.aclose()
            with pytest.raises(SanlockError) as lost:
                await call
            assert rc_of(lost) == ResultCode.ENOTCONN
            assert reg.broken is not None

    with fake_daemon(tmp_path, handler):
        run(main)
