"""Tests that run a leased daemon inside the test's trio loop and talk raw wire bytes to it.

The daemon is the real :class:`~leased.daemon.Daemon` on a real Unix socket in
the test's tmp dir; what a test changes are its seams (:class:`Seams`: the
storage opener, the fencer, the fault points), each the production part
unless the test wraps it.  ``conftest.joined_daemon`` is the one fixture that
serves it; a test module that needs other seams overrides the
``daemon_seams`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from leased import delta_lease, paxos_lease
from leased.connection import MessageReader
from leased.daemon import Daemon
from leased.faultpoints import FaultPoints
from leased.fencing import Fencer
from leased.geometry import Geometry
from leased.protocol import HEADER_SIZE, Cmd, Disk, Header, Lockspace
from leased.state import DaemonConfig
from leased.storage import FileStorage, Storage

MiB = 1 << 20
RESOURCES = (b"R1", b"R2", b"R3")


async def init_lease_file(path: Path, size: int = 4 * MiB) -> None:
    """Lockspace LS (io_timeout 1) at 0 and resources R1..R3 at 1, 2, 3 MiB."""
    with path.open("wb") as f:
        f.truncate(size)
    storage = FileStorage(str(path))
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", Geometry(512, MiB), 1)
        for index, name in enumerate(RESOURCES, start=1):
            await paxos_lease.init_resource(storage, index * MiB, "LS", name, Geometry(512, MiB))
    finally:
        storage.close()


async def r1_owner(path: Path) -> int:
    """Host id owning R1 on disk (0: free), read as another host would."""
    storage = FileStorage(str(path))
    try:
        area = await paxos_lease.discover_resource(storage, MiB, "LS", b"R1", 1)
        leader = await paxos_lease.read_leader(area, 0, 1)
        return leader.owner_id if leader.timestamp else 0
    finally:
        storage.close()


class InjectedBug(Exception):
    pass


class FramingBug:
    """A bug in the daemon's own code: the next ``MessageReader.next_event`` call, of any connection, raises once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._real = MessageReader.next_event
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        self._monkeypatch.setattr(MessageReader, "next_event", self._next_event)

    def disarm(self) -> None:
        self.armed = False
        self._monkeypatch.setattr(MessageReader, "next_event", self._real)

    def _next_event(self, reader: MessageReader) -> object:
        if self.armed:
            self.armed = False
            raise InjectedBug("injected into one connection's framing")
        return self._real(reader)


async def closed_by_daemon(stream: trio.SocketStream) -> bool:
    """The daemon closed it: EOF, or a reset when it closed with our request unread."""
    try:
        return await stream.receive_some(HEADER_SIZE) == b""
    except trio.BrokenResourceError:
        return True


async def recv_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


async def read_reply(stream: trio.SocketStream) -> tuple[Header, bytes]:
    header = Header.decode(await recv_exactly(stream, HEADER_SIZE))
    return header, await recv_exactly(stream, header.length - HEADER_SIZE)


async def call(stream: trio.SocketStream, header: Header, body: bytes = b"") -> tuple[Header, bytes]:
    await stream.send_all(header.encode() + body)
    return await read_reply(stream)


@dataclass
class Seams:
    """What a test may replace in an in-process daemon; the defaults are the production parts."""

    open_storage: Callable[[str], Storage] = FileStorage
    fencer: Fencer | None = None
    faultpoints: FaultPoints = field(default_factory=FaultPoints)


def new_daemon(tmp_path: Path, seams: Seams | None = None, host_name: str = "test-host") -> Daemon:
    """A daemon (not yet serving) with its run dir in ``tmp_path`` and a 1 s watchdog fire timeout."""
    seams = seams or Seams()
    config = DaemonConfig(run_dir=str(tmp_path / "run"), our_host_name=host_name, watchdog_fire_timeout=1)
    return Daemon(config, open_storage=seams.open_storage, fencer=seams.fencer, faultpoints=seams.faultpoints)


@dataclass
class InProcessDaemon:
    """A serving in-process daemon joined to LS (host 1) on ``path`` (laid out by :func:`init_lease_file`)."""

    daemon: Daemon
    path: Path
    seams: Seams

    @property
    def socket_path(self) -> str:
        return self.daemon.config.socket_path

    def disk(self, name: bytes) -> Disk:
        return Disk(str(self.path), (RESOURCES.index(name) + 1) * MiB)


async def add_lockspace(socket_path: str, path: Path) -> None:
    """Join LS as host 1 through a one-shot ADD_LOCKSPACE, as a client would."""
    body = Lockspace(b"LS", 1, 0, Disk(str(path), 0)).encode()
    async with await trio.open_unix_socket(socket_path) as conn:
        with trio.fail_after(20):
            reply, _ = await call(conn, Header(Cmd.ADD_LOCKSPACE, length=HEADER_SIZE + len(body), data=1), body)
    assert reply.result == 0, reply


async def rem_lockspace(socket_path: str, path: Path) -> None:
    """Leave LS through a one-shot REM_LOCKSPACE, as a client would; returns once it has left."""
    body = Lockspace(b"LS", 1, 0, Disk(str(path), 0)).encode()
    async with await trio.open_unix_socket(socket_path) as conn:
        with trio.fail_after(20):
            reply, _ = await call(conn, Header(Cmd.REM_LOCKSPACE, length=HEADER_SIZE + len(body)), body)
    assert reply.result == 0, reply


@asynccontextmanager
async def serving(tmp_path: Path, *, join: bool = False) -> AsyncIterator[Daemon]:
    """A new daemon serving in this trio run; with ``join``, LS joined as host 1 on a fresh ``tmp_path/leases``.

    It ends cancelled, not through :meth:`Daemon.stop`: a stop runs the kill
    escalation on live holders, and here the holder is often the test
    process itself.  Cancelled, the daemon leaves their leases on disk.
    """
    path = tmp_path / "leases"
    if join:
        await init_lease_file(path)
    daemon = new_daemon(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        if join:
            await add_lockspace(daemon.config.socket_path, path)
        yield daemon
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def joined(tmp_path: Path, seams: Seams) -> AsyncIterator[InProcessDaemon]:
    """Serve a new daemon joined to LS; stop it through :meth:`Daemon.stop` at the end."""
    path = tmp_path / "leases"
    await init_lease_file(path)
    daemon = new_daemon(tmp_path, seams)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.serve)
        await add_lockspace(daemon.config.socket_path, path)
        yield InProcessDaemon(daemon, path, seams)
        daemon.stop()
