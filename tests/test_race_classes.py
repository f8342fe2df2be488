"""The race classes from lease managers' history, each as named regression tests (``pytest -k test_race_``).

* (a) sanlock, unserialized calls on one connection: header, header, body,
  body from two unlocked threads; leases, connection and stream must survive
  (``test_race_a_*`` in tests/test_seed.py, the project's seed).
* (b) HAProxy takeover: a failure half way through moving leases to (or
  away from) an owner must leave the old owner exactly as it was (prepare,
  then commit), including allocation failures at the named fault points of
  :mod:`leased.faultpoints`.
* (c) QEMU return path: after an I/O error the worker ends and a fresh one
  starts with a fresh handle; nobody keeps using a handle that was closed.
* (d) libxl stale callback: an event that arrives late for an object that
  has been replaced must be discarded by its generation, not applied to its
  successor.

Each test says in its docstring what it guards against.  ``leased torture``
exercises all four under load, across processes and hosts.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio
from faulty_storage import ThroughReadAndWrite
from inprocess import RESOURCES, InProcessDaemon, Seams, add_lockspace, call, rem_lockspace

from leased import delta_lease, faultpoints, lifecycle, paxos_lease, transactions
from leased.clock import DEFAULT_CLOCK
from leased.errors import LeaseError, ResultCode
from leased.faultpoints import FaultPoints
from leased.fencing import Holder, ProcessFencer
from leased.geometry import Geometry
from leased.lockspace import JoinedLockspace, LockspaceState, lockspace_key
from leased.protocol import (
    HEADER_SIZE,
    REL_ORPHAN,
    TARGET_SELF,
    Cmd,
    Header,
    Options,
    Resource,
)
from leased.storage import FileStorage
from leased.text_forms import parse_state
from leased.timeouts import Timeouts
from leased.torture import armed_daemon
from leased.torture.local_daemons import leased_command

MiB = 1 << 20


# ---------------------------------------------------------------------------
# Seams: the production parts, wrapped to inject or record a deliberate fault


class FlakyOpener:
    """open_storage for the daemon: real FileStorage, but the N-th open after arming raises MemoryError,
    and the next open after :meth:`gate_next` is a :class:`GatedStorage`."""

    def __init__(self) -> None:
        self.fail_on: int | None = None
        self.opens = 0
        self._gate_offset: int | None = None
        self.gated: GatedStorage | None = None

    def arm(self, nth: int) -> None:
        self.fail_on, self.opens = nth, 0

    def gate_next(self, offset: int) -> None:
        """The next storage opened holds its reads of ``offset`` until the test opens its gate (``gated``)."""
        self._gate_offset, self.gated = offset, None

    def __call__(self, path: str) -> FileStorage:
        self.opens += 1
        if self.fail_on is not None and self.opens == self.fail_on:
            self.fail_on = None
            raise MemoryError("injected allocation failure at a prepare point")
        if self._gate_offset is not None:
            self.gated = GatedStorage(path, self._gate_offset)
            self._gate_offset = None
            return self.gated
        return FileStorage(path)


@dataclass
class RecordingFencer(ProcessFencer):
    """The production fencer, recording what it was asked to do."""

    sent: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def send_signal(self, client: Holder, signum: int) -> bool:
        self.sent.append((client.pid, signum))
        return super().send_signal(client, signum)


class Setup(InProcessDaemon):
    """The joined in-process daemon, with this module's wrapped seams (``daemon_seams`` below) at hand."""

    @property
    def opener(self) -> FlakyOpener:
        opener = self.seams.open_storage
        assert isinstance(opener, FlakyOpener), "daemon_seams wraps the opener"
        return opener

    @property
    def fencer(self) -> RecordingFencer:
        fencer = self.seams.fencer
        assert isinstance(fencer, RecordingFencer), "daemon_seams wraps the fencer"
        return fencer

    @property
    def faultpoints(self) -> FaultPoints:
        return self.seams.faultpoints

    def acquire_body(self, *names: bytes) -> bytes:
        return b"".join(Resource(b"LS", n, disks=(self.disk(n),)).encode() for n in names) + Options().encode()


@pytest.fixture
def daemon_seams() -> Seams:
    """The production parts, wrapped: opens that fail on demand, signals recorded, fault points to arm."""
    return Seams(open_storage=FlakyOpener(), fencer=RecordingFencer())


@pytest.fixture
def setup(joined_daemon: InProcessDaemon) -> Setup:
    return Setup(joined_daemon.daemon, joined_daemon.path, joined_daemon.seams)


async def leader_timestamp(setup: Setup, name: bytes) -> int:
    storage = FileStorage(str(setup.path))
    try:
        area = await paxos_lease.discover_resource(storage, setup.disk(name).offset, "LS", name, 1)
        return (await paxos_lease.read_leader(area, 0, 1)).timestamp
    finally:
        storage.close()


async def test_race_b_failed_acquire_leaves_the_owner_as_it_was(setup: Setup) -> None:
    """HAProxy takeover class: a failure half way through moving leases to a client.

    An ACQUIRE of R2 and R3 for a client that already holds R1 fails with an
    allocation failure after R2 was taken on disk and before R3.  The client
    must still hold exactly R1 (nothing half-moved), R2 must be given back on
    disk, and the connection must keep working.
    """
    with trio.fail_after(30):
        conn = await trio.open_unix_socket(setup.socket_path)
        async with conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            body = setup.acquire_body(b"R1")
            reply, _ = await call(
                conn, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF), body
            )
            assert reply.result == 0

            setup.opener.arm(2)  # the second storage open of the next acquire: R3's
            body = setup.acquire_body(b"R2", b"R3")
            reply, _ = await call(
                conn, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=2, data2=TARGET_SELF), body
            )
            assert reply.result == ResultCode.ENOMEM

            reply, payload = await call(conn, Header(Cmd.INQUIRE, data2=TARGET_SELF))
            assert reply.data2 == 1 and [r.name for r in parse_state(payload.decode())] == [b"R1"]
            assert await leader_timestamp(setup, b"R2") == 0, "R2 was taken on disk and must be given back"
            assert await leader_timestamp(setup, b"R3") == 0
            assert not setup.daemon.state.leases.acquiring, "no reservation may be left behind"
            body = setup.acquire_body(b"R2", b"R3")
            reply, _ = await call(
                conn, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=2, data2=TARGET_SELF), body
            )
            assert reply.result == 0


class GatedStorage(ThroughReadAndWrite, FileStorage):
    """Real storage whose read of one offset completes only when the test opens the gate."""

    def __init__(self, path: str, gated_offset: int) -> None:
        super().__init__(path)
        self.gated_offset = gated_offset
        self.reading, self.gate = trio.Event(), trio.Event()

    async def read(self, offset: int, length: int, timeout: float) -> bytes:
        data = await super().read(offset, length, timeout)
        if offset == self.gated_offset:
            self.reading.set()
            await self.gate.wait()
        return data


async def acquire_while_the_lockspace_leaves(setup: Setup, name: bytes) -> int:
    """A registered client's ACQUIRE of ``name``, its first read held until LS has been removed; its result.

    The client holds nothing in LS, so the removal signals nobody.
    """
    async with await trio.open_unix_socket(setup.socket_path) as conn:
        await conn.send_all(Header(Cmd.REGISTER).encode())
        setup.opener.gate_next(setup.disk(name).offset)  # the acquire's own storage: opened per acquire
        body = setup.acquire_body(name)
        results: list[int] = []

        async def acquire() -> None:
            reply, _ = await call(
                conn, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF), body
            )
            results.append(reply.result)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(acquire)
            while setup.opener.gated is None:
                await trio.sleep(0.01)  # poll: the daemon opens the acquire's storage
            gated = setup.opener.gated
            await gated.reading.wait()
            await rem_lockspace(setup.socket_path, setup.path)
            assert not setup.daemon.state.lockspaces, "LS has left"
            gated.gate.set()
        assert await held_names(conn) == [], "nothing may be attached in a lockspace that left"
    return results[0]


async def test_race_b_acquire_whose_lockspace_left_meanwhile_is_given_back(setup: Setup) -> None:
    """HAProxy takeover class, at the commit point: the lockspace left while the acquire's disk work ran.

    The removal ran the kill escalation on the lockspace's holders when it
    began, and this client was none of them yet.  Had the acquire gone on
    to attach R2, the client would hold a lease no renewal covers, never
    signalled, and other hosts would take it once our host id looked dead:
    two owners.  The acquire must answer -ENOSPC (sanlock checks the same
    before it hands tokens over) and leave nothing behind: with LS joined
    again, R2 is there to take.
    """
    with trio.fail_after(30):
        assert await acquire_while_the_lockspace_leaves(setup, b"R2") == ResultCode.ENOSPC
        assert not setup.daemon.state.leases.held and not setup.daemon.state.leases.acquiring
        await add_lockspace(setup.socket_path, setup.path)
        conn = await registered_with(setup, b"R2")
        await conn.aclose()
    assert setup.fencer.sent == []


async def test_race_b_acquire_broken_by_its_lockspace_leaving_answers_enospc(setup: Setup) -> None:
    """R2 is held by host 2, so the acquire reads host 2's delta lease through the lockspace's storage,
    which the removal closed while the acquire's first read was held: -ENOSPC, as for an acquire that
    came after the removal, not the closed handle's -EBADF."""
    storage = FileStorage(str(setup.path))
    try:
        area = await paxos_lease.discover_resource(storage, setup.disk(b"R2").offset, "LS", b"R2", 1)
        await paxos_lease.acquire(area, 2, 1, io_timeout=1)
    finally:
        storage.close()
    with trio.fail_after(30):
        assert await acquire_while_the_lockspace_leaves(setup, b"R2") == ResultCode.ENOSPC
    assert setup.fencer.sent == []


HOLDER = """
import sanlock, sys
fd = sanlock.register()
for line in sys.stdin:
    verb, name = line.split()
    disk = [(sys.argv[1], int(sys.argv[1 + int(name[1:])]))]
    getattr(sanlock, verb)(b"LS", name.encode(), disk, slkfd=fd)
    print("done", flush=True)
"""


async def test_race_d_late_examine_of_a_released_lease_is_discarded(setup: Setup) -> None:
    """libxl stale-callback class: an event that arrives after its object was replaced.

    A process holds R1 (lver 1); another host asks for lver 2; this host
    starts examining R1, and while its read of the request is in flight the
    process releases R1 and takes it again (lver 2), which already satisfies
    the request.
    An examine started for the *old* token and delivered late must be
    discarded: judged by the old token's lver 1 it would SIGKILL a process
    for a request its current lease already meets.
    """
    if (
        not os.path.exists("/usr/bin/python3")
        or subprocess.run(["/usr/bin/python3", "-c", "import sanlock"], capture_output=True, check=False).returncode
    ):
        pytest.skip("python3-sanlock not installed")
    offsets = [str(setup.disk(n).offset) for n in RESOURCES]
    with subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLDER, str(setup.path), *offsets],
        env={**os.environ, "SANLOCK_RUN_DIR": str(Path(setup.socket_path).parent)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        to_holder, from_holder = holder.stdin, holder.stdout

        async def do(line: str) -> None:
            to_holder.write(line + "\n")
            to_holder.flush()
            assert await trio.to_thread.run_sync(from_holder.readline) == "done\n"

        try:
            with trio.fail_after(30):
                await do("acquire R1")
                state = setup.daemon.state
                (old,) = state.leases.held[(b"LS", b"R1")]
                storage = FileStorage(str(setup.path))
                try:  # another host asks for the next version, lver 2
                    await paxos_lease.write_request(replace(old.lease.area, storage=storage), 2, 1, 1)
                finally:
                    storage.close()
                # This host starts examining R1; its read of the request record is slow.
                gated = GatedStorage(str(setup.path), old.lease.area.request_offset)
                old.lease.area.storage.close()
                old.lease.area = replace(old.lease.area, storage=gated)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lifecycle.examine_token, state, old, setup.fencer)
                    await gated.reading.wait()
                    # Meanwhile the holder releases R1 and takes it again: lver 2 meets the request.
                    await do("release R1")
                    await do("acquire R1")
                    (current,) = state.leases.held[(b"LS", b"R1")]
                    assert (old.lver, current.lver) == (1, 2)
                    gated.gate.set()  # the examine of the old token completes late
                await lifecycle.examine_token(state, old, setup.fencer)  # and one that starts late
                await lifecycle.examine_token(state, current, setup.fencer)
            assert setup.fencer.sent == []
            assert holder.poll() is None, "the holder must not have been killed"
        finally:
            holder.kill()


async def test_race_c_renewal_restarts_with_a_fresh_handle_after_an_io_error(tmp_path: Path) -> None:
    """QEMU return-path class: a worker that hit an I/O error, racing with its replacement.

    The renewal read on the first handle fails with EIO.  The worker must end,
    a fresh handle must be opened and installed, and only then the old one
    closed; no I/O may ever be issued on a handle after it was closed, and
    renewals go on with the new handle.
    """
    path = tmp_path / "leases"
    with path.open("wb") as f:
        f.truncate(2 * MiB)
    storage = FileStorage(str(path))
    await delta_lease.init_lockspace(storage, 0, "LS", Geometry(512, MiB), 1)
    storage.close()
    events: list[tuple[int, str]] = []

    class Handle(ThroughReadAndWrite, FileStorage):
        count = 0

        def __init__(self, p: str) -> None:
            super().__init__(p)
            Handle.count += 1
            self.number = Handle.count
            self.closed_ = False
            self.fail_next_area_read = False
            events.append((self.number, "open"))

        async def read(self, offset: int, length: int, timeout: float) -> bytes:
            assert not self.closed_, f"read on closed handle {self.number}"
            events.append((self.number, "read"))
            if self.fail_next_area_read and length == MiB:
                self.fail_next_area_read = False
                raise LeaseError(ResultCode.EIO, "injected EIO")
            return await super().read(offset, length, timeout)

        async def write(self, offset: int, data: bytes, timeout: float) -> None:
            assert not self.closed_, f"write on closed handle {self.number}"
            events.append((self.number, "write"))
            await super().write(offset, data, timeout)

        def close(self) -> None:
            self.closed_ = True
            events.append((self.number, "close"))
            super().close()

    lockspace = JoinedLockspace(
        key=lockspace_key(b"LS", 1, str(path), 0),
        io_timeout=1,
        timeouts=Timeouts(1, 1),
        host_name=b"restart-host",
        open_storage=Handle,
        clock=DEFAULT_CLOCK,
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(lockspace.run)
            assert lockspace.lease is not None
            first = lockspace.lease.area.storage
            assert isinstance(first, Handle)
            first.fail_next_area_read = True
            while not any(n == 2 and op == "write" for n, op in events):
                await trio.sleep(0.1)  # poll: the second handle's first renewal write
            assert lockspace.state is LockspaceState.JOINED
            nursery.cancel_scope.cancel()
    assert lockspace.lease is not None and isinstance(lockspace.lease.area.storage, Handle)
    assert lockspace.lease.area.storage.number == 2
    order = [(n, op) for n, op in events if op in ("open", "close")]
    assert order[:3] == [(1, "open"), (2, "open"), (1, "close")], order
    closed_at = events.index((1, "close"))
    assert all(n != 1 for n, _ in events[closed_at + 1 :]), "handle 1 used after it was closed"
    lockspace.lease.area.storage.close()


# ---------------------------------------------------------------------------
# Allocation failures at the named fault points (leased.faultpoints): the same
# seam the torture harness arms in its daemon processes (leased.torture.armed_daemon).


@pytest.fixture
def fault_points(setup: Setup) -> Callable[[dict[str, float]], None]:
    """Arm the daemon's own fault points (its ``faultpoints`` seam) for the rest of the test."""
    return setup.faultpoints.arm


async def registered_with(setup: Setup, *names: bytes) -> trio.SocketStream:
    conn = await trio.open_unix_socket(setup.socket_path)
    await conn.send_all(Header(Cmd.REGISTER).encode())
    body = setup.acquire_body(*names)
    header = Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=len(names), data2=TARGET_SELF)
    reply, _ = await call(conn, header, body)
    assert reply.result == 0
    return conn


async def held_names(conn: trio.SocketStream) -> list[bytes]:
    reply, payload = await call(conn, Header(Cmd.INQUIRE, data2=TARGET_SELF))
    assert reply.result == 0
    return [r.name for r in parse_state(payload.decode())] if reply.data2 else []


def release_request(*names: bytes, flags: int = 0) -> tuple[Header, bytes]:
    body = b"".join(Resource(b"LS", n, num_disks=1).encode(with_disks=False) for n in names)
    return Header(
        Cmd.RELEASE, cmd_flags=flags, length=HEADER_SIZE + len(body), data=len(names), data2=TARGET_SELF
    ), body


async def test_race_b_failure_at_the_commit_point_gives_everything_back(
    setup: Setup, fault_points: Callable[[dict[str, float]], None]
) -> None:
    """HAProxy takeover class: all disk work done, the commit fails; the client keeps exactly what it had."""
    with trio.fail_after(30):
        conn = await registered_with(setup, b"R1")
        async with conn:
            fault_points({"acquire.commit": 1.0})
            body = setup.acquire_body(b"R2", b"R3")
            header = Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=2, data2=TARGET_SELF)
            reply, _ = await call(conn, header, body)
            assert reply.result == ResultCode.ENOMEM
            assert await held_names(conn) == [b"R1"]
            assert await leader_timestamp(setup, b"R2") == 0 and await leader_timestamp(setup, b"R3") == 0
            assert await leader_timestamp(setup, b"R1") != 0
            fault_points({})
            reply, _ = await call(conn, header, body)
            assert reply.result == 0 and sorted(await held_names(conn)) == [b"R1", b"R2", b"R3"]


async def test_race_b_failed_release_keeps_the_lease_held(
    setup: Setup, fault_points: Callable[[dict[str, float]], None]
) -> None:
    """A release that fails before it detached anything: the client still holds the lease, here and on disk."""
    with trio.fail_after(30):
        conn = await registered_with(setup, b"R1")
        async with conn:
            fault_points({"release.prepare": 1.0})
            reply, _ = await call(conn, *release_request(b"R1"))
            assert reply.result == ResultCode.ENOMEM
            assert await held_names(conn) == [b"R1"]
            assert await leader_timestamp(setup, b"R1") != 0
            fault_points({})
            reply, _ = await call(conn, *release_request(b"R1"))
            assert reply.result == 0
            assert await held_names(conn) == []
            assert await leader_timestamp(setup, b"R1") == 0


async def test_race_b_lease_of_a_closed_client_is_never_dropped_silently(
    setup: Setup, fault_points: Callable[[dict[str, float]], None]
) -> None:
    """The move of a closed client's lease (release, or to the orphan table) keeps failing.

    After its retries the daemon keeps the lease as an orphan, visible and
    held on disk, rather than forgetting it while the disk still says it is
    ours; an operator's release of orphans then lets it go.
    """
    with trio.fail_after(30):
        conn = await registered_with(setup, b"R1")
        fault_points({"release.prepare": 1.0, "orphan.move": 1.0})
        await conn.aclose()
        while not setup.daemon.state.leases.orphans(b"LS", b"R1"):
            await trio.sleep(0.02)
        assert setup.faultpoints.hits()["release.prepare"] == transactions.EXIT_RELEASE_ATTEMPTS
        assert await leader_timestamp(setup, b"R1") != 0
        fault_points({})
        other = await registered_with(setup, b"R2")
        async with other:
            reply, _ = await call(other, *release_request(b"R1", flags=REL_ORPHAN))
            assert reply.result == 1, "one orphan released"
        assert not setup.daemon.state.leases.orphans(b"LS")
        assert await leader_timestamp(setup, b"R1") == 0


def test_fault_point_specs_are_checked() -> None:
    Schedule = faultpoints.Schedule
    assert faultpoints.parse("acquire.prepare=0.5, release.prepare, orphan.move@3") == {
        "acquire.prepare": Schedule(0.5),
        "release.prepare": Schedule(1.0),
        "orphan.move": Schedule(failures_left=3),
    }
    assert faultpoints.parse("") == {}
    for bad, complaint in (
        ("acquire=0.1", "unknown fault point"),
        ("acquire@2", "unknown fault point"),
        ("release.prepare=x", "not a number"),
        ("release.prepare@-1", "not a whole number"),
        ("orphan.move=2", "outside"),
    ):
        with pytest.raises(faultpoints.FaultPointError, match=complaint):
            faultpoints.parse(bad)


def test_the_armed_entry_point_refuses_a_bad_spec_and_the_daemon_has_no_switch(tmp_path: Path) -> None:
    """Only leased.torture.armed_daemon arms fault points; the production command cannot be armed from outside."""
    bad = subprocess.run(
        [*armed_daemon.argv_prefix("acquire=0.1"), "-D"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 1 and bad.stderr.startswith("leased: --faultpoints: unknown fault point 'acquire'")
    env = {**os.environ, "SANLOCK_RUN_DIR": str(tmp_path), "LEASED_TEST_FAULTPOINTS": "release.prepare"}
    old_switch = subprocess.run(
        [*leased_command(), "daemon", "-D"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert old_switch.returncode == 1
    assert old_switch.stderr == "leased: environment LEASED_TEST_FAULTPOINTS: no such setting\n"


def test_a_counted_fault_point_fails_its_first_checks_then_goes_quiet() -> None:
    table = faultpoints.parse("release.prepare@2")
    points = faultpoints.FaultPoints(table)
    for _ in range(2):
        with pytest.raises(MemoryError):
            points.check("release.prepare")
    for _ in range(100):
        points.check("release.prepare")
    points.check("acquire.prepare")  # not armed
    assert points.hits() == {"release.prepare": 2}
    assert table["release.prepare"].failures_left == 2, "arming copied the schedule"


def test_unarmed_fault_points_never_fail_and_daemons_do_not_share_them() -> None:
    unarmed = faultpoints.FaultPoints()
    for point in faultpoints.POINTS:
        unarmed.check(point)
    assert unarmed.hits() == {} and unarmed.armed == {}
    armed = faultpoints.FaultPoints({"release.prepare": 1.0})
    with pytest.raises(MemoryError):
        armed.check("release.prepare")
    faultpoints.FaultPoints().check("release.prepare")  # another daemon's points: not armed by the first's
