"""One handler per wire command, dispatched through :data:`HANDLERS`.

A handler takes a :class:`Command` (daemon state, the connection's client,
the framed request) and returns a :class:`Reply`: the bytes to send (none
for REGISTER and SHUTDOWN) and whether the connection closes afterwards.
Result codes, payload layouts and close rules are sanlock 3.8.5's (wire spec
§2.3, §5); deviations are deliberate and commented.

Rules every handler keeps:

* bad input is an error code in the reply and a log line, never an exception
  out of the handler and never a dropped lease;
* a registered-type command (ACQUIRE, RELEASE, INQUIRE, CONVERT, KILLPATH)
  acts on the client registered on this connection, or on the registered
  process named by ``data2``, and only if the requester may (same uid or
  root): a client touches only its own leases unless explicitly allowed;
* moving leases to a client is prepare-then-commit (:mod:`leased.resource`);
  the ownership transactions themselves (acquire, release, a closed
  client's leases) are :mod:`leased.transactions`', whose outcomes and
  :class:`~leased.errors.LeaseError` a handler turns into its reply and log
  line here.

What a command leaves running in the background (joining and leaving a
lockspace, fencing a failed one, examining other hosts' requests and
delivering their events) is :mod:`leased.lifecycle`'s policy: a handler
checks the request, calls in there with the seams and its spawner, and
answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from leased import delta_lease, paxos_lease
from leased.clock import DEFAULT_CLOCK, disk_timestamp
from leased.constants import MBLOCK_SHARED, MiB
from leased.errors import LeaseError, ResultCode, code_name
from leased.fencing import Fencer, ProcessFencer
from leased.geometry import Geometry, geometry_from_leader, request_geometry
from leased.host_status import HostState
from leased.lifecycle import begin_removal, examine_held, forget_lockspace, new_lockspace
from leased.lockspace import JoinedLockspace, LockspaceState, lockspace_key
from leased.metrics import render
from leased.ondisk import (
    Leader,
    decode_host_sector,
    encode_name,
    names_equal,
    verify_delta_leader,
    verify_paxos_leader,
)
from leased.protocol import (
    ACQUIRE_LVB,
    ACQUIRE_ORPHAN,
    ACQUIRE_ORPHAN_ONLY,
    ACQUIRE_OWNER_NOWAIT,
    ADD_ASYNC,
    HEADER_SIZE,
    INQ_WAIT,
    LOCKSPACE_SIZE,
    LSF_ADD,
    LSF_REM,
    REL_ALL,
    REL_ORPHAN,
    REL_RENAME,
    REM_ASYNC,
    REM_UNUSED,
    REQUEST_NEXT_LVER,
    RES_ALIGN1M,
    RES_ALIGN2M,
    RES_ALIGN4M,
    RES_ALIGN8M,
    RES_SECTOR4K,
    RES_SECTOR512,
    RES_SHARED,
    RESOURCE_SIZE,
    SETEV_ALL_HOSTS,
    SETEV_CLEAR_EVENT,
    SETEV_CLEAR_HOSTID,
    SETEV_CUR_GENERATION,
    SETEV_REPLACE_EVENT,
    SM_PROTO,
    TARGET_SELF,
    VERSION_NUM,
    WRITE_CLEAR,
    Cmd,
    Disk,
    Header,
    Host,
    HostEvent,
    Killpath,
    Lockspace,
    Options,
    Resource,
    StateRecord,
    StateType,
    format_resource,
    split_resources,
)
from leased.resource import Token, release_unless_shared_on
from leased.state import ClientState, DaemonState
from leased.status import metrics_families, status_records
from leased.storage import FileStorage, Storage
from leased.tasks import Spawner
from leased.transactions import CommitRefused, acquire_leases, open_lease_storage, release_token, resource_area

log = logging.getLogger(__name__)


@dataclass
class Reply:
    data: bytes = b""
    close: bool = False
    event_channel: JoinedLockspace | None = None
    """REG_EVENT: after the reply the connection becomes this lockspace's event channel."""


@dataclass
class Command:
    state: DaemonState
    client: ClientState
    header: Header
    body: bytes
    spawn: Spawner
    """Starts the background tasks a command leaves running (join, fencing, removal), each contained."""
    open_storage: Callable[[str], Storage] = field(default=FileStorage)
    fencer: Fencer = field(default_factory=ProcessFencer)

    def reply(self, result: int, *, data2: int = 0, payload: bytes = b"", close: bool = False) -> Reply:
        header = self.header.reply(result, data2=data2, payload_length=len(payload))
        return Reply(header.encode() + payload, close)

    @property
    def name(self) -> str:
        try:
            return Cmd(self.header.cmd).name.lower()
        except ValueError:
            return f"cmd{self.header.cmd}"


Handler = Callable[[Command], Awaitable[Reply]]


def _ls_name(name: bytes) -> str:
    return name.decode(errors="replace")


def _fail(cmd: Command, rc: int, detail: str, *, data2: int = 0, payload: bytes = b"", close: bool = False) -> Reply:
    log.error("%s ci %d pid %d: %s (%d %s)", cmd.name, cmd.client.ci, cmd.client.pid, detail, rc, code_name(rc))
    return cmd.reply(rc, data2=data2, payload=payload, close=close)


# An acquire refused because someone else holds (or is taking) the lease: the
# normal life of a lock, not a fault.  With quiet_fail (-Q 1, the default) it
# is logged at debug so that busy clusters do not flood the log at error.
CONTENTION_CODES = frozenset(
    {
        ResultCode.EEXIST,
        ResultCode.EBUSY,
        ResultCode.EAGAIN,
        ResultCode.ACQUIRE_IDLIVE,
        ResultCode.ACQUIRE_OWNED,
        ResultCode.ACQUIRE_OTHER,
        ResultCode.ACQUIRE_SHRETRY,
        ResultCode.ACQUIRE_OWNED_RETRY,
    }
)


def _contention(cmd: Command, rc: int, detail: str) -> None:
    level = logging.DEBUG if cmd.state.config.quiet_fail else logging.ERROR
    log.log(level, "%s ci %d pid %d: %s (%d %s)", cmd.name, cmd.client.ci, cmd.client.pid, detail, rc, code_name(rc))


# ---------------------------------------------------------------------------
# Target resolution for registered-type commands


class Refused(Exception):
    def __init__(self, rc: int, detail: str) -> None:
        super().__init__(rc, detail)
        self.rc, self.detail = rc, detail


def target_client(cmd: Command) -> ClientState:
    """The registered client a registered-type command acts on (wire spec §7.3)."""
    state, client = cmd.state, cmd.client
    if cmd.header.data2 == TARGET_SELF:
        if not client.registered or client.dead:
            raise Refused(ResultCode.EBUSY, "no pid: connection is not registered")
        target = client
    else:
        pid = cmd.header.target_pid
        found = state.registered_client(pid) if pid > 0 else None
        if found is None:
            raise Refused(ResultCode.ESRCH, f"target pid {pid} not found")
        target = found
        if client.uid not in (0, target.uid) and not state.config.allow_cross_uid:
            raise Refused(ResultCode.EPERM, f"uid {client.uid} may not act for pid {pid} of uid {target.uid}")
    if target.cmd_active and target is not client:
        raise Refused(ResultCode.EBUSY, f"target pid {target.pid} busy with cmd {target.cmd_active}")
    return target


# ---------------------------------------------------------------------------
# Geometry helpers


def _flags_of(geometry: Geometry) -> int:
    align = {1: RES_ALIGN1M, 2: RES_ALIGN2M, 4: RES_ALIGN4M, 8: RES_ALIGN8M}[geometry.align_size // MiB]
    return align | (RES_SECTOR512 if geometry.sector_size == 512 else RES_SECTOR4K)


async def _probe_geometry(storage: Storage, offset: int, timeout: int) -> tuple[Geometry, Leader]:
    leader = Leader.decode(await storage.read(offset, 4096, timeout))
    return geometry_from_leader(leader.sector_size, leader.flags), leader


def _open(cmd: Command, path: str, missing_rc: int = ResultCode.ENODEV) -> Storage:
    return open_lease_storage(cmd.open_storage, path, missing_rc)


# ---------------------------------------------------------------------------
# Lockspaces


def _matches(lockspace: JoinedLockspace, ls: Lockspace) -> bool:
    key = lockspace.key
    return (
        names_equal(encode_name(key.name), encode_name(ls.name))
        and key.path == ls.disk.path
        and key.offset == ls.disk.offset
        and (ls.host_id == 0 or key.host_id == ls.host_id)
    )


async def cmd_add_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    state = cmd.state
    if not ls.name or not ls.host_id or not ls.disk.path:
        return _fail(cmd, ResultCode.EINVAL, "empty name, host_id 0 or empty path")
    for existing in state.lockspaces:
        same = _matches(existing, ls) and existing.host_id == ls.host_id
        if same and existing.state is LockspaceState.JOINED:
            return cmd.reply(ResultCode.EEXIST)
        if same and existing.state is LockspaceState.ADDING:
            return cmd.reply(ResultCode.EINPROGRESS)
        if same and existing.state is LockspaceState.REMOVING:
            return cmd.reply(ResultCode.EAGAIN)
        if existing.state is LockspaceState.FAILED:
            continue
        if existing.name == ls.name or (existing.key.path, existing.key.offset) == (ls.disk.path, ls.disk.offset):
            return _fail(cmd, ResultCode.EINVAL, f"lockspace {_ls_name(ls.name)} conflicts with a joined one")
    io_timeout = cmd.header.data or state.config.io_timeout
    if io_timeout > 255:
        return _fail(cmd, ResultCode.EINVAL, f"io_timeout {io_timeout} above 255 (stored in one byte on disk)")
    joined = new_lockspace(
        state,
        lockspace_key(ls.name, ls.host_id, ls.disk.path, ls.disk.offset),
        io_timeout,
        open_storage=cmd.open_storage,
        spawn=cmd.spawn,
        fencer=cmd.fencer,
    )
    state.lockspaces = [x for x in state.lockspaces if not (x.state is LockspaceState.FAILED and _matches(x, ls))]
    state.lockspaces.append(joined)
    log.info(
        "add_lockspace %s:%d:%s:%d io_timeout %d",
        _ls_name(ls.name),
        ls.host_id,
        ls.disk.path,
        ls.disk.offset,
        io_timeout,
    )
    cmd.spawn(f"lockspace {_ls_name(ls.name)}", joined.run)
    if cmd.header.cmd_flags & ADD_ASYNC:
        return cmd.reply(0)
    await joined.joined.wait()
    if joined.state is not LockspaceState.JOINED:
        forget_lockspace(state, joined)
        return _fail(cmd, joined.add_result or ResultCode.ERROR, f"add_lockspace {_ls_name(ls.name)} failed")
    return cmd.reply(0)


def _inq_result(state: DaemonState, ls: Lockspace) -> int:
    for existing in state.lockspaces:
        if _matches(existing, ls):
            if existing.state is LockspaceState.JOINED:
                return 0
            if existing.state in (LockspaceState.ADDING, LockspaceState.REMOVING):
                return ResultCode.EINPROGRESS
    return ResultCode.ENOENT


async def cmd_inq_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    result = _inq_result(cmd.state, ls)
    while result == ResultCode.EINPROGRESS and cmd.header.cmd_flags & INQ_WAIT:
        await trio.sleep(1)
        result = _inq_result(cmd.state, ls)
    return cmd.reply(result)


async def cmd_rem_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    state = cmd.state
    target = next((x for x in state.lockspaces if _matches(x, ls)), None)
    if target is None:
        return cmd.reply(ResultCode.ENOENT)
    if target.state is LockspaceState.REMOVING:
        return cmd.reply(ResultCode.EINPROGRESS)
    tokens = state.leases.in_lockspace(target)
    if cmd.header.cmd_flags & REM_UNUSED and tokens:
        return cmd.reply(ResultCode.EBUSY)
    begin_removal(state, target, cmd.spawn, cmd.fencer)
    if not cmd.header.cmd_flags & REM_ASYNC:
        await target.removed.wait()
    return cmd.reply(0)


async def cmd_get_lockspaces(cmd: Command) -> Reply:
    order = [(LockspaceState.JOINED, 0), (LockspaceState.REMOVING, LSF_REM), (LockspaceState.ADDING, LSF_ADD)]
    entries = [
        Lockspace(x.name, x.host_id, flags, Disk(x.key.path, x.key.offset)).encode()
        for wanted, flags in order
        for x in cmd.state.lockspaces
        if x.state is wanted
    ]
    return cmd.reply(0, data2=len(entries), payload=b"".join(entries), close=True)


async def cmd_get_hosts(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None or lockspace.table is None:
        return cmd.reply(ResultCode.ENOENT, close=True)
    table, now = lockspace.table, lockspace.clock.now()
    hosts = []
    wanted = [ls.host_id] if ls.host_id else sorted(table.hosts)
    for host_id in wanted:
        record = table.hosts.get(host_id)
        if record is None:
            hosts.append(Host(host_id, flags=HostState.FREE))
            continue
        if not ls.host_id and record.timestamp == 0:
            continue
        state_value = table.state(host_id, now)
        hosts.append(Host(host_id, record.owner_generation, record.timestamp, record.io_timeout, state_value))
    payload = b"".join(h.encode() for h in hosts)
    return cmd.reply(0, data2=len(hosts), payload=payload, close=True)


async def cmd_host_status(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None or lockspace.table is None:
        return cmd.reply(ResultCode.ENOSPC, close=True)
    records = []
    for host_id, record in sorted(lockspace.table.hosts.items()):
        if not (record.last_live or record.owner_id):
            continue
        owner_name = record.owner_name.split(b"\0", 1)[0].decode(errors="replace")
        text = (
            f"last_check={int(record.last_check)} last_live={int(record.last_live)} last_req=0 "
            f"owner_id={record.owner_id} owner_generation={record.owner_generation} timestamp={record.timestamp} "
            f"io_timeout={record.io_timeout} owner_name={owner_name}"
        )
        records.append(StateRecord(StateType.HOST, host_id, record.timestamp, b"", text).encode())
    header = cmd.header.reply(0, data2=cmd.header.data2)
    return Reply(header.encode() + b"".join(records), close=True)


async def cmd_renewal(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name, states=(LockspaceState.JOINED, LockspaceState.FAILED))
    if lockspace is None:
        return cmd.reply(ResultCode.ENOSPC, close=True)
    if not lockspace.history:
        return cmd.reply(0, data2=cmd.header.data2, close=True)
    records = [
        StateRecord(
            StateType.RENEWAL,
            0,
            entry.timestamp,
            b"",
            f"timestamp={entry.timestamp} read_ms={entry.read_ms} write_ms={entry.write_ms} "
            f"next_timeouts={entry.next_timeouts} next_errors={entry.next_errors}",
        ).encode()
        for entry in lockspace.history
    ]
    header = cmd.header.reply(0, data2=lockspace.io_timeout)
    return Reply(header.encode() + b"".join(records), close=True)


# ---------------------------------------------------------------------------
# Resource leases


async def cmd_acquire(cmd: Command) -> Reply:
    state, header = cmd.state, cmd.header
    resources, used = split_resources(cmd.body, header.data, with_disks=True)
    options = Options.decode(cmd.body[used:])
    try:
        target = target_client(cmd)
    except Refused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    keys = [(r.lockspace, r.name) for r in resources]
    adopt: dict[tuple[bytes, bytes], Token] = {}
    for resource in resources:
        if len(resource.disks) > 1:
            return _fail(cmd, ResultCode.EINVAL, "multi-disk leases are not supported")
        lockspace = state.find_lockspace(resource.lockspace)
        if lockspace is None or not lockspace.usable:
            return _fail(cmd, ResultCode.ENOSPC, f"lockspace {_ls_name(resource.lockspace)} not joined")
        key = (resource.lockspace, resource.name)
        orphan = state.leases.orphan(key)
        if orphan is not None and header.cmd_flags & (ACQUIRE_ORPHAN | ACQUIRE_ORPHAN_ONLY):
            if orphan.shared != resource.shared:
                return _fail(cmd, ResultCode.EUCLEAN, f"orphan {_ls_name(resource.name)} is held in the other mode")
            adopt[key] = orphan
            continue
        if orphan is None and header.cmd_flags & ACQUIRE_ORPHAN_ONLY:
            return _fail(cmd, ResultCode.ENOENT, f"no orphan {_ls_name(resource.name)} to adopt")
        conflict = state.leases.conflict(key, resource.shared)
        if conflict:
            _contention(cmd, conflict, f"{_ls_name(resource.name)} is busy here (local conflict)")
            return cmd.reply(conflict)
    if len(set(keys)) != len(keys):
        return _fail(cmd, ResultCode.EINVAL, "the same resource twice in one acquire")

    # prepare: reserve (no await since the conflict checks above), take the disk turn, do all disk work
    target.cmd_active = Cmd.ACQUIRE
    generation = target.generation
    state.leases.reserve(keys)
    try:
        async with state.leases.disk_turn(keys):
            await acquire_leases(
                state,
                target,
                resources,
                adopt,
                generation=generation,
                open_storage=cmd.open_storage,
                owner_name=options.owner_name,
                owner_nowait=bool(header.cmd_flags & ACQUIRE_OWNER_NOWAIT),
                lvb=bool(header.cmd_flags & ACQUIRE_LVB),
            )
    except CommitRefused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    except MemoryError as exc:
        return _fail(cmd, ResultCode.ENOMEM, str(exc) or type(exc).__name__)
    except LeaseError as exc:
        if exc.rc in CONTENTION_CODES:
            _contention(cmd, exc.rc, exc.detail)
            return cmd.reply(exc.rc)
        return _fail(cmd, exc.rc, str(exc))
    finally:
        state.leases.unreserve(keys)
        target.cmd_active = 0
        target.cmd_last = Cmd.ACQUIRE
    return cmd.reply(0)


async def cmd_release(cmd: Command) -> Reply:
    state, header = cmd.state, cmd.header
    try:
        target = target_client(cmd)
    except Refused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    flags = header.cmd_flags
    if flags & REL_ORPHAN:
        if len(cmd.body) < RESOURCE_SIZE:
            # REL_ALL framed the request without a body (length 32): no resource names the orphans.
            return _fail(cmd, ResultCode.EINVAL, "release of orphans names no resource")
        (which,), _ = split_resources(cmd.body, 1, with_disks=False)
        orphans = state.leases.orphans(which.lockspace, which.name)
        for orphan in orphans:
            async with state.leases.disk_turn([orphan.key]):
                if orphan in state.leases.held.get(orphan.key, []):
                    state.leases.detach(orphan)
                    await release_unless_shared_on(state.leases, orphan)
        return cmd.reply(len(orphans))
    if flags & REL_ALL:
        chosen = list(target.tokens)
        rename = None
        missing: list[bytes] = []
    else:
        count = 2 if flags & REL_RENAME else header.data
        structs, _ = split_resources(cmd.body, count, with_disks=False)
        rename = structs[1].name if flags & REL_RENAME else None
        wanted = structs[:1] if flags & REL_RENAME else structs
        chosen, missing = [], []
        for resource in wanted:
            token = next((t for t in target.tokens if t.key == (resource.lockspace, resource.name)), None)
            if token is None:
                missing.append(resource.name)
            elif token not in chosen:
                chosen.append(token)
    result = 0
    for name in missing:
        log.error("cmd_release ci %d pid %d no resource %s", target.ci, target.pid, _ls_name(name))
        result = ResultCode.EPERM
    for token in chosen:
        rc = await release_token(state, target, token, rename=rename)
        result = result or rc
    return cmd.reply(result)


async def cmd_inquire(cmd: Command) -> Reply:
    try:
        target = target_client(cmd)
    except Refused as exc:
        if exc.rc == ResultCode.ESRCH:
            return cmd.reply(exc.rc)  # a probe for "does this pid exist": not an error worth logging
        return _fail(cmd, exc.rc, exc.detail)
    if not target.tokens:
        return cmd.reply(0)
    # Paths are escaped (a space as "\\ "), which libsanlock's parser reads back; sanlock 3.8.5
    # refuses such leases with -ELIBSCN instead.
    text = " ".join(format_resource(t.resource, None if t.shared else t.lver) for t in target.tokens)
    payload = text.encode(errors="surrogateescape") + b"\0"
    return cmd.reply(0, data2=len(target.tokens), payload=payload)


async def cmd_convert(cmd: Command) -> Reply:
    state = cmd.state
    try:
        target = target_client(cmd)
    except Refused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    resource = Resource.decode(cmd.body)
    token = next((t for t in target.tokens if t.key == (resource.lockspace, resource.name)), None)
    if token is None:
        return _fail(cmd, ResultCode.ENOENT, f"convert: {_ls_name(resource.name)} not held")
    to_shared = resource.shared
    if token.shared == to_shared:
        return cmd.reply(ResultCode.EALREADY)
    target.cmd_active = Cmd.CONVERT
    try:
        async with state.leases.disk_turn([token.key]):
            # Checked inside the turn: a local shared acquire waiting for it has already reserved the key.
            others = any(t is not token for t in state.leases.held.get(token.key, []))
            if not to_shared and (others or token.key in state.leases.acquiring):
                return cmd.reply(ResultCode.EAGAIN)  # another local client holds it shared, or is getting it
            await paxos_lease.convert(
                token.lease, to_shared=to_shared, view=token.lockspace.view(), clock=token.lockspace.clock
            )
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    finally:
        target.cmd_active = 0
    flags = (token.resource.flags | RES_SHARED) if to_shared else (token.resource.flags & ~RES_SHARED)
    token.resource = Resource(
        token.resource.lockspace, token.resource.name, flags=flags, num_disks=1, disks=token.resource.disks
    )
    return cmd.reply(0)


def _held_token(state: DaemonState, resource: Resource) -> Token | None:
    return state.leases.find_held((resource.lockspace, resource.name))


async def cmd_set_lvb(cmd: Command) -> Reply:
    resource = Resource.decode(cmd.body)
    data = cmd.body[RESOURCE_SIZE:]
    token = _held_token(cmd.state, resource)
    if token is None:
        return _fail(cmd, ResultCode.ENOENT, f"set_lvb: {_ls_name(resource.name)} not held here")
    if not token.lvb_enabled:
        return _fail(cmd, ResultCode.EINVAL, "set_lvb: lease acquired without ACQUIRE_LVB")
    if len(data) > token.lease.area.sector_size:
        return _fail(cmd, ResultCode.E2BIG, f"set_lvb: {len(data)} bytes exceed the sector")
    token.lease.lvb = data.ljust(token.lease.area.sector_size, b"\0")
    token.lease.lvb_dirty = True
    return cmd.reply(0)


async def cmd_get_lvb(cmd: Command) -> Reply:
    resource = Resource.decode(cmd.body)
    token = _held_token(cmd.state, resource)
    if token is None:
        return _fail(cmd, ResultCode.ENOENT, f"get_lvb: {_ls_name(resource.name)} not held here")
    if not token.lvb_enabled or token.lease.lvb is None:
        return _fail(cmd, ResultCode.EINVAL, "get_lvb: lease acquired without ACQUIRE_LVB")
    wanted = cmd.header.data2 or token.lease.area.sector_size
    return cmd.reply(0, payload=token.lease.lvb[:wanted])


async def cmd_request(cmd: Command) -> Reply:
    """Ask the holder of a lease to give it up (wire spec §5.13, on-disk spec §7.10)."""
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    lockspace = cmd.state.find_lockspace(resource.lockspace)
    if lockspace is None or not lockspace.usable or lockspace.lease is None:
        return _fail(cmd, ResultCode.ENOSPC, f"request: lockspace {_ls_name(resource.lockspace)} not joined")
    try:
        storage = _open(cmd, resource.disks[0].path, ResultCode.ENOENT)
        try:
            area = resource_area(storage, resource, lockspace)
            owner = await paxos_lease.write_request(
                area,
                resource.lver,
                cmd.header.data,
                lockspace.io_timeout,
                next_lver=bool(cmd.header.cmd_flags & REQUEST_NEXT_LVER),
            )
        finally:
            storage.close()
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    if owner:
        lockspace.flag_host(owner)
    return cmd.reply(0)


# ---------------------------------------------------------------------------
# Direct storage commands (no lockspace needed)


MAX_LEADER_IO_TIMEOUT = 0xFFFF
"""A delta lease leader stores io_timeout in 16 bits; WRITE_LOCKSPACE's data2 is 32 (sanlock truncates it)."""


async def cmd_write_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    try:
        geometry = request_geometry(ls.flags) or Geometry(512, MiB)
        storage = _open(cmd, ls.disk.path)
        try:
            io_timeout = cmd.header.data2 or cmd.state.config.io_timeout
            if io_timeout > MAX_LEADER_IO_TIMEOUT:
                raise LeaseError(ResultCode.EINVAL, f"io_timeout {io_timeout} does not fit the leader's 16-bit field")
            await delta_lease.init_lockspace(storage, ls.disk.offset, ls.name, geometry, io_timeout)
        finally:
            storage.close()
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    return cmd.reply(0)


async def cmd_read_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    result, io_timeout, out = 0, 0, ls
    try:
        storage = _open(cmd, ls.disk.path)
        try:
            geometry = request_geometry(ls.flags)
            if geometry is None:
                geometry, _ = await _probe_geometry(storage, ls.disk.offset, cmd.state.config.io_timeout)
            host_id = ls.host_id or 1
            raw = await storage.read(ls.disk.offset + (host_id - 1) * geometry.sector_size, geometry.sector_size, 10)
            leader = Leader.decode(raw)
            name = encode_name(ls.name) if ls.name else leader.space_name
            verify_delta_leader(leader, name, f"{ls.disk.path}:{ls.disk.offset}")
            io_timeout = leader.io_timeout
            out = Lockspace(leader.space_name.split(b"\0", 1)[0], host_id, _flags_of(geometry), ls.disk)
        finally:
            storage.close()
    except LeaseError as exc:
        result = exc.rc
        log.error("read_lockspace %s:%d: %s", ls.disk.path, ls.disk.offset, exc)
    return cmd.reply(result, data2=io_timeout, payload=out.encode())


async def cmd_write_resource(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    try:
        geometry = request_geometry(resource.flags) or Geometry(512, MiB)
        storage = _open(cmd, resource.disks[0].path, ResultCode.ENOENT)
        try:
            await paxos_lease.init_resource(
                storage,
                resource.disks[0].offset,
                resource.lockspace,
                resource.name,
                geometry,
                num_hosts=cmd.header.data,  # sanlock uses data (max_hosts) as num_hosts; data2 is ignored
                clear=bool(cmd.header.cmd_flags & WRITE_CLEAR),
                now=disk_timestamp(DEFAULT_CLOCK),
            )
        finally:
            storage.close()
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    return cmd.reply(0)


async def _read_resource_leader(
    cmd: Command, resource: Resource, *, geometry_first: bool
) -> tuple[Leader, Geometry, Storage]:
    """Read and verify a resource leader for READ_RESOURCE(_OWNERS).

    ``geometry_first``: READ_RESOURCE_OWNERS compares the caller's ALIGN/SECTOR
    flags with the disk before anything else (-EINVAL, also for a blank area),
    READ_RESOURCE reports the leader's problem (-223 for a blank area), as
    sanlock 3.8.5 does.
    """
    storage = _open(cmd, resource.disks[0].path, ResultCode.ENOENT)
    try:
        wanted = request_geometry(resource.flags)
        leader = Leader.decode(await storage.read(resource.disks[0].offset, 4096, cmd.state.config.io_timeout))
        try:
            probed: Geometry | None = geometry_from_leader(leader.sector_size, leader.flags)
        except LeaseError:
            probed = None
        if geometry_first and wanted is not None and wanted != probed:
            raise LeaseError(ResultCode.EINVAL, f"requested geometry {wanted} differs from on-disk {probed}")
        space = encode_name(resource.lockspace) if resource.lockspace else leader.space_name
        name = encode_name(resource.name) if resource.name else leader.resource_name
        verify_paxos_leader(leader, space, name, 0, f"{resource.disks[0].path}:{resource.disks[0].offset}")
        if probed is None:
            raise LeaseError(ResultCode.LEADER_SECTORSIZE, f"bad sector size {leader.sector_size} on disk")
        return leader, probed, storage
    except BaseException:
        storage.close()
        raise


async def cmd_read_resource(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    out = Resource(resource.lockspace, resource.name, flags=resource.flags)
    try:
        leader, geometry, storage = await _read_resource_leader(cmd, resource, geometry_first=False)
        storage.close()
        out = Resource(
            leader.space_name.split(b"\0", 1)[0],
            leader.resource_name.split(b"\0", 1)[0],
            lver=leader.lver,
            flags=_flags_of(geometry),
        )
    except LeaseError as exc:
        log.error("read_resource: %s", exc)
        return cmd.reply(exc.rc, payload=out.encode(with_disks=False))
    return cmd.reply(0, payload=out.encode(with_disks=False))


async def cmd_read_resource_owners(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    out = Resource(resource.lockspace, resource.name, flags=resource.flags)
    hosts: list[Host] = []
    try:
        leader, geometry, storage = await _read_resource_leader(cmd, resource, geometry_first=True)
        try:
            data = await storage.read(resource.disks[0].offset, geometry.align_size, cmd.state.config.io_timeout)
        finally:
            storage.close()
        flags = resource.flags or _flags_of(geometry)
        if leader.timestamp:
            hosts.append(Host(leader.owner_id, leader.owner_generation, leader.timestamp))
        for slot in range(min(leader.num_hosts, geometry.sectors - 2)):
            _, mode = decode_host_sector(data, (2 + slot) * geometry.sector_size)
            if mode.flags & MBLOCK_SHARED:
                flags |= RES_SHARED
                hosts.append(Host(slot + 1, mode.generation, 0))
        out = Resource(out.lockspace, out.name, lver=leader.lver, flags=flags)
    except LeaseError as exc:
        log.error("read_resource_owners: %s", exc)
        return cmd.reply(exc.rc, payload=out.encode(with_disks=False))
    payload = out.encode(with_disks=False) + b"".join(h.encode() for h in hosts)
    return cmd.reply(0, data2=len(hosts), payload=payload)


# ---------------------------------------------------------------------------
# Daemon-level commands


async def cmd_register(cmd: Command) -> Reply:
    # Identity (pid/uid) was taken from SO_PEERCRED by the connection; no reply, ever.
    client = cmd.client
    if client.pid <= 0:
        log.error("register ci %d: no peer credentials", client.ci)
        return Reply(close=True)
    client.registered = True
    client.name = str(client.pid).encode()
    log.debug("cmd_register ci %d pid %d", client.ci, client.pid)
    return Reply()


async def cmd_version(cmd: Command) -> Reply:
    header = Header(Cmd.VERSION, 0, HEADER_SIZE, 0, 0, VERSION_NUM, version=SM_PROTO)
    return Reply(header.encode())


async def cmd_restrict(cmd: Command) -> Reply:
    cmd.client.restrict = cmd.header.cmd_flags
    return cmd.reply(0)


async def cmd_killpath(cmd: Command) -> Reply:
    try:
        target = target_client(cmd)
    except Refused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    target.killpath = Killpath.decode(cmd.body)
    target.killpath_flags = cmd.header.cmd_flags
    return cmd.reply(0)


async def cmd_log_dump(cmd: Command) -> Reply:
    text = cmd.state.log_ring.dump() if cmd.state.log_ring else b""
    header = cmd.header.reply(len(text), data2=cmd.header.data2)
    header = Header(header.cmd, header.cmd_flags, cmd.header.length, header.seq, len(text), cmd.header.data2)
    return Reply(header.encode() + text, close=True)


async def cmd_shutdown(cmd: Command) -> Reply:
    force = cmd.header.data
    if cmd.state.lockspaces and not force:
        log.debug("ignore shutdown, lockspace exists")
        return Reply(close=True)
    cmd.state.shutting_down = True
    return Reply(close=True)


async def cmd_shutdown_wait(cmd: Command) -> Reply:
    if cmd.state.lockspaces and not cmd.header.data:
        return cmd.reply(ResultCode.EBUSY)
    cmd.state.shutting_down = True
    return Reply(Header(0, 0, HEADER_SIZE, 0, 0, 0, magic=cmd.header.magic, version=SM_PROTO).encode(), close=True)


MAX_EVENT_CHANNELS = 32


async def cmd_reg_event(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    if not ls.name:
        return _fail(cmd, ResultCode.EINVAL, "reg_event: empty lockspace name")
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None:
        return cmd.reply(ResultCode.ENOENT)
    for channel in lockspace.event_channels:
        channel.poll()  # a channel whose peer closed ends here, even before its task has run
    lockspace.event_channels = [ch for ch in lockspace.event_channels if not ch.ended.is_set()]
    if len(lockspace.event_channels) >= MAX_EVENT_CHANNELS:
        return _fail(cmd, ResultCode.ENOCSI, "reg_event: all event channels in use")
    return Reply(cmd.reply(0).data, event_channel=lockspace)


async def cmd_end_event(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    if not ls.name:
        return cmd.reply(ResultCode.EINVAL, close=True)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None:
        return cmd.reply(ResultCode.ENOENT, close=True)
    for channel in lockspace.event_channels:
        if channel.wants_end():
            channel.ended.set()
    lockspace.event_channels = [ch for ch in lockspace.event_channels if not ch.ended.is_set()]
    return cmd.reply(0, close=True)


async def cmd_set_event(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    event = HostEvent.decode(cmd.body[LOCKSPACE_SIZE:])
    flags = cmd.header.cmd_flags
    if not ls.name:
        return _fail(cmd, ResultCode.EINVAL, "set_event: empty lockspace name")
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None or lockspace.lease is None or lockspace.table is None:
        return cmd.reply(ResultCode.ENOENT)
    all_hosts = bool(flags & SETEV_ALL_HOSTS)
    max_hosts = lockspace.lease.area.geometry.max_hosts
    if not all_hosts and not 1 <= event.host_id <= max_hosts:
        return _fail(cmd, ResultCode.EINVAL, f"set_event: host_id {event.host_id} not in 1..{max_hosts}")
    lease, now = lockspace.lease, lockspace.clock.now()
    keep = lockspace.set_bitmap_seconds or 6 * lockspace.io_timeout
    if flags & SETEV_CLEAR_HOSTID:
        lockspace.request_bits.pop(event.host_id, None)
    if flags & SETEV_CLEAR_EVENT:
        lease.event = (0, 0, 0)
        return cmd.reply(0)
    if flags & SETEV_CLEAR_HOSTID:
        return cmd.reply(0)
    pending = lease.event != (0, 0, 0) and now - lockspace.event_set_time <= keep
    generation = event.generation
    if flags & SETEV_CUR_GENERATION and generation == 0 and not all_hosts:
        record = lockspace.table.hosts.get(event.host_id)
        generation = record.owner_generation if record else 0
    triple = (generation, event.event, event.data)
    if pending and lease.event != triple and not flags & SETEV_REPLACE_EVENT:
        return cmd.reply(ResultCode.EBUSY)
    lease.event = triple
    lockspace.event_set_time = now
    targets = (
        [h for h, r in lockspace.table.hosts.items() if r.timestamp and h != lockspace.host_id]
        if all_hosts
        else [event.host_id]
    )
    for host_id in targets:
        lockspace.flag_host(host_id)
    return cmd.reply(0)


async def cmd_set_config(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name, states=(LockspaceState.JOINED, LockspaceState.FAILED))
    if lockspace is None:
        return cmd.reply(ResultCode.ENOENT, close=True)
    value = cmd.header.data
    if value not in (1, 2, 4, 8):
        return cmd.reply(ResultCode.EINVAL, close=True)
    if value == 1 and lockspace.state is LockspaceState.FAILED:
        return cmd.reply(ResultCode.ENOSPC, close=True)
    lockspace.config_flags = value
    return cmd.reply(0, close=True)


async def cmd_examine(cmd: Command) -> Reply:
    """EXAMINE_LOCKSPACE/RESOURCE: re-read the request records of matching held leases now."""
    if cmd.header.cmd == Cmd.EXAMINE_LOCKSPACE:
        name, resource_name = Lockspace.decode(cmd.body).name, None
    else:
        resource = Resource.decode(cmd.body)
        name, resource_name = resource.lockspace, resource.name
    await examine_held(cmd.state, name, resource_name, cmd.fencer)
    return cmd.reply(0)


async def cmd_unsupported(cmd: Command) -> Reply:
    return _fail(cmd, ResultCode.EOPNOTSUPP, "command not supported by leased yet")


# ---------------------------------------------------------------------------
# STATUS and LEASED_METRICS (leased extension): what they report is leased.status's


async def cmd_status(cmd: Command) -> Reply:
    records = status_records(cmd.state, cmd.header.data, DEFAULT_CLOCK.now())
    header = cmd.header.reply(0, data2=cmd.header.data2)
    return Reply(header.encode() + b"".join(records), close=True)


async def cmd_metrics(cmd: Command) -> Reply:
    text = render(metrics_families(cmd.state, DEFAULT_CLOCK.now())).encode(errors="replace")
    return cmd.reply(0, payload=text, close=True)


HANDLERS: dict[int, Handler] = {
    Cmd.REGISTER: cmd_register,
    Cmd.ADD_LOCKSPACE: cmd_add_lockspace,
    Cmd.REM_LOCKSPACE: cmd_rem_lockspace,
    Cmd.INQ_LOCKSPACE: cmd_inq_lockspace,
    Cmd.GET_LOCKSPACES: cmd_get_lockspaces,
    Cmd.GET_HOSTS: cmd_get_hosts,
    Cmd.HOST_STATUS: cmd_host_status,
    Cmd.RENEWAL: cmd_renewal,
    Cmd.ACQUIRE: cmd_acquire,
    Cmd.RELEASE: cmd_release,
    Cmd.INQUIRE: cmd_inquire,
    Cmd.CONVERT: cmd_convert,
    Cmd.SET_LVB: cmd_set_lvb,
    Cmd.GET_LVB: cmd_get_lvb,
    Cmd.WRITE_LOCKSPACE: cmd_write_lockspace,
    Cmd.READ_LOCKSPACE: cmd_read_lockspace,
    Cmd.WRITE_RESOURCE: cmd_write_resource,
    Cmd.READ_RESOURCE: cmd_read_resource,
    Cmd.READ_RESOURCE_OWNERS: cmd_read_resource_owners,
    Cmd.REQUEST: cmd_request,
    Cmd.VERSION: cmd_version,
    Cmd.RESTRICT: cmd_restrict,
    Cmd.KILLPATH: cmd_killpath,
    Cmd.STATUS: cmd_status,
    Cmd.LOG_DUMP: cmd_log_dump,
    Cmd.SHUTDOWN: cmd_shutdown,
    Cmd.SHUTDOWN_WAIT: cmd_shutdown_wait,
    Cmd.REG_EVENT: cmd_reg_event,
    Cmd.END_EVENT: cmd_end_event,
    Cmd.SET_EVENT: cmd_set_event,
    Cmd.SET_CONFIG: cmd_set_config,
    Cmd.EXAMINE_LOCKSPACE: cmd_examine,
    Cmd.EXAMINE_RESOURCE: cmd_examine,
    Cmd.LEASED_METRICS: cmd_metrics,
}

INLINE_CLOSERS = frozenset(
    {Cmd.STATUS, Cmd.HOST_STATUS, Cmd.RENEWAL, Cmd.GET_LOCKSPACES, Cmd.GET_HOSTS, Cmd.LOG_DUMP, Cmd.LEASED_METRICS}
)
"""Inline commands after which sanlock closes a one-shot connection (readers wait for EOF)."""
