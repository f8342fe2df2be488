"""The sans-I/O core of the client: every command as a generator of I/O steps.

Each command is an *exchange*: a generator that yields "send these bytes"
(:class:`_Send`), "read exactly n bytes" (:class:`_Recv`) or "read until
EOF" (:class:`_RecvUntilEOF`) steps, is sent back what was read, and returns
the parsed result.  :func:`_advance` is the one way a shell steps an
exchange: it marks the connection broken when a reply does not fit the
request (:class:`SanlockProtocolError`), and turns the generator's return
into :class:`_Finished`.  Replies are framed per command (wire spec §2.3),
never by trusting ``length`` blindly, and every size is bounded here.

Rules: no sockets, locks, clocks or threads; imports only the facts and the
wire format (``leased.constants``, ``errors``, ``schema``, ``protocol``) and
the result types.  A shell (:mod:`leased.client.blocking`,
:mod:`leased.client.trio_shell`, :mod:`leased.client.asyncio_shell`) owns
the lock and the socket and only drives these generators, so a command's
meaning is written once.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeAlias, TypeVar

from leased.client.results import (
    AcquiredLease,
    AcquireOptions,
    AlreadyHeld,
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
)
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
    INQ_WAIT,
    KILLPATH_PID,
    LOCKSPACE_SIZE,
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
    SM_CB_GET_EVENT,
    SM_MAGIC,
    STATE_SIZE,
    TARGET_SELF,
    WRITE_CLEAR,
    Cmd,
    Disk,
    Header,
    HealthNotice,
    Host,
    HostEvent,
    Killpath,
    Lockspace,
    Options,
    Resource,
    StateRecord,
    StateType,
    event_cb,
    to_unsigned,
)
from leased.text_forms import parse_state

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)

# Bounds on what a reply may make us buffer.  sanlock caps its own reply
# buffers at 1 MiB (get_lockspaces, get_hosts, log_dump); a status stream has
# one record per client slot (1024), lockspace and lease, each at most
# 80 + 4096 bytes plus a struct, so 64 MiB is far above any real daemon.
MAX_REPLY_PAYLOAD: Final = 4 * MiB
MAX_STREAM: Final = 64 * MiB
EVENT_CB_SIZE: Final = 80

_T = TypeVar("_T")


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


def _acquire_attempt(
    target: int, lockspace: Name, resource: Name, disks: Sequence[DiskLike], **options: Unpack[AcquireOptions]
) -> _Exchange[AcquiredLease]:
    """One attempt of an acquire with ``wait``: :func:`_acquire`, and an -EEXIST explained.

    sanlock answers -17 (EEXIST) both when another local process holds the
    lease (worth waiting for) and when ``target`` itself holds it (waiting
    would never end).  Only the daemon knows which: on -EEXIST this asks it
    with an INQUIRE for ``target`` on the same connection, under the same
    lock hold, and raises :class:`AlreadyHeld` if ``target`` holds the lease.
    An INQUIRE that fails leaves the -17 as it was (contention).
    """
    try:
        return (yield from _acquire(target, lockspace, resource, disks, **options))
    except SanlockError as exc:
        if exc.rc != ResultCode.EEXIST or isinstance(exc, SanlockProtocolError):
            raise
        refusal = exc
    try:
        held = yield from _inquire(target)
    except SanlockProtocolError:
        raise
    except SanlockError:
        raise refusal from None
    key = (_name(lockspace), _name(resource))
    if any((lease.lockspace, lease.resource) == key for lease in held):
        raise AlreadyHeld(f"acquire {key[0]!r}:{key[1]!r}: this process holds it already") from refusal
    raise refusal


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


def _watch_health() -> _Exchange[None]:
    """LEASED_HEALTH, then a VERSION header: leased answers only the first, sanlock only the second.

    sanlock 3.8 reads an unknown command's 32-byte header, ignores it and
    never answers, so a VERSION reply (rather than silence) is how the
    client tells it is not talking to leased, at once and without a timeout.
    leased turns the connection into a health channel at its answer and
    reads and drops the VERSION header.
    """
    request = _request(Cmd.LEASED_HEALTH)
    yield _Send(request.encode() + _request(Cmd.VERSION).encode())
    reply = Header.decode((yield _Recv(HEADER_SIZE, "health reply header")))
    if reply.magic == SM_MAGIC and reply.cmd == Cmd.VERSION:
        raise SanlockError(
            ResultCode.EOPNOTSUPP,
            "health notices are a leased extension: this daemon ignored LEASED_HEALTH and answered VERSION "
            "(sanlock does)",
            "health",
        )
    if reply.magic != SM_MAGIC or reply.cmd != Cmd.LEASED_HEALTH or reply.seq != request.seq:
        raise SanlockProtocolError(f"health reply cmd {reply.cmd} seq {reply.seq} magic 0x{reply.magic:08x}", "health")
    _check(reply, "health")


def _parse_health_notice(raw: bytes) -> HealthNotice:
    try:
        return HealthNotice.decode(raw)
    except LeaseError as exc:
        raise SanlockProtocolError(exc.detail, "health") from None


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
# Stepping an exchange: what every shell shares


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
