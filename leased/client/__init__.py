"""A client of sanlock's wire protocol: blocking (:class:`Client`) and trio (:class:`AsyncClient`).

It speaks to a real sanlock 3.8.5 daemon or to leased's own, over
``<run_dir>/sanlock.sock``, exactly as libsanlock does: one fresh connection
per command, except for the *registered* connection, which is the lease
context of this process for as long as it stays open.

Why one lock per connection
---------------------------
A sanlock connection is a bare request/reply pipe.  A request is a 32-byte
header followed by a body whose shape only the command defines, and a reply
carries no request id (``seq`` is echoed, but libsanlock leaves it 0 and
nothing checks it).  The daemon reads one header, then exactly the body that
command expects, then the next header.  So the bytes of two requests must
never mix: if thread A writes its ACQUIRE header, thread B its INQUIRE header,
and then A its body, the daemon reads B's header as part of A's resource, A's
body as a stream of bogus headers, and the two threads pick up each other's
replies.  A thread may then believe it holds a lease it never got, or release
one another thread relies on.  That is how sanlock users lost leases: the
registered connection belongs to the whole process (the daemon knows it only
by the pid on the other end), every thread that acquires or releases for the
process uses it, and libsanlock left the serialising to its callers.

So the rules here are:

* Every connection owns one lock (``threading.Lock`` or ``trio.Lock``), held
  from the first byte of a request until the last byte of its reply has been
  read.  The header and body go out in a single ``sendall``.
* A call that stops half way (timeout, cancellation, a short read, a
  malformed reply) leaves the connection out of step: nobody can tell which
  reply the next read would return.  The connection is then marked broken and
  refuses further calls; only closing it is safe (and closing a registered
  connection releases its leases, which is the truthful outcome).
* Each request carries a fresh ``seq`` and the reply must echo it and the
  command, so a mix-up that happens anyway is detected, not acted upon.
* Calls that need two exchanges to mean one thing (ACQUIRE, then INQUIRE to
  learn the lease version used as a fencing token) hold the lock across both.
* Unregistered commands open their own connection per call, as libsanlock
  does, so they never wait for each other.

The protocol part is sans-I/O: each command is a generator that yields
"send these bytes", "read exactly n bytes" or "read until EOF" steps and
returns the parsed result; :class:`Client` and :class:`AsyncClient` only drive
those generators over their sockets.  Replies are framed per command (wire
spec §2.3), never by trusting ``length`` blindly, and every size is bounded.

Errors: a negative result raises :class:`SanlockError` (a
:class:`~leased.errors.LeaseError`) with ``rc`` set to the code; a connection
that closes or stalls where a reply is due raises it with ``-ENOTCONN`` /
``-ETIMEDOUT``; a reply that does not fit the request raises
:class:`SanlockProtocolError` (``-EPROTO``).  Arguments that cannot be encoded
(a name longer than 48 bytes, a path too long) raise ``LeaseError`` before
anything is sent.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Generator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, NamedTuple, TypeAlias, TypedDict, TypeVar

from leased.errors import LeaseError, ResultCode
from leased.protocol import (
    ACQUIRE_LVB,
    ACQUIRE_ORPHAN,
    ACQUIRE_OWNER_NOWAIT,
    ADD_ASYNC,
    CONVERT_OWNER_NOWAIT,
    DISK_SIZE,
    HEADER_SIZE,
    HOST_SIZE,
    HOST_STATE_MASK,
    INQ_WAIT,
    KILLPATH_PID,
    LOCKSPACE_SIZE,
    LSF_ADD,
    LSF_REM,
    MAX_DISKS,
    MAX_LVB,
    REL_ALL,
    REL_ORPHAN,
    REM_ASYNC,
    REM_UNUSED,
    REQUEST_NEXT_LVER,
    RES_ALIGN1M,
    RES_ALIGN2M,
    RES_ALIGN4M,
    RES_ALIGN8M,
    RES_LVER,
    RES_NUM_HOSTS,
    RES_PERSISTENT,
    RES_SECTOR4K,
    RES_SECTOR512,
    RES_SHARED,
    RESOURCE_SIZE,
    RESTRICT_ALL,
    SM_CB_GET_EVENT,
    SM_MAGIC,
    STATE_SIZE,
    TARGET_SELF,
    WRITE_CLEAR,
    Cmd,
    Disk,
    Header,
    Host,
    HostEvent,
    HostState,
    Killpath,
    Lockspace,
    Options,
    Resource,
    StateRecord,
    StateType,
    event_cb,
    parse_state,
    to_unsigned,
)

if TYPE_CHECKING:
    import trio
    from typing_extensions import Unpack

__all__ = [
    "AcquireOptions",
    "AcquiredLease",
    "AsyncClient",
    "AsyncEventChannel",
    "AsyncRegistration",
    "Client",
    "Event",
    "EventChannel",
    "HeldLease",
    "HostInfo",
    "HostState",
    "LockspaceInfo",
    "LockspaceRecord",
    "Registration",
    "ResourceInfo",
    "SanlockError",
    "SanlockProtocolError",
    "StatusRecord",
    "VersionInfo",
    "default_run_dir",
    "socket_path",
    "state_fields",
]

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR: Final = "/run/sanlock"
SOCKET_NAME: Final = "sanlock.sock"
MiB: Final = 1024 * 1024

# Bounds on what a reply may make us buffer.  sanlock caps its own reply
# buffers at 1 MiB (get_lockspaces, get_hosts, log_dump); a status stream has
# one record per client slot (1024), lockspace and lease, each at most
# 80 + 4096 bytes plus a struct, so 64 MiB is far above any real daemon.
MAX_REPLY_PAYLOAD: Final = 4 * MiB
MAX_STREAM: Final = 64 * MiB
EVENT_CB_SIZE: Final = 80

Name: TypeAlias = bytes | str
DiskLike: TypeAlias = Disk | tuple[str | os.PathLike[str], int]

_T = TypeVar("_T")


# --------------------------------------------------------------------------
# Errors


class SanlockError(LeaseError):
    """A command failed: ``rc`` is the negative code the daemon (or the transport) gave."""

    def __init__(self, rc: int, detail: str, cmd: str = "") -> None:
        super().__init__(rc, detail)
        self.cmd = cmd


class SanlockProtocolError(SanlockError):
    """A reply that does not answer the request sent: the connection is out of step."""

    def __init__(self, detail: str, cmd: str = "") -> None:
        super().__init__(ResultCode.EPROTO, detail, cmd)


# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class HostInfo:
    host_id: int
    generation: int
    timestamp: int
    io_timeout: int
    flags: int

    @property
    def state(self) -> HostState | None:
        """The host state from GET_HOSTS; None where the daemon reports none (read_resource_owners)."""
        try:
            return HostState(self.flags & HOST_STATE_MASK)
        except ValueError:
            return None

    @classmethod
    def _from(cls, host: Host) -> HostInfo:
        return cls(host.host_id, host.generation, host.timestamp, host.io_timeout, host.flags)


@dataclass(frozen=True)
class LockspaceInfo:
    name: bytes
    host_id: int
    path: str
    offset: int
    flags: int

    @property
    def adding(self) -> bool:
        return bool(self.flags & LSF_ADD)

    @property
    def removing(self) -> bool:
        return bool(self.flags & LSF_REM)

    @property
    def joined(self) -> bool:
        return not self.flags & (LSF_ADD | LSF_REM)


@dataclass(frozen=True)
class HeldLease:
    """One lease a registered client holds, as INQUIRE reports it.

    ``lver`` is the lease version of the acquire that got it (a fencing
    token: it grows with every exclusive acquire); None for a shared lease,
    which sanlock reports as ``SH`` without a version.
    """

    lockspace: bytes
    resource: bytes
    disks: tuple[Disk, ...]
    shared: bool
    lver: int | None


@dataclass(frozen=True)
class AcquiredLease(HeldLease):
    """The lease an acquire got, with ``lver`` read by an INQUIRE on the same connection.

    ``lver`` is None for a shared lease, and also when the lease was no
    longer held (released on our behalf by another connection) by the time of
    that INQUIRE, or when INQUIRE failed (sanlock 3.8.5 fails it with
    -ELIBSCN when a held lease's path contains a space).
    """


@dataclass(frozen=True)
class ResourceInfo:
    lockspace: bytes
    name: bytes
    lver: int
    flags: int = 0

    @property
    def shared(self) -> bool:
        return bool(self.flags & RES_SHARED)


class LockspaceRecord(NamedTuple):
    name: bytes
    io_timeout: int


class VersionInfo(NamedTuple):
    version_num: int
    proto: int

    @property
    def version(self) -> str:
        """``major.minor.patch`` from ``major<<24 | minor<<16 | patch<<8 | build``."""
        num = self.version_num
        return f"{num >> 24 & 0xFF}.{num >> 16 & 0xFF}.{num >> 8 & 0xFF}"


@dataclass(frozen=True)
class StatusRecord:
    """One record of a STATUS stream, with the struct that follows LOCKSPACE and RESOURCE records."""

    state: StateRecord
    lockspace: Lockspace | None = None
    resource: Resource | None = None

    @property
    def type(self) -> StateType:
        return StateType(self.state.type)

    @property
    def fields(self) -> dict[str, str]:
        return state_fields(self.state.text)


@dataclass(frozen=True)
class Event:
    """An event another host set for us (``event_cb``, delivered on a REG_EVENT connection)."""

    host_id: int
    generation: int
    event: int
    data: int
    from_host_id: int
    from_generation: int


class AcquireOptions(TypedDict, total=False):
    """Keyword options of ``acquire`` (all default to off/None).

    ``shared``: a shared lease.  ``lver``: fail with -240 unless the on-disk
    lease version equals it.  ``lvb``: load the lease value block (enables
    set_lvb/get_lvb).  ``owner_nowait``: -247 instead of waiting for a dead
    owner's lease to expire.  ``orphan``: adopt an orphan of the same mode.
    ``num_hosts``: set a new num_hosts on the lease.  ``persistent``: the
    lease becomes an orphan, not released, when the process goes.
    ``owner_name``: the name ``sanlock client status`` shows for the process.
    """

    shared: bool
    lver: int | None
    lvb: bool
    owner_nowait: bool
    orphan: bool
    num_hosts: int | None
    persistent: bool
    owner_name: Name


def state_fields(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a status record's text."""
    pairs = (item.partition("=") for item in text.rstrip("\0").split(" ") if item)
    return {key: value for key, _, value in pairs}


# --------------------------------------------------------------------------
# Socket location


def default_run_dir() -> str:
    return os.environ.get("SANLOCK_RUN_DIR") or DEFAULT_RUN_DIR


def socket_path(run_dir: str | os.PathLike[str] | None = None) -> str:
    """``<run_dir>/sanlock.sock``; run_dir defaults to $SANLOCK_RUN_DIR, else /run/sanlock."""
    return os.path.join(os.fspath(run_dir) if run_dir is not None else default_run_dir(), SOCKET_NAME)


# --------------------------------------------------------------------------
# Sans-I/O exchanges


@dataclass(frozen=True)
class _Send:
    data: bytes


@dataclass(frozen=True)
class _Recv:
    """Read exactly ``size`` bytes; EOF before that is an error naming ``what``."""

    size: int
    what: str


@dataclass(frozen=True)
class _RecvUntilEOF:
    limit: int
    what: str


_Step: TypeAlias = _Send | _Recv | _RecvUntilEOF
_Exchange: TypeAlias = Generator[_Step, bytes, _T]

_SEQ = itertools.count(1)


def _next_seq() -> int:
    """A request tag unique per process (so per connection): 1..0xFFFFFFFF, never 0."""
    return next(_SEQ) % 0xFFFFFFFF + 1


def _label(cmd: Cmd) -> str:
    return cmd.name.lower()


def _request(
    cmd: Cmd, body: bytes = b"", *, flags: int = 0, data: int = 0, data2: int = 0, length: int | None = None
) -> Header:
    return Header(
        cmd,
        cmd_flags=flags,
        length=HEADER_SIZE + len(body) if length is None else length,
        seq=_next_seq(),
        data=to_unsigned(data),
        data2=to_unsigned(data2),
    )


def _transact(request: Header, body: bytes = b"") -> _Exchange[Header]:
    """Send one request (header and body in one write) and read its reply header.

    The reply must carry the magic, the command and the ``seq`` we sent
    (VERSION and SHUTDOWN_WAIT replies are fresh headers with ``seq`` 0;
    SHUTDOWN_WAIT's success reply also has ``cmd`` 0).
    """
    label = _label(Cmd(request.cmd))
    yield _Send(request.encode() + body)
    raw = yield _Recv(HEADER_SIZE, f"{label} reply header")
    reply = Header.decode(raw)
    if reply.magic != SM_MAGIC:
        raise SanlockProtocolError(f"{label} reply has magic 0x{reply.magic:08x}", label)
    fresh = request.cmd in (Cmd.VERSION, Cmd.SHUTDOWN_WAIT)
    cmd_ok = reply.cmd == request.cmd or (request.cmd == Cmd.SHUTDOWN_WAIT and reply.cmd == 0)
    seq_ok = reply.seq == request.seq or (fresh and reply.seq == 0)
    if not (cmd_ok and seq_ok):
        raise SanlockProtocolError(
            f"reply for cmd {reply.cmd} seq {reply.seq} while waiting for {label} seq {request.seq}", label
        )
    return reply


def _check(reply: Header, what: str) -> int:
    """The result of a reply; a negative one raises SanlockError."""
    result = reply.result
    if result < 0:
        raise SanlockError(result, f"{what} failed", what.split(" ", 1)[0])
    return result


def _payload(reply: Header, what: str, limit: int = MAX_REPLY_PAYLOAD) -> _Exchange[bytes]:
    """Read the ``length - 32`` bytes a reply announces (bounded)."""
    size = reply.length - HEADER_SIZE
    if not 0 <= size <= limit:
        raise SanlockProtocolError(f"{what} reply length {reply.length} out of range", what)
    if not size:
        return b""
    return (yield _Recv(size, f"{what} reply payload"))


def _simple(cmd: Cmd, body: bytes = b"", what: str = "", **fields: int) -> _Exchange[int]:
    """A command whose reply is a bare header: returns the (non-negative) result."""
    reply = yield from _transact(_request(cmd, body, **fields), body)
    return _check(reply, what or _label(cmd))


_STATE_TYPES: Final = frozenset(int(t) for t in StateType)


def _parse_records(raw: bytes, what: str, with_structs: bool) -> list[StatusRecord]:
    """Split a STATUS/HOST_STATUS/RENEWAL stream into records (§5.19, §5.20)."""
    records, offset = [], 0
    while offset < len(raw):
        if offset + STATE_SIZE > len(raw):
            raise SanlockProtocolError(f"{what} stream ends inside a record", what)
        state, str_len = StateRecord.decode_head(raw[offset : offset + STATE_SIZE])
        offset += STATE_SIZE
        if offset + str_len > len(raw):
            raise SanlockProtocolError(f"{what} stream ends inside a record text", what)
        text = raw[offset : offset + str_len].split(b"\0", 1)[0].decode(errors="surrogateescape")
        offset += str_len
        state = StateRecord(state.type, state.data32, state.data64, state.name, text)
        lockspace, resource = None, None
        if with_structs and state.type == StateType.LOCKSPACE:
            if offset + LOCKSPACE_SIZE > len(raw):
                raise SanlockProtocolError(f"{what} stream ends inside a lockspace", what)
            lockspace = Lockspace.decode(raw[offset : offset + LOCKSPACE_SIZE])
            offset += LOCKSPACE_SIZE
        elif with_structs and state.type == StateType.RESOURCE:
            if offset + RESOURCE_SIZE > len(raw):
                raise SanlockProtocolError(f"{what} stream ends inside a resource", what)
            head = raw[offset : offset + RESOURCE_SIZE]
            num_disks = int.from_bytes(head[124:128], "little")
            end = offset + RESOURCE_SIZE + num_disks * DISK_SIZE
            if num_disks > MAX_DISKS or end > len(raw):
                raise SanlockProtocolError(f"{what} stream has a resource with {num_disks} disks", what)
            disks = tuple(
                Disk.decode(raw[pos : pos + DISK_SIZE]) for pos in range(offset + RESOURCE_SIZE, end, DISK_SIZE)
            )
            resource = Resource.decode(head, disks)
            offset = end
        elif state.type not in _STATE_TYPES:
            raise SanlockProtocolError(f"{what} stream has a record of type {state.type}", what)
        records.append(StatusRecord(state, lockspace, resource))
    return records


def _name(value: Name) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _disks(disks: Sequence[DiskLike]) -> tuple[Disk, ...]:
    out = []
    for disk in disks:
        if isinstance(disk, Disk):
            out.append(disk)
        else:
            path, offset = disk
            out.append(Disk(os.fspath(path), int(offset)))
    if not 1 <= len(out) <= MAX_DISKS:
        raise LeaseError(ResultCode.EINVAL, f"a resource needs 1..{MAX_DISKS} disks, got {len(out)}")
    return tuple(out)


_ALIGN_FLAGS: Final = {1 * MiB: RES_ALIGN1M, 2 * MiB: RES_ALIGN2M, 4 * MiB: RES_ALIGN4M, 8 * MiB: RES_ALIGN8M}
_SECTOR_FLAGS: Final = {512: RES_SECTOR512, 4096: RES_SECTOR4K}


def _geometry_flags(align: int | None, sector: int | None) -> int:
    """ALIGN|SECTOR bits (the same for resources, lockspaces and rindexes); both or neither.

    Neither (None, None) lets the daemon probe the device.
    """
    if align is None and sector is None:
        return 0
    if align not in _ALIGN_FLAGS or sector not in _SECTOR_FLAGS:
        raise LeaseError(ResultCode.EINVAL, f"align {align} / sector {sector} is not a sanlock geometry")
    return _ALIGN_FLAGS[align] | _SECTOR_FLAGS[sector]


def _lockspace_body(name: Name, host_id: int = 0, path: str | os.PathLike[str] = "", offset: int = 0) -> bytes:
    return Lockspace(_name(name), host_id, 0, Disk(os.fspath(path), offset)).encode()


def _held(resource: Resource) -> HeldLease:
    shared = bool(resource.flags & RES_SHARED)
    return HeldLease(resource.lockspace, resource.name, resource.disks, shared, None if shared else resource.lver)


def _version() -> _Exchange[VersionInfo]:
    reply = yield from _transact(_request(Cmd.VERSION))
    _check(reply, "version")
    return VersionInfo(reply.data2, reply.version)


def _inquire(target: int) -> _Exchange[list[HeldLease]]:
    reply = yield from _transact(_request(Cmd.INQUIRE, data2=target))
    state = yield from _payload(reply, "inquire")
    _check(reply, "inquire")
    text = state.split(b"\0", 1)[0].decode(errors="surrogateescape")
    try:
        return [_held(resource) for resource in parse_state(text)]
    except (LeaseError, ValueError) as exc:
        raise SanlockProtocolError(f"inquire state {text!r} does not parse: {exc}", "inquire") from exc


def _acquire(
    target: int,
    lockspace: Name,
    resource: Name,
    disks: Sequence[DiskLike],
    *,
    shared: bool = False,
    lver: int | None = None,
    lvb: bool = False,
    owner_nowait: bool = False,
    orphan: bool = False,
    num_hosts: int | None = None,
    persistent: bool = False,
    owner_name: Name = b"",
) -> _Exchange[AcquiredLease]:
    res_flags = (RES_SHARED if shared else 0) | (RES_PERSISTENT if persistent else 0)
    res_flags |= (RES_LVER if lver is not None else 0) | (RES_NUM_HOSTS if num_hosts is not None else 0)
    res = Resource(
        _name(lockspace),
        _name(resource),
        lver=lver or 0,
        data32=num_hosts or 0,
        flags=res_flags,
        disks=_disks(disks),
    )
    body = res.encode() + Options(_name(owner_name)).encode()
    flags = (ACQUIRE_LVB if lvb else 0) | (ACQUIRE_OWNER_NOWAIT if owner_nowait else 0)
    flags |= ACQUIRE_ORPHAN if orphan else 0
    what = f"acquire {res.lockspace!r}:{res.name!r}"
    reply = yield from _transact(_request(Cmd.ACQUIRE, body, flags=flags, data=1, data2=target), body)
    _check(reply, what)
    # The lease version is the fencing token: ask for it on this connection,
    # under the same lock hold, so no other call of ours can come in between.
    try:
        held = yield from _inquire(target)
    except SanlockProtocolError:
        raise
    except SanlockError as exc:
        log.warning("%s succeeded but inquire for its lver failed: %s", what, exc)
        held = []
    for lease in held:
        if (lease.lockspace, lease.resource) == (res.lockspace, res.name):
            return AcquiredLease(res.lockspace, res.name, res.disks, shared, lease.lver)
    return AcquiredLease(res.lockspace, res.name, res.disks, shared, None)


def _release(target: int, lockspace: Name, resource: Name) -> _Exchange[int]:
    body = Resource(_name(lockspace), _name(resource)).encode(with_disks=False)
    return (
        yield from _simple(Cmd.RELEASE, body, f"release {_name(lockspace)!r}:{_name(resource)!r}", data=1, data2=target)
    )


def _release_all(target: int) -> _Exchange[int]:
    # sanlock reads no body for REL_ALL; libsanlock's trailing structs would be
    # parsed as headers on a registered connection, so none are sent.
    return (yield from _simple(Cmd.RELEASE, flags=REL_ALL, data=0, data2=target, what="release all"))


def _release_orphans(target: int, lockspace: Name, resource: Name) -> _Exchange[int]:
    body = Resource(_name(lockspace), _name(resource)).encode(with_disks=False)
    what = f"release orphans {_name(lockspace)!r}:{_name(resource)!r}"
    return (yield from _simple(Cmd.RELEASE, body, what, flags=REL_ORPHAN, data=1, data2=target))


def _convert(target: int, lockspace: Name, resource: Name, shared: bool, owner_nowait: bool) -> _Exchange[int]:
    body = Resource(_name(lockspace), _name(resource), flags=RES_SHARED if shared else 0).encode(with_disks=False)
    what = f"convert {_name(lockspace)!r}:{_name(resource)!r} to {'shared' if shared else 'exclusive'}"
    flags = CONVERT_OWNER_NOWAIT if owner_nowait else 0
    return (yield from _simple(Cmd.CONVERT, body, what, flags=flags, data2=target))


def _escape_arg(arg: str) -> str:
    return arg.replace("\\", "\\\\").replace(" ", "\\ ")


def _killpath(path: str, args: Sequence[str], pid_arg: bool) -> _Exchange[int]:
    arg_text = " ".join(_escape_arg(arg) for arg in args)
    if len(path.encode()) > 127 or len(arg_text.encode()) > 127:
        raise LeaseError(ResultCode.ENAMETOOLONG, "killpath program and arguments are limited to 127 bytes each")
    if len(args) + 1 + pid_arg > 8:
        raise LeaseError(ResultCode.E2BIG, "killpath takes at most 8 argv entries including the program (and pid)")
    body = Killpath(path, arg_text).encode()
    return (yield from _simple(Cmd.KILLPATH, body, flags=KILLPATH_PID if pid_arg else 0, data2=TARGET_SELF))


def _stream(cmd: Cmd, body: bytes, what: str, with_structs: bool, **fields: int) -> _Exchange[tuple[Header, bytes]]:
    """A command answered by a header and records until the daemon closes."""
    reply = yield from _transact(_request(cmd, body, **fields), body)
    _check(reply, what)
    raw = yield _RecvUntilEOF(MAX_STREAM, f"{what} records")
    return reply, raw


def _status(level: int) -> _Exchange[list[StatusRecord]]:
    _, raw = yield from _stream(Cmd.STATUS, b"", "status", True, data=level)
    return _parse_records(raw, "status", True)


def _states(cmd: Cmd, name: Name) -> _Exchange[tuple[Header, list[StateRecord]]]:
    # libsanlock sends HOST_STATUS and RENEWAL with length 32 although a
    # lockspace struct follows; the daemon frames by command (§2.1).
    body = _lockspace_body(name)
    label = _label(cmd)
    reply, raw = yield from _stream(cmd, body, label, False, length=HEADER_SIZE)
    return reply, [record.state for record in _parse_records(raw, label, False)]


def _log_dump() -> _Exchange[str]:
    reply = yield from _transact(_request(Cmd.LOG_DUMP))
    size = _check(reply, "log_dump")
    if size > MAX_REPLY_PAYLOAD:
        raise SanlockProtocolError(f"log_dump announces {size} bytes", "log_dump")
    text = (yield _Recv(size, "log_dump text")) if size else b""
    return text.decode(errors="replace")


def _metrics() -> _Exchange[str]:
    reply = yield from _transact(_request(Cmd.LEASED_METRICS))
    _check(reply, "metrics")
    raw = yield from _payload(reply, "metrics")
    return raw.decode(errors="replace")


def _get_lockspaces() -> _Exchange[list[LockspaceInfo]]:
    reply = yield from _transact(_request(Cmd.GET_LOCKSPACES))
    raw = yield from _payload(reply, "get_lockspaces")
    if reply.result != ResultCode.ENOSPC:  # sanlock's buffer filled up: what was sent is still good
        _check(reply, "get_lockspaces")
    if len(raw) % LOCKSPACE_SIZE:
        raise SanlockProtocolError(f"get_lockspaces payload of {len(raw)} bytes", "get_lockspaces")
    out = []
    for pos in range(0, len(raw), LOCKSPACE_SIZE):
        ls = Lockspace.decode(raw[pos : pos + LOCKSPACE_SIZE])
        out.append(LockspaceInfo(ls.name, ls.host_id, ls.disk.path, ls.disk.offset, ls.flags))
    return out


def _hosts(raw: bytes, count: int, what: str) -> list[HostInfo]:
    if len(raw) != count * HOST_SIZE:
        raise SanlockProtocolError(f"{what} announces {count} hosts in {len(raw)} bytes", what)
    return [HostInfo._from(Host.decode(raw[pos : pos + HOST_SIZE])) for pos in range(0, len(raw), HOST_SIZE)]


def _get_hosts(name: Name, host_id: int) -> _Exchange[list[HostInfo]]:
    body = _lockspace_body(name, host_id)
    reply = yield from _transact(_request(Cmd.GET_HOSTS, body), body)
    raw = yield from _payload(reply, "get_hosts")
    _check(reply, f"get_hosts {_name(name)!r}")
    return _hosts(raw, reply.data2, "get_hosts")


def _inq_lockspace(
    name: Name, host_id: int, path: str | os.PathLike[str], offset: int, wait: bool
) -> _Exchange[bool | None]:
    body = _lockspace_body(name, host_id, path, offset)
    reply = yield from _transact(_request(Cmd.INQ_LOCKSPACE, body, flags=INQ_WAIT if wait else 0), body)
    if reply.result == ResultCode.ENOENT:
        return False
    if reply.result == ResultCode.EINPROGRESS:
        return None
    _check(reply, f"inq_lockspace {_name(name)!r}")
    return True


def _read_lockspace(
    path: str | os.PathLike[str], offset: int, host_id: int, align: int | None, sector: int | None
) -> _Exchange[LockspaceRecord]:
    body = Lockspace(b"", host_id, _geometry_flags(align, sector), Disk(os.fspath(path), offset)).encode()
    reply = yield from _transact(_request(Cmd.READ_LOCKSPACE, body), body)
    raw = yield from _payload(reply, "read_lockspace", LOCKSPACE_SIZE)
    _check(reply, f"read_lockspace {os.fspath(path)}:{offset}")
    if len(raw) != LOCKSPACE_SIZE:
        raise SanlockProtocolError(f"read_lockspace payload of {len(raw)} bytes", "read_lockspace")
    return LockspaceRecord(Lockspace.decode(raw).name, reply.data2)


def _resource_reply(raw: bytes, what: str) -> ResourceInfo:
    if len(raw) < RESOURCE_SIZE:
        raise SanlockProtocolError(f"{what} payload of {len(raw)} bytes", what)
    res = Resource.decode(raw[:RESOURCE_SIZE])
    return ResourceInfo(res.lockspace, res.name, res.lver, res.flags)


def _read_resource(
    path: str | os.PathLike[str], offset: int, align: int | None, sector: int | None
) -> _Exchange[ResourceInfo]:
    res = Resource(b"", b"", flags=_geometry_flags(align, sector), disks=(Disk(os.fspath(path), offset),))
    body = res.encode()
    reply = yield from _transact(_request(Cmd.READ_RESOURCE, body), body)
    raw = yield from _payload(reply, "read_resource", RESOURCE_SIZE)
    _check(reply, f"read_resource {os.fspath(path)}:{offset}")
    return _resource_reply(raw, "read_resource")


def _read_resource_owners(
    lockspace: Name, resource: Name, disks: Sequence[DiskLike], align: int | None, sector: int | None
) -> _Exchange[tuple[ResourceInfo, list[HostInfo]]]:
    res = Resource(_name(lockspace), _name(resource), flags=_geometry_flags(align, sector), disks=_disks(disks))
    body = res.encode()
    reply = yield from _transact(_request(Cmd.READ_RESOURCE_OWNERS, body), body)
    raw = yield from _payload(reply, "read_resource_owners")
    _check(reply, f"read_resource_owners {res.lockspace!r}:{res.name!r}")
    info = _resource_reply(raw, "read_resource_owners")
    return info, _hosts(raw[RESOURCE_SIZE:], reply.data2, "read_resource_owners")


def _get_lvb(lockspace: Name, resource: Name, size: int) -> _Exchange[bytes]:
    if not 0 <= size <= MAX_LVB:
        raise LeaseError(ResultCode.EINVAL, f"lvb size {size} not in 0..{MAX_LVB}")
    body = Resource(_name(lockspace), _name(resource)).encode(with_disks=False)
    reply = yield from _transact(_request(Cmd.GET_LVB, body, data2=size), body)
    raw = yield from _payload(reply, "get_lvb", MAX_LVB)
    _check(reply, f"get_lvb {_name(lockspace)!r}:{_name(resource)!r}")
    return raw[:size] if size else raw


def _reg_event(name: Name) -> _Exchange[None]:
    body = _lockspace_body(name) + HostEvent().encode()
    reply = yield from _transact(_request(Cmd.REG_EVENT, body), body)
    _check(reply, f"reg_event {_name(name)!r}")


def _add_lockspace(
    name: Name, host_id: int, path: str | os.PathLike[str], offset: int, io_timeout: int, wait: bool
) -> _Exchange[int]:
    body = _lockspace_body(name, host_id, path, offset)
    flags = 0 if wait else ADD_ASYNC
    return (yield from _simple(Cmd.ADD_LOCKSPACE, body, f"add_lockspace {_name(name)!r}", flags=flags, data=io_timeout))


def _rem_lockspace(
    name: Name, host_id: int, path: str | os.PathLike[str], offset: int, wait: bool, unused: bool
) -> _Exchange[int]:
    body = _lockspace_body(name, host_id, path, offset)
    flags = (0 if wait else REM_ASYNC) | (REM_UNUSED if unused else 0)
    return (yield from _simple(Cmd.REM_LOCKSPACE, body, f"rem_lockspace {_name(name)!r}", flags=flags))


def _renewal(name: Name) -> _Exchange[tuple[int, list[StateRecord]]]:
    reply, records = yield from _states(Cmd.RENEWAL, name)
    return (reply.data2 if records else 0), records


def _host_status(name: Name) -> _Exchange[list[StateRecord]]:
    return (yield from _states(Cmd.HOST_STATUS, name))[1]


def _request_lease(
    lockspace: Name, resource: Name, disks: Sequence[DiskLike], force_mode: int, lver: int | None
) -> _Exchange[int]:
    res = Resource(
        _name(lockspace),
        _name(resource),
        lver=lver or 0,
        flags=RES_LVER if lver is not None else 0,
        disks=_disks(disks),
    )
    flags = REQUEST_NEXT_LVER if lver is None else 0
    what = f"request {res.lockspace!r}:{res.name!r}"
    return (yield from _simple(Cmd.REQUEST, res.encode(), what, flags=flags, data=force_mode))


def _set_lvb(lockspace: Name, resource: Name, data: bytes) -> _Exchange[int]:
    if len(data) > MAX_LVB:
        raise LeaseError(ResultCode.E2BIG, f"lvb of {len(data)} bytes, at most {MAX_LVB}")
    body = Resource(_name(lockspace), _name(resource)).encode(with_disks=False) + bytes(data)
    return (yield from _simple(Cmd.SET_LVB, body, f"set_lvb {_name(lockspace)!r}:{_name(resource)!r}"))


def _write_lockspace(
    name: Name, path: str | os.PathLike[str], offset: int, io_timeout: int, align: int, sector: int, max_hosts: int
) -> _Exchange[int]:
    body = Lockspace(_name(name), 0, _geometry_flags(align, sector), Disk(os.fspath(path), offset)).encode()
    what = f"write_lockspace {_name(name)!r}"
    return (yield from _simple(Cmd.WRITE_LOCKSPACE, body, what, data=max_hosts, data2=io_timeout))


def _write_resource(
    lockspace: Name, resource: Name, disks: Sequence[DiskLike], num_hosts: int, clear: bool, align: int, sector: int
) -> _Exchange[int]:
    res = Resource(_name(lockspace), _name(resource), flags=_geometry_flags(align, sector), disks=_disks(disks))
    what = f"write_resource {res.lockspace!r}:{res.name!r}"
    # sanlock 3.8.5 takes num_hosts from `data`, where libsanlock puts max_hosts (§5.15).
    flags = WRITE_CLEAR if clear else 0
    return (yield from _simple(Cmd.WRITE_RESOURCE, res.encode(), what, flags=flags, data=num_hosts, data2=num_hosts))


def _align(path: str | os.PathLike[str]) -> _Exchange[int]:
    return (yield from _simple(Cmd.ALIGN, Disk(os.fspath(path)).encode(), f"align {os.fspath(path)}"))


def _set_config(name: Name, config: int) -> _Exchange[int]:
    return (yield from _simple(Cmd.SET_CONFIG, _lockspace_body(name), f"set_config {_name(name)!r}", data=config))


def _set_event(name: Name, event: HostEvent, flags: int) -> _Exchange[int]:
    body = _lockspace_body(name) + event.encode()
    return (yield from _simple(Cmd.SET_EVENT, body, f"set_event {_name(name)!r}", flags=flags))


def _end_event(name: Name) -> _Exchange[int]:
    return (yield from _simple(Cmd.END_EVENT, _lockspace_body(name), f"end_event {_name(name)!r}"))


def _restrict(flags: int) -> _Exchange[int]:
    return (yield from _simple(Cmd.RESTRICT, flags=flags, data2=TARGET_SELF))


def _shutdown(force: bool, wait: bool) -> _Exchange[None]:
    if wait:
        reply = yield from _transact(_request(Cmd.SHUTDOWN_WAIT, data=int(force)))
        _check(reply, "shutdown")
    else:
        # No reply: the daemon closes the connection (and ignores the request
        # while lockspaces exist, unless forced).
        yield _Send(_request(Cmd.SHUTDOWN, data=int(force)).encode())


def _register() -> _Exchange[None]:
    # REGISTER has no reply.  The INQUIRE behind it (legal on a registered
    # connection) is answered only after the daemon has handled the REGISTER,
    # so registering is synchronous, and a refusal (the daemon closes) shows.
    yield _Send(_request(Cmd.REGISTER).encode())
    reply = yield from _transact(_request(Cmd.INQUIRE, data2=TARGET_SELF))
    yield from _payload(reply, "register")
    _check(reply, "register")


def _parse_events(raw: bytes) -> list[Event]:
    events = []
    for pos in range(0, len(raw) - len(raw) % EVENT_CB_SIZE, EVENT_CB_SIZE):
        parsed = event_cb.parse(raw[pos : pos + EVENT_CB_SIZE])
        if parsed.h.magic != SM_MAGIC or parsed.h.cmd != SM_CB_GET_EVENT:
            raise SanlockProtocolError(f"event record with magic 0x{parsed.h.magic:x} cmd {parsed.h.cmd}", "get_event")
        he = parsed.he
        events.append(Event(he.host_id, he.generation, he.event, he.data, parsed.from_host_id, parsed.from_generation))
    return events


_END_EVENT_MARK: Final = (1).to_bytes(4, "little")
"""What libsanlock's end_event writes on the event connection before closing it."""


# --------------------------------------------------------------------------
# Shells: drive exchanges over sockets


class _Broken:
    """Why a connection may not be used again (None while it is in step)."""

    def __init__(self) -> None:
        self.reason: str | None = None


@dataclass(frozen=True)
class _Finished(Generic[_T]):
    value: _T


def _advance(exchange: _Exchange[_T], value: bytes | None, broken: _Broken) -> _Step | _Finished[_T]:
    """The next I/O step of an exchange, or its return value once it has finished.

    A result error (plain SanlockError) is raised only after the whole reply
    was read, so it leaves the connection in step; a protocol error does not.
    """
    try:
        return next(exchange) if value is None else exchange.send(value)
    except StopIteration as stop:
        return _Finished(stop.value)
    except SanlockProtocolError as exc:
        broken.reason = str(exc)
        raise


def _transport_error(exc: OSError, what: str) -> SanlockError:
    rc = -(exc.errno or errno.EIO)
    return SanlockError(rc, f"{what}: {exc.strerror or exc}", what.split(" ", 1)[0])


class _SyncConnection:
    """One socket, its lock and its in-step state; drives exchanges in the calling thread."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self.lock = threading.Lock()
        self.broken = _Broken()
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
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], **options: Unpack[AcquireOptions]
    ) -> AcquiredLease:
        """Acquire a lease for this process; returns it with its lver (the fencing token).

        See :class:`AcquireOptions` for the options.  Fails with -17 (EEXIST)
        if this host already holds it, -28 (ENOSPC) if the lockspace is not
        joined, -243 if another live host holds it, -240 on an lver mismatch.
        """
        return self._run("acquire", _acquire(TARGET_SELF, lockspace, resource, disks, **options))

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
            conn = _SyncConnection(self.path, self.timeout)
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
        conn = _SyncConnection(self.path, self.timeout)
        try:
            conn.run("register", _register())
        except BaseException:
            conn.close()
            raise
        return Registration(conn)

    def acquire(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], *, pid: int, **options: Unpack[AcquireOptions]
    ) -> AcquiredLease:
        """Acquire for the registered process ``pid`` (-3 ESRCH if no such registration)."""
        return self._one_shot("acquire", _acquire(pid, lockspace, resource, disks, **options))

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
        return self._one_shot("read_resource_owners", _read_resource_owners(lockspace, resource, disks, align, sector))

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
        self._one_shot("write_lockspace", _write_lockspace(name, path, offset, io_timeout, align, sector, max_hosts))

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
        conn = _SyncConnection(self.path, self.timeout)
        try:
            conn.run("reg_event", _reg_event(name))
        except BaseException:
            conn.close()
            raise
        return EventChannel(self, _name(name), conn)

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


# --------------------------------------------------------------------------
# trio shell (trio is imported on first use: the blocking client and the
# command line should not pay for importing it)


class _AsyncConnection:
    def __init__(self, stream: trio.SocketStream, timeout: float | None) -> None:
        import trio

        self.stream = stream
        self.timeout = timeout
        self.lock = trio.Lock()
        self.broken = _Broken()

    @classmethod
    async def open(cls, path: str, timeout: float | None) -> _AsyncConnection:
        import trio

        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                stream = await trio.open_unix_socket(path)
        except trio.TooSlowError:
            raise SanlockError(ResultCode.ETIMEDOUT, f"connect to {path} timed out") from None
        except OSError as exc:
            raise _transport_error(exc, f"connect to {path}") from exc
        return cls(stream, timeout)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def run(self, label: str, exchange: _Exchange[_T]) -> _T:
        import trio

        try:
            with trio.fail_after(self.timeout if self.timeout is not None else float("inf")):
                async with self.lock:
                    if self.broken.reason is not None:
                        exchange.close()
                        raise SanlockError(
                            ResultCode.ENOTCONN, f"{label}: connection unusable ({self.broken.reason})", label
                        )
                    return await self._drive(label, exchange)
        except trio.TooSlowError:
            exchange.close()
            raise SanlockError(ResultCode.ETIMEDOUT, f"{label} timed out after {self.timeout} s", label) from None

    async def _drive(self, label: str, exchange: _Exchange[_T]) -> _T:
        import trio

        value: bytes | None = None
        # A cancellation already pending is taken here, before any byte goes
        # out, so it does not cost the connection.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            step = _advance(exchange, value, self.broken)
            if isinstance(step, _Finished):
                return step.value
            try:
                value = await self._perform(step)
            except BaseException as exc:
                # Includes Cancelled and TooSlowError's cancellation: the
                # exchange stopped half way, so this connection is out of step.
                self.broken.reason = f"{label} interrupted: {exc!r}"
                if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
                    raise SanlockError(ResultCode.ENOTCONN, f"{label}: connection lost ({exc!r})", label) from exc
                if isinstance(exc, OSError) and not isinstance(exc, SanlockError):
                    raise _transport_error(exc, label) from exc
                raise

    async def _perform(self, step: _Step) -> bytes:
        if isinstance(step, _Send):
            await self.stream.send_all(step.data)
            return b""
        if isinstance(step, _Recv):
            buf = bytearray()
            while len(buf) < step.size:
                chunk = await self.stream.receive_some(step.size - len(buf))
                if not chunk:
                    raise SanlockError(
                        ResultCode.ENOTCONN, f"{step.what}: connection closed after {len(buf)} of {step.size} bytes"
                    )
                buf += chunk
            return bytes(buf)
        out = bytearray()
        while chunk := await self.stream.receive_some(65536):
            out += chunk
            if len(out) > step.limit:
                raise SanlockProtocolError(f"{step.what} exceed {step.limit} bytes")
        return bytes(out)


class AsyncRegistration:
    """The trio twin of :class:`Registration`: ``async with client.register() as reg``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._conn: _AsyncConnection | None = None
        self.pid = os.getpid()
        self._restricted = False

    async def open(self) -> AsyncRegistration:
        conn = await _AsyncConnection.open(self._client.path, self._client.timeout)
        try:
            await conn.run("register", _register())
        except BaseException:
            await conn.aclose()
            raise
        self._conn = conn
        return self

    async def __aenter__(self) -> AsyncRegistration:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()

    @property
    def broken(self) -> str | None:
        return self._conn.broken.reason if self._conn is not None else None

    async def _run(self, label: str, exchange: _Exchange[_T]) -> _T:
        if self._conn is None or self._restricted:
            exchange.close()
            why = "not open" if self._conn is None else "connection restricted with RESTRICT_ALL"
            raise SanlockError(ResultCode.EPERM, f"{label}: registration {why}", label)
        return await self._conn.run(label, exchange)

    async def acquire(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], **options: Unpack[AcquireOptions]
    ) -> AcquiredLease:
        return await self._run("acquire", _acquire(TARGET_SELF, lockspace, resource, disks, **options))

    async def release(self, lockspace: Name, resource: Name) -> None:
        await self._run("release", _release(TARGET_SELF, lockspace, resource))

    async def release_all(self) -> None:
        await self._run("release", _release_all(TARGET_SELF))

    async def release_orphans(self, lockspace: Name, resource: Name = b"") -> int:
        return await self._run("release", _release_orphans(TARGET_SELF, lockspace, resource))

    async def inquire(self) -> list[HeldLease]:
        return await self._run("inquire", _inquire(TARGET_SELF))

    async def convert(self, lockspace: Name, resource: Name, shared: bool, *, owner_nowait: bool = False) -> None:
        await self._run("convert", _convert(TARGET_SELF, lockspace, resource, shared, owner_nowait))

    async def killpath(self, path: str, args: Sequence[str] = (), *, pid_arg: bool = False) -> None:
        await self._run("killpath", _killpath(path, args, pid_arg))

    async def restrict(self, flags: int) -> None:
        await self._run("restrict", _restrict(flags))
        self._restricted = bool(flags & RESTRICT_ALL)


class AsyncEventChannel:
    """The trio twin of :class:`EventChannel`; :meth:`receive` waits for the next event."""

    def __init__(self, client: AsyncClient, name: bytes, conn: _AsyncConnection) -> None:
        self._client, self.name, self._conn = client, name, conn
        self._buffer = b""

    async def receive(self) -> Event:
        """Wait for the next event.  Safe to cancel: bytes already read are kept for the next call."""
        async with self._conn.lock:
            while len(self._buffer) < EVENT_CB_SIZE:
                chunk = await self._conn.stream.receive_some(4096)
                if not chunk:
                    raise SanlockError(ResultCode.ENOTCONN, "event connection closed by the daemon", "get_event")
                self._buffer += chunk
            raw, self._buffer = self._buffer[:EVENT_CB_SIZE], self._buffer[EVENT_CB_SIZE:]
        return _parse_events(raw)[0]

    async def __aenter__(self) -> AsyncEventChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        import trio

        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._conn.stream.send_all(_END_EVENT_MARK)
        await self._conn.aclose()
        await self._client._one_shot("end_event", _end_event(self.name))


class AsyncClient:
    """trio client of a sanlock daemon: the commands of :class:`Client`, awaited.

    ``timeout`` bounds each call as a whole (``trio.fail_after``).  A
    cancellation that interrupts a registration's exchange half way marks
    that registration broken (see the module docstring).
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, timeout: float | None = None) -> None:
        self.path = socket_path(run_dir)
        self.timeout = timeout

    async def _one_shot(self, label: str, exchange: _Exchange[_T]) -> _T:
        try:
            conn = await _AsyncConnection.open(self.path, self.timeout)
        except BaseException:
            exchange.close()
            raise
        try:
            return await conn.run(label, exchange)
        finally:
            await conn.aclose()

    def register(self) -> AsyncRegistration:
        """``async with client.register() as reg``: registered on entry, closed (leases released) on exit."""
        return AsyncRegistration(self)

    async def acquire(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], *, pid: int, **options: Unpack[AcquireOptions]
    ) -> AcquiredLease:
        return await self._one_shot("acquire", _acquire(pid, lockspace, resource, disks, **options))

    async def release(self, lockspace: Name, resource: Name, *, pid: int) -> None:
        await self._one_shot("release", _release(pid, lockspace, resource))

    async def release_all(self, *, pid: int) -> None:
        await self._one_shot("release", _release_all(pid))

    async def inquire(self, *, pid: int) -> list[HeldLease]:
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
        await self._one_shot("add_lockspace", _add_lockspace(name, host_id, path, offset, io_timeout, wait))

    async def inq_lockspace(
        self, name: Name, host_id: int, path: str | os.PathLike[str], offset: int = 0, *, wait: bool = False
    ) -> bool | None:
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
        await self._one_shot("rem_lockspace", _rem_lockspace(name, host_id, path, offset, wait, unused))

    async def get_lockspaces(self) -> list[LockspaceInfo]:
        return await self._one_shot("get_lockspaces", _get_lockspaces())

    async def get_hosts(self, name: Name, host_id: int = 0) -> list[HostInfo]:
        return await self._one_shot("get_hosts", _get_hosts(name, host_id))

    async def host_status(self, name: Name) -> list[StateRecord]:
        return await self._one_shot("host_status", _host_status(name))

    async def renewal(self, name: Name) -> tuple[int, list[StateRecord]]:
        return await self._one_shot("renewal", _renewal(name))

    async def set_config(self, name: Name, config: int) -> None:
        await self._one_shot("set_config", _set_config(name, config))

    async def request(
        self, lockspace: Name, resource: Name, disks: Sequence[DiskLike], force_mode: int, *, lver: int | None = None
    ) -> None:
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
        exchange = _read_resource_owners(lockspace, resource, disks, align, sector)
        return await self._one_shot("read_resource_owners", exchange)

    async def set_lvb(self, lockspace: Name, resource: Name, data: bytes) -> None:
        await self._one_shot("set_lvb", _set_lvb(lockspace, resource, data))

    async def get_lvb(self, lockspace: Name, resource: Name, size: int = 0) -> bytes:
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
        exchange = _write_resource(lockspace, resource, disks, num_hosts, clear, align, sector)
        await self._one_shot("write_resource", exchange)

    async def read_resource(
        self, path: str | os.PathLike[str], offset: int = 0, *, align: int | None = None, sector: int | None = None
    ) -> ResourceInfo:
        return await self._one_shot("read_resource", _read_resource(path, offset, align, sector))

    async def align(self, path: str | os.PathLike[str]) -> int:
        return await self._one_shot("align", _align(path))

    async def reg_event(self, name: Name) -> AsyncEventChannel:
        conn = await _AsyncConnection.open(self.path, self.timeout)
        try:
            await conn.run("reg_event", _reg_event(name))
        except BaseException:
            await conn.aclose()
            raise
        return AsyncEventChannel(self, _name(name), conn)

    async def set_event(
        self, name: Name, host_id: int, generation: int, event: int, data: int = 0, *, flags: int = 0
    ) -> None:
        await self._one_shot("set_event", _set_event(name, HostEvent(host_id, generation, event, data), flags))

    async def version(self) -> VersionInfo:
        return await self._one_shot("version", _version())

    async def status(self, level: int = 0) -> list[StatusRecord]:
        return await self._one_shot("status", _status(level))

    async def log_dump(self) -> str:
        return await self._one_shot("log_dump", _log_dump())

    async def metrics(self) -> str:
        """See :meth:`Client.metrics`."""
        return await self._one_shot("metrics", _metrics())

    async def shutdown(self, *, force: bool = False, wait: bool = False) -> None:
        await self._one_shot("shutdown", _shutdown(force, wait))
