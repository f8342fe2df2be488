"""The asyncio shell: :class:`AsyncioClient`, :class:`AsyncioRegistration`, :class:`AsyncioEventChannel`.

Drives the exchanges of :mod:`leased.client.exchanges` over asyncio streams,
for programs whose event loop is asyncio's (it uses only asyncio's public
API, so a loop such as uvloop should serve too; the tests run the standard
loop).  It is the trio shell (:mod:`leased.client.trio_shell`) method for
method, with asyncio's parts in the transport:

* each connection (:class:`_AsyncioConnection`) owns an ``asyncio.Lock``,
  held from the first byte of a request to the last byte of its reply, so
  the header and body of two concurrent calls from several tasks never
  interleave and no task reads another's reply;
* ``timeout`` bounds a call as a whole, the wait for the lock included
  (``asyncio.timeout``, where trio has ``fail_after``);
* a cancellation already requested when a call starts is taken at a
  checkpoint before any byte is sent (``asyncio.sleep(0)``, where trio has
  ``checkpoint_if_cancelled``), so it leaves the connection in step; one
  that interrupts an exchange half way (``CancelledError``, or the timeout's
  cancellation) marks the connection broken, and it refuses every later
  call.  Only closing it is then safe.

Of the transport errors, every ``OSError`` of a send or receive (a reset, a
broken pipe) becomes -107 (ENOTCONN) "connection lost", as trio's
``BrokenResourceError`` does in the trio shell; a short read is -107 with
the byte counts, in both.

It imports no trio, and ``leased.client`` imports it only when one of its
names is first used.  ``tests/test_client_shells.py`` compares its public
methods with the blocking shell's and with the trio shell's, except for the
differences its tables name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

from leased.client.exchanges import (
    _END_EVENT_MARK,
    EVENT_CB_SIZE,
    _acquire,
    _acquire_attempt,
    _add_lockspace,
    _advance,
    _align,
    _Broken,
    _convert,
    _end_event,
    _Exchange,
    _Finished,
    _get_hosts,
    _get_lockspaces,
    _get_lvb,
    _host_status,
    _inq_lockspace,
    _inquire,
    _killpath,
    _log_dump,
    _metrics,
    _name,
    _parse_events,
    _parse_health_notice,
    _read_lockspace,
    _read_resource,
    _read_resource_owners,
    _Recv,
    _reg_event,
    _register,
    _release,
    _release_all,
    _release_orphans,
    _rem_lockspace,
    _renewal,
    _request_lease,
    _restrict,
    _Send,
    _set_config,
    _set_event,
    _set_lvb,
    _shutdown,
    _status,
    _Step,
    _transport_error,
    _version,
    _watch_health,
    _write_lockspace,
    _write_resource,
)
from leased.client.results import (
    AcquiredLease,
    AcquireOptions,
    DiskLike,
    Event,
    HeldLease,
    HostInfo,
    LockspaceInfo,
    LockspaceRecord,
    MiB,
    Name,
    ResourceInfo,
    SanlockError,
    SanlockProtocolError,
    StatusRecord,
    VersionInfo,
    socket_path,
)
from leased.client.waiting import AcquireWait, acquire_wait
from leased.errors import ResultCode
from leased.protocol import HEALTH_NOTICE_SIZE, RESTRICT_ALL, TARGET_SELF, HealthNotice, HostEvent, StateRecord

if TYPE_CHECKING:
    from typing_extensions import Unpack

_T = TypeVar("_T")

# The clock and the sleep of an acquire's wait (leased.client.waiting decides, the shell only sleeps).


def _now() -> float:
    return asyncio.get_running_loop().time()


_sleep = asyncio.sleep


class _AsyncioConnection:
    """One asyncio stream pair, its lock and its in-step state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float | None) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.lock = asyncio.Lock()
        self.broken = _Broken()

    @classmethod
    async def open(cls, path: str, timeout: float | None) -> _AsyncioConnection:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                reader, writer = await asyncio.open_unix_connection(path)
        except TimeoutError as exc:
            if not deadline.expired():
                raise _transport_error(exc, f"connect to {path}") from exc
            raise SanlockError(ResultCode.ETIMEDOUT, f"connect to {path} timed out") from None
        except OSError as exc:
            raise _transport_error(exc, f"connect to {path}") from exc
        return cls(reader, writer, timeout)

    async def aclose(self) -> None:
        # close() drops the transport at once (a task blocked reading it sees
        # EOF); wait_closed() only reports how the connection ended, which
        # no longer matters to anyone.
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.reader.read(max_bytes)

    async def run(self, label: str, exchange: _Exchange[_T]) -> _T:
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline, self.lock:
                if self.broken.reason is not None:
                    exchange.close()
                    raise SanlockError(
                        ResultCode.ENOTCONN, f"{label}: connection unusable ({self.broken.reason})", label
                    )
                return await self._drive(label, exchange)
        except TimeoutError:
            if not deadline.expired():
                raise
            exchange.close()
            raise SanlockError(ResultCode.ETIMEDOUT, f"{label} timed out after {self.timeout} s", label) from None

    async def _drive(self, label: str, exchange: _Exchange[_T]) -> _T:
        value: bytes | None = None
        # A cancellation already requested is taken here, before any byte goes
        # out, so it does not cost the connection.
        await asyncio.sleep(0)
        while True:
            step = _advance(exchange, value, self.broken)
            if isinstance(step, _Finished):
                return step.value
            try:
                value = await self._perform(step)
            except BaseException as exc:
                # Includes CancelledError, the timeout's among them: the
                # exchange stopped half way, so this connection is out of step.
                self.broken.reason = f"{label} interrupted: {exc!r}"
                if isinstance(exc, OSError) and not isinstance(exc, SanlockError):
                    raise SanlockError(ResultCode.ENOTCONN, f"{label}: connection lost ({exc!r})", label) from exc
                raise

    async def _perform(self, step: _Step) -> bytes:
        if isinstance(step, _Send):
            await self.send(step.data)
            return b""
        if isinstance(step, _Recv):
            try:
                return await self.reader.readexactly(step.size)
            except asyncio.IncompleteReadError as short:
                raise SanlockError(
                    ResultCode.ENOTCONN,
                    f"{step.what}: connection closed after {len(short.partial)} of {step.size} bytes",
                ) from None
        out = bytearray()
        while chunk := await self.reader.read(65536):
            out += chunk
            if len(out) > step.limit:
                raise SanlockProtocolError(f"{step.what} exceed {step.limit} bytes")
        return bytes(out)


class AsyncioHealthChannel:
    """The asyncio twin of :class:`HealthChannel`."""

    def __init__(self, conn: _AsyncioConnection) -> None:
        self._conn = conn
        self._buffer = b""

    async def receive(self) -> HealthNotice:
        """Wait for the next notice.  Bytes already read are kept for the next call, so a wait
        that times out (blocking: the client's ``timeout``, -110) or is cancelled loses nothing."""
        async with self._conn.lock:
            while len(self._buffer) < HEALTH_NOTICE_SIZE:
                try:
                    chunk = await self._conn.receive_some(4096)
                except OSError as exc:
                    raise SanlockError(ResultCode.ENOTCONN, f"health channel: {exc!r}", "health") from None
                if not chunk:
                    raise SanlockError(ResultCode.ENOTCONN, "health channel closed by the daemon", "health")
                self._buffer += chunk
            raw, self._buffer = self._buffer[:HEALTH_NOTICE_SIZE], self._buffer[HEALTH_NOTICE_SIZE:]
        return _parse_health_notice(raw)

    async def __aenter__(self) -> AsyncioHealthChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel: the daemon frees its slot when it sees the close."""
        await self._conn.aclose()


class AsyncioRegistration:
    """The asyncio twin of :class:`Registration`: ``async with client.register() as reg``."""

    def __init__(self, client: AsyncioClient) -> None:
        self._client = client
        self._conn: _AsyncioConnection | None = None
        self.pid = os.getpid()
        self._restricted = False

    async def open(self) -> AsyncioRegistration:
        conn = await _AsyncioConnection.open(self._client.path, self._client.timeout)
        try:
            await conn.run("register", _register())
        except BaseException:
            await conn.aclose()
            raise
        self._conn = conn
        return self

    async def __aenter__(self) -> AsyncioRegistration:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()

    @property
    def broken(self) -> str | None:
        """Why the connection went out of step and refuses calls (None while usable)."""
        return self._conn.broken.reason if self._conn is not None else None

    async def _run(self, label: str, exchange: _Exchange[_T]) -> _T:
        if self._conn is None or self._restricted:
            exchange.close()
            why = "not open" if self._conn is None else "connection restricted with RESTRICT_ALL"
            raise SanlockError(ResultCode.EPERM, f"{label}: registration {why}", label)
        return await self._conn.run(label, exchange)

    async def acquire(
        self,
        lockspace: Name,
        resource: Name,
        disks: Sequence[DiskLike],
        *,
        wait: float | AcquireWait | None = None,
        **options: Unpack[AcquireOptions],
    ) -> AcquiredLease:
        """Acquire a lease for this process; returns it with its lver (the fencing token).

        See :class:`AcquireOptions` for the options.  Fails with -17 (EEXIST)
        if this host already holds it, -28 (ENOSPC) if the lockspace is not
        joined, -243 if another live host holds it, -240 on an lver mismatch.

        ``wait`` (seconds, or an :class:`AcquireWait`) retries contention
        (:data:`~leased.client.waiting.RETRYABLE`) with jittered exponential
        backoff until then, and raises :class:`WaitExpired` (the last code,
        ``waited``, ``attempts``) if it never gives way; any other error at
        once, :class:`AlreadyHeld` if this process holds the lease.  The
        lease tells ``waited`` and ``attempts``.  ``timeout`` bounds each
        attempt.  Cancelling the wait between attempts keeps the
        registration usable.
        """
        if wait is None:
            return await self._run("acquire", _acquire(TARGET_SELF, lockspace, resource, disks, **options))
        plan = acquire_wait(wait)
        plan.begin(_now())
        while True:
            try:
                lease = await self._run("acquire", _acquire_attempt(TARGET_SELF, lockspace, resource, disks, **options))
            except SanlockError as exc:
                pause = plan.retry_after(exc, _now())
            else:
                return plan.succeeded(lease, _now())
            await _sleep(pause)

    async def release(self, lockspace: Name, resource: Name) -> None:
        """Release one lease of this process; -1 (EPERM) if it is not held."""
        await self._run("release", _release(TARGET_SELF, lockspace, resource))

    async def release_all(self) -> None:
        await self._run("release", _release_all(TARGET_SELF))

    async def release_orphans(self, lockspace: Name, resource: Name = b"") -> int:
        """Release the orphans (persistent leases of exited processes) of a lockspace, or one of them.

        Returns how many were released.  An empty ``resource`` means all of the lockspace.
        """
        return await self._run("release", _release_orphans(TARGET_SELF, lockspace, resource))

    async def inquire(self) -> list[HeldLease]:
        return await self._run("inquire", _inquire(TARGET_SELF))

    async def convert(self, lockspace: Name, resource: Name, shared: bool, *, owner_nowait: bool = False) -> None:
        """Change a held lease to shared (True) or exclusive (False); -114 (EALREADY) if it already is."""
        await self._run("convert", _convert(TARGET_SELF, lockspace, resource, shared, owner_nowait))

    async def killpath(self, path: str, args: Sequence[str] = (), *, pid_arg: bool = False) -> None:
        """The program the daemon runs (instead of SIGTERM) when our leases must go; ``pid_arg`` appends our pid."""
        await self._run("killpath", _killpath(path, args, pid_arg))

    async def restrict(self, flags: int) -> None:
        """Set RESTRICT_* flags.  The daemon ignores a RESTRICT_ALL connection, so later calls fail here."""
        await self._run("restrict", _restrict(flags))
        self._restricted = bool(flags & RESTRICT_ALL)


class AsyncioEventChannel:
    """The asyncio twin of :class:`EventChannel`; :meth:`receive` waits for the next event."""

    def __init__(self, client: AsyncioClient, name: bytes, conn: _AsyncioConnection) -> None:
        self._client, self.name, self._conn = client, name, conn
        self._buffer = b""

    async def receive(self) -> Event:
        """Wait for the next event.  Safe to cancel: bytes already read are kept for the next call."""
        async with self._conn.lock:
            while len(self._buffer) < EVENT_CB_SIZE:
                chunk = await self._conn.receive_some(4096)
                if not chunk:
                    raise SanlockError(ResultCode.ENOTCONN, "event connection closed by the daemon", "get_event")
                self._buffer += chunk
            raw, self._buffer = self._buffer[:EVENT_CB_SIZE], self._buffer[EVENT_CB_SIZE:]
        return _parse_events(raw)[0]

    async def __aenter__(self) -> AsyncioEventChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """As libsanlock's end_event: write the end mark, close, then END_EVENT on a new connection."""
        with suppress(OSError):
            await self._conn.send(_END_EVENT_MARK)
        await self._conn.aclose()
        await self._client._one_shot("end_event", _end_event(self.name))


class AsyncioClient:
    """asyncio client of a sanlock daemon: the commands of :class:`Client`, awaited.

    ``timeout`` bounds each call as a whole (``asyncio.timeout``).  A
    cancellation that interrupts a registration's exchange half way marks
    that registration broken (see the module docstring).
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, timeout: float | None = None) -> None:
        self.path = socket_path(run_dir)
        self.timeout = timeout

    async def _one_shot(self, label: str, exchange: _Exchange[_T]) -> _T:
        try:
            conn = await _AsyncioConnection.open(self.path, self.timeout)
        except BaseException:
            exchange.close()
            raise
        try:
            return await conn.run(label, exchange)
        finally:
            await conn.aclose()

    def register(self) -> AsyncioRegistration:
        """``async with client.register() as reg``: registered on entry, closed (leases released) on exit."""
        return AsyncioRegistration(self)

    async def acquire(
        self,
        lockspace: Name,
        resource: Name,
        disks: Sequence[DiskLike],
        *,
        pid: int,
        wait: float | AcquireWait | None = None,
        **options: Unpack[AcquireOptions],
    ) -> AcquiredLease:
        """Acquire for the registered process ``pid`` (-3 ESRCH if no such registration).

        ``wait`` as for :meth:`AsyncioRegistration.acquire`: contention retried until
        then, one connection per attempt.
        """
        if wait is None:
            return await self._one_shot("acquire", _acquire(pid, lockspace, resource, disks, **options))
        plan = acquire_wait(wait)
        plan.begin(_now())
        while True:
            try:
                lease = await self._one_shot("acquire", _acquire_attempt(pid, lockspace, resource, disks, **options))
            except SanlockError as exc:
                pause = plan.retry_after(exc, _now())
            else:
                return plan.succeeded(lease, _now())
            await _sleep(pause)

    async def release(self, lockspace: Name, resource: Name, *, pid: int) -> None:
        await self._one_shot("release", _release(pid, lockspace, resource))

    async def release_all(self, *, pid: int) -> None:
        await self._one_shot("release", _release_all(pid))

    async def inquire(self, *, pid: int) -> list[HeldLease]:
        """The leases of registered process ``pid`` (-3 ESRCH: not registered, a cheap liveness probe)."""
        return await self._one_shot("inquire", _inquire(pid))

    async def convert(
        self, lockspace: Name, resource: Name, shared: bool, *, pid: int, owner_nowait: bool = False
    ) -> None:
        await self._one_shot("convert", _convert(pid, lockspace, resource, shared, owner_nowait))

    async def add_lockspace(
        self,
        name: Name,
        host_id: int,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        io_timeout: int = 0,
        wait: bool = True,
    ) -> None:
        """Join a lockspace.  With ``wait`` return once the host id lease is held (>= 2 * io_timeout)."""
        await self._one_shot("add_lockspace", _add_lockspace(name, host_id, path, offset, io_timeout, wait))

    async def inq_lockspace(
        self, name: Name, host_id: int, path: str | os.PathLike[str], offset: int = 0, *, wait: bool = False
    ) -> bool | None:
        """True joined, False not found, None being added or removed (``wait``: until it is settled)."""
        return await self._one_shot("inq_lockspace", _inq_lockspace(name, host_id, path, offset, wait))

    async def rem_lockspace(
        self,
        name: Name,
        host_id: int,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        wait: bool = True,
        unused: bool = False,
    ) -> None:
        """Leave a lockspace, SIGKILLing its lease holders; ``unused``: -16 (EBUSY) while leases exist."""
        await self._one_shot("rem_lockspace", _rem_lockspace(name, host_id, path, offset, wait, unused))

    async def get_lockspaces(self) -> list[LockspaceInfo]:
        return await self._one_shot("get_lockspaces", _get_lockspaces())

    async def get_hosts(self, name: Name, host_id: int = 0) -> list[HostInfo]:
        """Hosts of a joined lockspace (host_id 0: all with a timestamp); -11 until the first scan is done."""
        return await self._one_shot("get_hosts", _get_hosts(name, host_id))

    async def host_status(self, name: Name) -> list[StateRecord]:
        """HOST records: ``data32`` host id, ``data64`` timestamp, ``text`` key=value pairs (§6.3)."""
        return await self._one_shot("host_status", _host_status(name))

    async def renewal(self, name: Name) -> tuple[int, list[StateRecord]]:
        """(io_timeout, RENEWAL records, oldest first); (0, []) when the daemon keeps no history."""
        return await self._one_shot("renewal", _renewal(name))

    async def set_config(self, name: Name, config: int) -> None:
        await self._one_shot("set_config", _set_config(name, config))

    async def request(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], force_mode: int, *, lver: int | None = None
    ) -> None:
        """Ask the holder to give a lease up: force_mode 1 FORCE, 2 GRACEFUL, 0 just write/clear.

        Without ``lver`` the request is for the next version (NEXT_LVER).
        """
        await self._one_shot("request", _request_lease(lockspace, resource, disks, force_mode, lver))

    async def read_resource_owners(
        self,
        lockspace: Name,
        resource: Name,
        disks: Sequence[DiskLike],
        *,
        align: int | None = None,
        sector: int | None = None,
    ) -> tuple[ResourceInfo, list[HostInfo]]:
        """The lease as on disk and its owners: the exclusive one first, then shared holders."""
        exchange = _read_resource_owners(lockspace, resource, disks, align, sector)
        return await self._one_shot("read_resource_owners", exchange)

    async def set_lvb(self, lockspace: Name, resource: Name, data: bytes) -> None:
        """Set the value block of a lease held here with ``lvb=True``; it is written to disk on release."""
        await self._one_shot("set_lvb", _set_lvb(lockspace, resource, data))

    async def get_lvb(self, lockspace: Name, resource: Name, size: int = 0) -> bytes:
        """The value block of a lease held here with ``lvb=True`` (size 0: the whole sector)."""
        return await self._one_shot("get_lvb", _get_lvb(lockspace, resource, size))

    async def write_lockspace(
        self,
        name: Name,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        io_timeout: int = 0,
        align: int = MiB,
        sector: int = 512,
        max_hosts: int = 0,
    ) -> None:
        """Initialise a lockspace area (io_timeout 0: the daemon's 10 s)."""
        exchange = _write_lockspace(name, path, offset, io_timeout, align, sector, max_hosts)
        await self._one_shot("write_lockspace", exchange)

    async def read_lockspace(
        self,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        host_id: int = 0,
        align: int | None = None,
        sector: int | None = None,
    ) -> LockspaceRecord:
        """(name, io_timeout) of the lockspace at path:offset (no geometry given: the daemon probes)."""
        return await self._one_shot("read_lockspace", _read_lockspace(path, offset, host_id, align, sector))

    async def write_resource(
        self,
        lockspace: Name,
        resource: Name,
        disks: Sequence[DiskLike],
        *,
        num_hosts: int = 0,
        clear: bool = False,
        align: int = MiB,
        sector: int = 512,
    ) -> None:
        """Initialise (or with ``clear``, invalidate) a resource lease area."""
        exchange = _write_resource(lockspace, resource, disks, num_hosts, clear, align, sector)
        await self._one_shot("write_resource", exchange)

    async def read_resource(
        self, path: str | os.PathLike[str], offset: int = 0, *, align: int | None = None, sector: int | None = None
    ) -> ResourceInfo:
        return await self._one_shot("read_resource", _read_resource(path, offset, align, sector))

    async def align(self, path: str | os.PathLike[str]) -> int:
        """The lease alignment the daemon finds for a device (1 MiB for 512-byte sectors)."""
        return await self._one_shot("align", _align(path))

    async def reg_event(self, name: Name) -> AsyncioEventChannel:
        """A channel on which the daemon delivers events other hosts set for us in lockspace ``name``."""
        conn = await _AsyncioConnection.open(self.path, self.timeout)
        try:
            await conn.run("reg_event", _reg_event(name))
        except BaseException:
            await conn.aclose()
            raise
        return AsyncioEventChannel(self, _name(name), conn)

    async def watch_health(self) -> AsyncioHealthChannel:
        """A channel of lease-health notices for every lockspace joined (a leased extension).

        An application holding leases can stop writing when its lockspace
        warns (no renewal for 6N), before it fails at 8N and its holders are
        killed.  A sanlock daemon does not know the command: -95 (EOPNOTSUPP)
        at once, no timeout needed.
        """
        conn = await _AsyncioConnection.open(self.path, self.timeout)
        try:
            await conn.run("health", _watch_health())
        except BaseException:
            await conn.aclose()
            raise
        return AsyncioHealthChannel(conn)

    async def set_event(
        self, name: Name, host_id: int, generation: int, event: int, data: int = 0, *, flags: int = 0
    ) -> None:
        """Flag an event for host ``host_id``, delivered with our next renewals (SETEV_* flags)."""
        await self._one_shot("set_event", _set_event(name, HostEvent(host_id, generation, event, data), flags))

    async def version(self) -> VersionInfo:
        return await self._one_shot("version", _version())

    async def status(self, level: int = 0) -> list[StatusRecord]:
        """The daemon's state records (level 1/2/3 stop after daemon/client/lockspace records)."""
        return await self._one_shot("status", _status(level))

    async def log_dump(self) -> str:
        return await self._one_shot("log_dump", _log_dump())

    async def metrics(self) -> str:
        """The daemon's metrics in Prometheus text format (a leased extension).

        A sanlock daemon does not know the command and never answers: create
        the client with a ``timeout`` when the daemon may be sanlock.
        """
        return await self._one_shot("metrics", _metrics())

    async def shutdown(self, *, force: bool = False, wait: bool = False) -> None:
        """Stop the daemon; ``force`` SIGKILLs lease holders first, ``wait`` returns once it has exited.

        Unforced, ``wait`` fails with -16 (EBUSY) while lockspaces exist; without
        ``wait`` the daemon silently ignores such a request.
        """
        await self._one_shot("shutdown", _shutdown(force, wait))
