"""The blocking shell: :class:`Client`, :class:`Registration`, :class:`EventChannel`.

Drives the exchanges of :mod:`leased.client.exchanges` over a blocking
socket in the calling thread.  Each connection (:class:`_SyncConnection`)
owns a ``threading.Lock`` held from the first byte of a request to the last
byte of its reply; ``timeout`` bounds a call as a whole, the wait for the
lock included.  Importing this module loads no trio.

Every public method has a twin in :mod:`leased.client.trio_shell` and one in
:mod:`leased.client.asyncio_shell`; ``tests/test_client_shells.py`` fails
when they drift apart (signature, docstring or body), except for the
differences its tables name.
"""

from __future__ import annotations

import os
import socket
import threading
import time
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
_now = time.monotonic
_sleep = time.sleep


class _SyncConnection:
    """One socket, its lock and its in-step state; drives exchanges in the calling thread."""

    def __init__(self, path: str, timeout: float | None, sock: socket.socket | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.lock = threading.Lock()
        self.broken = _Broken()
        if sock is not None:  # adopted: already connected
            self.sock = sock
            sock.settimeout(timeout)
            return
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except TimeoutError:
            self.sock.close()
            raise SanlockError(ResultCode.ETIMEDOUT, f"connect to {path} timed out") from None
        except OSError as exc:
            self.sock.close()
            raise _transport_error(exc, f"connect to {path}") from exc

    @classmethod
    def open(cls, path: str, timeout: float | None) -> _SyncConnection:
        """Connect to ``path``; the same call as the trio shell's, so the two shells' methods read alike."""
        return cls(path, timeout)

    @classmethod
    def adopt(cls, sock: socket.socket, timeout: float | None) -> _SyncConnection:
        """A connection over a socket connected elsewhere (python-sanlock's ``slkfd``): the caller owns it.

        The socket's timeout becomes ``timeout``; :meth:`close` would close it,
        so a caller that keeps the socket detaches it instead.
        """
        return cls("", timeout, sock)

    def close(self) -> None:
        # shutdown first: it wakes a thread blocked in recv/send on this socket
        # without freeing the fd number under it; close once that call is done.
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self.lock:
            self.sock.close()

    def run(self, label: str, exchange: _Exchange[_T]) -> _T:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if not self.lock.acquire(timeout=-1 if self.timeout is None else self.timeout):
            exchange.close()
            raise SanlockError(ResultCode.ETIMEDOUT, f"{label}: connection busy for {self.timeout} s", label)
        try:
            if self.sock.fileno() == -1 or self.broken.reason is not None:
                exchange.close()
                why = "closed" if self.sock.fileno() == -1 else self.broken.reason
                raise SanlockError(ResultCode.ENOTCONN, f"{label}: connection unusable ({why})", label)
            return self._drive(label, exchange, deadline)
        finally:
            self.lock.release()

    def _drive(self, label: str, exchange: _Exchange[_T], deadline: float | None) -> _T:
        if deadline is not None and deadline <= time.monotonic():
            # Spent waiting for the lock: nothing sent yet, the connection stays in step.
            exchange.close()
            raise SanlockError(ResultCode.ETIMEDOUT, f"{label} timed out after {self.timeout} s", label)
        value: bytes | None = None
        while True:
            step = _advance(exchange, value, self.broken)
            if isinstance(step, _Finished):
                return step.value
            try:
                value = self._perform(step, deadline)
            except BaseException as exc:
                exchange.close()
                self.broken.reason = f"{label} interrupted: {exc!r}"
                if isinstance(exc, TimeoutError):
                    raise SanlockError(
                        ResultCode.ETIMEDOUT, f"{label} timed out after {self.timeout} s", label
                    ) from None
                if isinstance(exc, OSError) and not isinstance(exc, SanlockError):
                    raise _transport_error(exc, label) from exc
                raise

    def _perform(self, step: _Step, deadline: float | None) -> bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
        if isinstance(step, _Send):
            self.sock.sendall(step.data)
            return b""
        if isinstance(step, _Recv):
            buf = bytearray(step.size)
            view, got = memoryview(buf), 0
            while got < step.size:
                n = self.sock.recv_into(view[got:])
                if not n:
                    raise SanlockError(
                        ResultCode.ENOTCONN, f"{step.what}: connection closed after {got} of {step.size} bytes"
                    )
                got += n
                if deadline is not None and got < step.size:
                    self.sock.settimeout(max(deadline - time.monotonic(), 1e-6))
            return bytes(buf)
        chunks, total = [], 0
        while chunk := self.sock.recv(65536):
            total += len(chunk)
            if total > step.limit:
                raise SanlockProtocolError(f"{step.what} exceed {step.limit} bytes")
            chunks.append(chunk)
            if deadline is not None:
                self.sock.settimeout(max(deadline - time.monotonic(), 1e-6))
        return b"".join(chunks)


class Registration:
    """The registered connection of this process: its leases live as long as it is open.

    Made by :meth:`Client.register`.  Every method takes the connection's
    lock for its whole exchange, so any number of threads may share one
    registration.  :meth:`close` (or leaving the ``with`` block) closes the
    socket; the daemon takes that as this process exiting and releases its
    leases (persistent ones become orphans).  If a call is interrupted half
    way (timeout, short read), :attr:`broken` says why and every later call
    fails with -ENOTCONN: close the registration and start again.
    """

    def __init__(self, conn: _SyncConnection) -> None:
        self._conn = conn
        self.pid = os.getpid()
        self._restricted = False

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @property
    def closed(self) -> bool:
        return self._conn.sock.fileno() == -1

    @property
    def broken(self) -> str | None:
        """Why the connection went out of step and refuses calls (None while usable)."""
        return self._conn.broken.reason

    def fileno(self) -> int:
        return self._conn.sock.fileno()

    def _run(self, label: str, exchange: _Exchange[_T]) -> _T:
        if self._restricted:
            exchange.close()
            raise SanlockError(ResultCode.EPERM, f"{label}: connection restricted with RESTRICT_ALL", label)
        return self._conn.run(label, exchange)

    def acquire(
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
            return self._run("acquire", _acquire(TARGET_SELF, lockspace, resource, disks, **options))
        plan = acquire_wait(wait)
        plan.begin(_now())
        while True:
            try:
                lease = self._run("acquire", _acquire_attempt(TARGET_SELF, lockspace, resource, disks, **options))
            except SanlockError as exc:
                pause = plan.retry_after(exc, _now())
            else:
                return plan.succeeded(lease, _now())
            _sleep(pause)

    def release(self, lockspace: Name, resource: Name) -> None:
        """Release one lease of this process; -1 (EPERM) if it is not held."""
        self._run("release", _release(TARGET_SELF, lockspace, resource))

    def release_all(self) -> None:
        self._run("release", _release_all(TARGET_SELF))

    def release_orphans(self, lockspace: Name, resource: Name = b"") -> int:
        """Release the orphans (persistent leases of exited processes) of a lockspace, or one of them.

        Returns how many were released.  An empty ``resource`` means all of the lockspace.
        """
        return self._run("release", _release_orphans(TARGET_SELF, lockspace, resource))

    def inquire(self) -> list[HeldLease]:
        return self._run("inquire", _inquire(TARGET_SELF))

    def convert(self, lockspace: Name, resource: Name, shared: bool, *, owner_nowait: bool = False) -> None:
        """Change a held lease to shared (True) or exclusive (False); -114 (EALREADY) if it already is."""
        self._run("convert", _convert(TARGET_SELF, lockspace, resource, shared, owner_nowait))

    def killpath(self, path: str, args: Sequence[str] = (), *, pid_arg: bool = False) -> None:
        """The program the daemon runs (instead of SIGTERM) when our leases must go; ``pid_arg`` appends our pid."""
        self._run("killpath", _killpath(path, args, pid_arg))

    def restrict(self, flags: int) -> None:
        """Set RESTRICT_* flags.  The daemon ignores a RESTRICT_ALL connection, so later calls fail here."""
        self._run("restrict", _restrict(flags))
        self._restricted = bool(flags & RESTRICT_ALL)


class EventChannel:
    """A REG_EVENT connection: the daemon writes an ``event_cb`` record to it for each event set for us."""

    def __init__(self, client: Client, name: bytes, conn: _SyncConnection) -> None:
        self._client, self.name, self._conn = client, name, conn
        self._buffer = b""

    def fileno(self) -> int:
        return self._conn.sock.fileno()

    def get_events(self) -> list[Event]:
        """The events delivered so far, without waiting (as python3-sanlock's get_event)."""
        with self._conn.lock:
            sock = self._conn.sock
            sock.setblocking(False)
            try:
                while chunk := sock.recv(4096):
                    self._buffer += chunk
            except BlockingIOError:
                pass
            finally:
                sock.settimeout(self._conn.timeout)
            whole = len(self._buffer) - len(self._buffer) % EVENT_CB_SIZE
            raw, self._buffer = self._buffer[:whole], self._buffer[whole:]
        return _parse_events(raw)

    def __enter__(self) -> EventChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """As libsanlock's end_event: write the end mark, close, then END_EVENT on a new connection."""
        if self._conn.sock.fileno() == -1:
            return
        with suppress(OSError):
            self._conn.sock.sendall(_END_EVENT_MARK)
        self._conn.close()
        self._client._one_shot("end_event", _end_event(self.name))


class HealthChannel:
    """A health channel (a leased extension): the daemon writes a notice each time the renewal
    health of a lockspace it has joined changes, after one notice per lockspace already joined."""

    def __init__(self, conn: _SyncConnection) -> None:
        self._conn = conn
        self._buffer = b""

    def fileno(self) -> int:
        return self._conn.sock.fileno()

    def receive(self) -> HealthNotice:
        """Wait for the next notice.  Bytes already read are kept for the next call, so a wait
        that times out (blocking: the client's ``timeout``, -110) or is cancelled loses nothing."""
        with self._conn.lock:
            while len(self._buffer) < HEALTH_NOTICE_SIZE:
                try:
                    chunk = self._conn.sock.recv(4096)
                except TimeoutError:
                    raise SanlockError(ResultCode.ETIMEDOUT, "no health notice in time", "health") from None
                except OSError as exc:
                    raise SanlockError(ResultCode.ENOTCONN, f"health channel: {exc.strerror}", "health") from None
                if not chunk:
                    raise SanlockError(ResultCode.ENOTCONN, "health channel closed by the daemon", "health")
                self._buffer += chunk
            raw, self._buffer = self._buffer[:HEALTH_NOTICE_SIZE], self._buffer[HEALTH_NOTICE_SIZE:]
        return _parse_health_notice(raw)

    def __enter__(self) -> HealthChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel: the daemon frees its slot when it sees the close."""
        self._conn.close()


class Client:
    """Blocking client of a sanlock daemon.  Thread-safe: it keeps no connection between calls.

    ``run_dir`` locates ``sanlock.sock`` (default $SANLOCK_RUN_DIR, else
    /run/sanlock).  ``timeout`` (seconds, None = no limit) bounds each call
    as a whole, including the wait for a registration's lock; commands that
    legitimately take long (add_lockspace with ``wait``: at least
    2 * io_timeout; acquire of a lease whose dead owner must expire) need a
    timeout above their duration.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, timeout: float | None = None) -> None:
        self.path = socket_path(run_dir)
        self.timeout = timeout

    def _one_shot(self, label: str, exchange: _Exchange[_T]) -> _T:
        try:
            conn = _SyncConnection.open(self.path, self.timeout)
        except BaseException:
            exchange.close()
            raise
        try:
            return conn.run(label, exchange)
        finally:
            conn.sock.close()

    # -- registration, and registered-type commands for another process

    def register(self) -> Registration:
        """Open and register a connection for this process (use it as a context manager)."""
        conn = _SyncConnection.open(self.path, self.timeout)
        try:
            conn.run("register", _register())
        except BaseException:
            conn.close()
            raise
        return Registration(conn)

    def acquire(
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

        ``wait`` as for :meth:`Registration.acquire`: contention retried until
        then, one connection per attempt.
        """
        if wait is None:
            return self._one_shot("acquire", _acquire(pid, lockspace, resource, disks, **options))
        plan = acquire_wait(wait)
        plan.begin(_now())
        while True:
            try:
                lease = self._one_shot("acquire", _acquire_attempt(pid, lockspace, resource, disks, **options))
            except SanlockError as exc:
                pause = plan.retry_after(exc, _now())
            else:
                return plan.succeeded(lease, _now())
            _sleep(pause)

    def release(self, lockspace: Name, resource: Name, *, pid: int) -> None:
        self._one_shot("release", _release(pid, lockspace, resource))

    def release_all(self, *, pid: int) -> None:
        self._one_shot("release", _release_all(pid))

    def inquire(self, *, pid: int) -> list[HeldLease]:
        """The leases of registered process ``pid`` (-3 ESRCH: not registered, a cheap liveness probe)."""
        return self._one_shot("inquire", _inquire(pid))

    def convert(self, lockspace: Name, resource: Name, shared: bool, *, pid: int, owner_nowait: bool = False) -> None:
        self._one_shot("convert", _convert(pid, lockspace, resource, shared, owner_nowait))

    # -- lockspaces

    def add_lockspace(
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
        self._one_shot("add_lockspace", _add_lockspace(name, host_id, path, offset, io_timeout, wait))

    def inq_lockspace(
        self, name: Name, host_id: int, path: str | os.PathLike[str], offset: int = 0, *, wait: bool = False
    ) -> bool | None:
        """True joined, False not found, None being added or removed (``wait``: until it is settled)."""
        return self._one_shot("inq_lockspace", _inq_lockspace(name, host_id, path, offset, wait))

    def rem_lockspace(
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
        self._one_shot("rem_lockspace", _rem_lockspace(name, host_id, path, offset, wait, unused))

    def get_lockspaces(self) -> list[LockspaceInfo]:
        return self._one_shot("get_lockspaces", _get_lockspaces())

    def get_hosts(self, name: Name, host_id: int = 0) -> list[HostInfo]:
        """Hosts of a joined lockspace (host_id 0: all with a timestamp); -11 until the first scan is done."""
        return self._one_shot("get_hosts", _get_hosts(name, host_id))

    def host_status(self, name: Name) -> list[StateRecord]:
        """HOST records: ``data32`` host id, ``data64`` timestamp, ``text`` key=value pairs (§6.3)."""
        return self._one_shot("host_status", _host_status(name))

    def renewal(self, name: Name) -> tuple[int, list[StateRecord]]:
        """(io_timeout, RENEWAL records, oldest first); (0, []) when the daemon keeps no history."""
        return self._one_shot("renewal", _renewal(name))

    def set_config(self, name: Name, config: int) -> None:
        self._one_shot("set_config", _set_config(name, config))

    # -- resources

    def request(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], force_mode: int, *, lver: int | None = None
    ) -> None:
        """Ask the holder to give a lease up: force_mode 1 FORCE, 2 GRACEFUL, 0 just write/clear.

        Without ``lver`` the request is for the next version (NEXT_LVER).
        """
        self._one_shot("request", _request_lease(lockspace, resource, disks, force_mode, lver))

    def read_resource_owners(
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
        return self._one_shot("read_resource_owners", exchange)

    def set_lvb(self, lockspace: Name, resource: Name, data: bytes) -> None:
        """Set the value block of a lease held here with ``lvb=True``; it is written to disk on release."""
        self._one_shot("set_lvb", _set_lvb(lockspace, resource, data))

    def get_lvb(self, lockspace: Name, resource: Name, size: int = 0) -> bytes:
        """The value block of a lease held here with ``lvb=True`` (size 0: the whole sector)."""
        return self._one_shot("get_lvb", _get_lvb(lockspace, resource, size))

    # -- lease areas, read and written by the daemon

    def write_lockspace(
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
        self._one_shot("write_lockspace", exchange)

    def read_lockspace(
        self,
        path: str | os.PathLike[str],
        offset: int = 0,
        *,
        host_id: int = 0,
        align: int | None = None,
        sector: int | None = None,
    ) -> LockspaceRecord:
        """(name, io_timeout) of the lockspace at path:offset (no geometry given: the daemon probes)."""
        return self._one_shot("read_lockspace", _read_lockspace(path, offset, host_id, align, sector))

    def write_resource(
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
        self._one_shot("write_resource", exchange)

    def read_resource(
        self, path: str | os.PathLike[str], offset: int = 0, *, align: int | None = None, sector: int | None = None
    ) -> ResourceInfo:
        return self._one_shot("read_resource", _read_resource(path, offset, align, sector))

    def align(self, path: str | os.PathLike[str]) -> int:
        """The lease alignment the daemon finds for a device (1 MiB for 512-byte sectors)."""
        return self._one_shot("align", _align(path))

    # -- events

    def reg_event(self, name: Name) -> EventChannel:
        """A channel on which the daemon delivers events other hosts set for us in lockspace ``name``."""
        conn = _SyncConnection.open(self.path, self.timeout)
        try:
            conn.run("reg_event", _reg_event(name))
        except BaseException:
            conn.close()
            raise
        return EventChannel(self, _name(name), conn)

    def watch_health(self) -> HealthChannel:
        """A channel of lease-health notices for every lockspace joined (a leased extension).

        An application holding leases can stop writing when its lockspace
        warns (no renewal for 6N), before it fails at 8N and its holders are
        killed.  A sanlock daemon does not know the command: -95 (EOPNOTSUPP)
        at once, no timeout needed.
        """
        conn = _SyncConnection.open(self.path, self.timeout)
        try:
            conn.run("health", _watch_health())
        except BaseException:
            conn.close()
            raise
        return HealthChannel(conn)

    def set_event(
        self, name: Name, host_id: int, generation: int, event: int, data: int = 0, *, flags: int = 0
    ) -> None:
        """Flag an event for host ``host_id``, delivered with our next renewals (SETEV_* flags)."""
        self._one_shot("set_event", _set_event(name, HostEvent(host_id, generation, event, data), flags))

    # -- the daemon

    def version(self) -> VersionInfo:
        return self._one_shot("version", _version())

    def status(self, level: int = 0) -> list[StatusRecord]:
        """The daemon's state records (level 1/2/3 stop after daemon/client/lockspace records)."""
        return self._one_shot("status", _status(level))

    def log_dump(self) -> str:
        return self._one_shot("log_dump", _log_dump())

    def metrics(self) -> str:
        """The daemon's metrics in Prometheus text format (a leased extension).

        A sanlock daemon does not know the command and never answers: create
        the client with a ``timeout`` when the daemon may be sanlock.
        """
        return self._one_shot("metrics", _metrics())

    def shutdown(self, *, force: bool = False, wait: bool = False) -> None:
        """Stop the daemon; ``force`` SIGKILLs lease holders first, ``wait`` returns once it has exited.

        Unforced, ``wait`` fails with -16 (EBUSY) while lockspaces exist; without
        ``wait`` the daemon silently ignores such a request.
        """
        self._one_shot("shutdown", _shutdown(force, wait))
