"""One handler per wire command, in one of two tables.

A handler takes a :class:`Command` (daemon state, the connection's client,
the framed request) and returns a :class:`Reply`: the bytes to send (none
for REGISTER and SHUTDOWN) and whether the connection closes afterwards.
Most commands are answered from memory: their handlers are plain functions
(:data:`IMMEDIATE_HANDLERS`), which the daemon runs where it reads the
request, with no task for the connection.  The others may wait on the disk
or a lockspace, or make the connection a channel: their handlers are
coroutines (:data:`HANDLERS`), run in the connection's own task.
Result codes, payload layouts and close rules are sanlock 3.8.5's (wire spec
§2.3, §5); deviations are deliberate and commented.

Rules every handler keeps:

* bad input is an error code in the reply and a log line, never an exception
  out of the handler and never a dropped lease;
* a registered-type command (ACQUIRE, RELEASE, INQUIRE, CONVERT, KILLPATH)
  acts on the client registered on this connection, or on the registered
  process named by ``data2``, and only if the requester may (same uid or
  root): a client touches only its own leases unless explicitly allowed
  (:meth:`~leased.state.DaemonState.target_client` decides which);
* moving leases to a client is prepare-then-commit (:mod:`leased.resource`);
  the ownership transactions themselves (acquire, release, a closed
  client's leases) are :mod:`leased.transactions`', whose outcomes and
  :class:`~leased.errors.LeaseError` a handler turns into its reply and log
  line here.

What a command leaves running in the background (joining and leaving a
lockspace, fencing a failed one, examining other hosts' requests) is
:mod:`leased.lifecycle`'s policy, host events are :mod:`leased.events`',
what the report commands say is :mod:`leased.status`', the storage
commands' reads and writes of lease areas are :mod:`leased.lease_areas`',
and which client or lockspace a request names is
:class:`~leased.state.DaemonState`'s.  A handler decodes the
request, calls one of those with plain arguments and the seams, and maps
the outcome to a reply (:func:`_answer`): a value is success, a
:class:`~leased.errors.QuietRefusal` its code alone, a
:class:`~leased.errors.Refused` its code and its sentence in the log, any
other :class:`~leased.errors.LeaseError` its code and the whole message.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from leased import lease_areas, protocol, status, transactions
from leased.clock import DEFAULT_CLOCK
from leased.errors import LeaseError, QuietRefusal, Refused, ResultCode, code_name
from leased.events import end_channels, make_channel_room, set_event
from leased.fencing import Fencer, ProcessFencer
from leased.health import make_health_room, open_health_channel
from leased.lifecycle import configure_lockspace, examine_held, join_lockspace, leave_lockspace, lockspace_progress
from leased.lockspace import EventChannel, LockspaceState
from leased.logsetup import debug
from leased.metrics import render
from leased.protocol import Cmd, Header, HostEvent, Killpath, Lockspace, Options, Resource, split_resources
from leased.state import ClientState, DaemonState
from leased.storage import FileStorage, Storage
from leased.tasks import Spawner
from leased.text_forms import format_resource

log = logging.getLogger(__name__)


@dataclass
class Reply:
    data: bytes = b""
    close: bool = False
    channel: Callable[[socket.socket], EventChannel] | None = None
    """REG_EVENT, LEASED_HEALTH: after the reply the connection becomes the channel this makes of it."""


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
"""A command that may wait: run in the connection's own task."""

ImmediateHandler = Callable[[Command], Reply]
"""A command answered from memory, without waiting (:data:`IMMEDIATE_HANDLERS`)."""


def _fail(cmd: Command, rc: int, detail: str, *, data2: int = 0, payload: bytes = b"", close: bool = False) -> Reply:
    log.error("%s ci %d pid %d: %s (%d %s)", cmd.name, cmd.client.ci, cmd.client.pid, detail, rc, code_name(rc))
    return cmd.reply(rc, data2=data2, payload=payload, close=close)


def _answer(cmd: Command, exc: LeaseError, *, payload: bytes = b"", close: bool = False) -> Reply:
    """The reply to a lower layer's refusal or failure, and its log line (see the module docstring)."""
    if isinstance(exc, QuietRefusal):
        return cmd.reply(exc.rc, payload=payload, close=close)
    return _fail(cmd, exc.rc, exc.detail if isinstance(exc, Refused) else str(exc), payload=payload, close=close)


def _contention(cmd: Command, rc: int, detail: str) -> None:
    """An acquire's contention (:func:`~leased.transactions.is_contention`): at debug with quiet_fail (-Q 1)."""
    level = logging.DEBUG if cmd.state.config.quiet_fail else logging.ERROR
    log.log(level, "%s ci %d pid %d: %s (%d %s)", cmd.name, cmd.client.ci, cmd.client.pid, detail, rc, code_name(rc))


def _target(cmd: Command) -> ClientState:
    """The registered client this registered-type command acts on (:meth:`DaemonState.target_client`)."""
    return cmd.state.target_client(cmd.client, cmd.header.target_pid)


# ---------------------------------------------------------------------------
# Lockspaces


async def cmd_add_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    try:
        await join_lockspace(
            cmd.state,
            ls,
            cmd.header.data or cmd.state.config.io_timeout,
            wait=not cmd.header.cmd_flags & protocol.ADD_ASYNC,
            open_storage=cmd.open_storage,
            spawn=cmd.spawn,
            fencer=cmd.fencer,
        )
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


async def cmd_inq_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    return cmd.reply(await lockspace_progress(cmd.state, ls, wait=bool(cmd.header.cmd_flags & protocol.INQ_WAIT)))


async def cmd_rem_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    flags = cmd.header.cmd_flags
    try:
        await leave_lockspace(
            cmd.state,
            ls,
            unused_only=bool(flags & protocol.REM_UNUSED),
            wait=not flags & protocol.REM_ASYNC,
            spawn=cmd.spawn,
            fencer=cmd.fencer,
        )
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


def cmd_get_lockspaces(cmd: Command) -> Reply:
    entries = status.lockspace_list(cmd.state)
    return cmd.reply(0, data2=len(entries), payload=b"".join(x.encode() for x in entries), close=True)


def cmd_get_hosts(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None or lockspace.table is None:
        return cmd.reply(ResultCode.ENOENT, close=True)
    hosts = status.host_list(lockspace.table, lockspace.clock.now(), ls.host_id)
    return cmd.reply(0, data2=len(hosts), payload=b"".join(h.encode() for h in hosts), close=True)


def cmd_host_status(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None or lockspace.table is None:
        return cmd.reply(ResultCode.ENOSPC, close=True)
    header = cmd.header.reply(0, data2=cmd.header.data2)
    return Reply(header.encode() + b"".join(status.host_status_records(lockspace.table)), close=True)


def cmd_renewal(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    lockspace = cmd.state.find_lockspace(ls.name, states=(LockspaceState.JOINED, LockspaceState.FAILED))
    if lockspace is None:
        return cmd.reply(ResultCode.ENOSPC, close=True)
    if not lockspace.history:
        return cmd.reply(0, data2=cmd.header.data2, close=True)
    header = cmd.header.reply(0, data2=lockspace.io_timeout)
    return Reply(header.encode() + b"".join(status.renewal_records(lockspace)), close=True)


# ---------------------------------------------------------------------------
# Resource leases


async def cmd_acquire(cmd: Command) -> Reply:
    header = cmd.header
    resources, used = split_resources(cmd.body, header.data, with_disks=True)
    options = Options.decode(cmd.body[used:])
    try:
        await transactions.acquire_resources(
            cmd.state,
            _target(cmd),
            resources,
            open_storage=cmd.open_storage,
            owner_name=options.owner_name,
            adopt_orphans=bool(header.cmd_flags & protocol.ACQUIRE_ORPHAN),
            orphans_only=bool(header.cmd_flags & protocol.ACQUIRE_ORPHAN_ONLY),
            owner_nowait=bool(header.cmd_flags & protocol.ACQUIRE_OWNER_NOWAIT),
            lvb=bool(header.cmd_flags & protocol.ACQUIRE_LVB),
        )
    except MemoryError as exc:
        return _fail(cmd, ResultCode.ENOMEM, str(exc) or type(exc).__name__)
    except LeaseError as exc:
        if transactions.is_contention(exc):
            _contention(cmd, exc.rc, exc.detail)
            return cmd.reply(exc.rc)
        return _answer(cmd, exc)
    return cmd.reply(0)


async def cmd_release(cmd: Command) -> Reply:
    state, header = cmd.state, cmd.header
    try:
        target = _target(cmd)
    except LeaseError as exc:
        return _answer(cmd, exc)
    flags = header.cmd_flags
    if flags & protocol.REL_ORPHAN:
        if len(cmd.body) < protocol.RESOURCE_SIZE:
            # REL_ALL framed the request without a body (length 32): no resource names the orphans.
            return _fail(cmd, ResultCode.EINVAL, "release of orphans names no resource")
        (which,), _ = split_resources(cmd.body, 1, with_disks=False)
        return cmd.reply(await transactions.release_orphans(state, which.lockspace, which.name))
    if flags & protocol.REL_ALL:
        return cmd.reply(await transactions.release_leases(state, target, None))
    structs, _ = split_resources(cmd.body, 2 if flags & protocol.REL_RENAME else header.data, with_disks=False)
    wanted = structs[:1] if flags & protocol.REL_RENAME else structs
    rename = structs[1].name if flags & protocol.REL_RENAME else None
    keys = [(r.lockspace, r.name) for r in wanted]
    return cmd.reply(await transactions.release_leases(state, target, keys, rename=rename))


def cmd_inquire(cmd: Command) -> Reply:
    try:
        target = _target(cmd)
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
    try:
        target = _target(cmd)
        resource = Resource.decode(cmd.body)
        await transactions.convert_lease(
            cmd.state, target, (resource.lockspace, resource.name), to_shared=resource.shared
        )
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


def cmd_set_lvb(cmd: Command) -> Reply:
    resource = Resource.decode(cmd.body)
    try:
        cmd.state.leases.set_lvb((resource.lockspace, resource.name), cmd.body[protocol.RESOURCE_SIZE :])
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


def cmd_get_lvb(cmd: Command) -> Reply:
    resource = Resource.decode(cmd.body)
    try:
        lvb = cmd.state.leases.get_lvb((resource.lockspace, resource.name), cmd.header.data2)
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0, payload=lvb)


async def cmd_request(cmd: Command) -> Reply:
    """Ask the holder of a lease to give it up (wire spec §5.13, on-disk spec §7.10)."""
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    try:
        await transactions.request_lease(
            cmd.state,
            resource,
            cmd.header.data,
            next_lver=bool(cmd.header.cmd_flags & protocol.REQUEST_NEXT_LVER),
            open_storage=cmd.open_storage,
        )
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


# ---------------------------------------------------------------------------
# Direct storage commands (no lockspace needed): leased.lease_areas


async def cmd_write_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    try:
        await lease_areas.write_lockspace(cmd.open_storage, ls, cmd.header.data2 or cmd.state.config.io_timeout)
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    return cmd.reply(0)


async def cmd_read_lockspace(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    try:
        found, io_timeout = await lease_areas.read_lockspace(
            cmd.open_storage, ls, ls.host_id or 1, cmd.state.config.io_timeout
        )
    except LeaseError as exc:
        log.error("read_lockspace %s:%d: %s", ls.disk.path, ls.disk.offset, exc)
        return cmd.reply(exc.rc, payload=ls.encode())
    return cmd.reply(0, data2=io_timeout, payload=found.encode())


async def cmd_write_resource(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    try:
        await lease_areas.write_resource(
            cmd.open_storage,
            resource,
            num_hosts=cmd.header.data,  # sanlock uses data (max_hosts) as num_hosts; data2 is ignored
            clear=bool(cmd.header.cmd_flags & protocol.WRITE_CLEAR),
        )
    except LeaseError as exc:
        return _fail(cmd, exc.rc, str(exc))
    return cmd.reply(0)


async def cmd_read_resource(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    try:
        found = await lease_areas.read_resource(cmd.open_storage, resource, cmd.state.config.io_timeout)
    except LeaseError as exc:
        log.error("read_resource: %s", exc)
        found = Resource(resource.lockspace, resource.name, flags=resource.flags)
        return cmd.reply(exc.rc, payload=found.encode(with_disks=False))
    return cmd.reply(0, payload=found.encode(with_disks=False))


async def cmd_read_resource_owners(cmd: Command) -> Reply:
    (resource,), _ = split_resources(cmd.body, 1, with_disks=True)
    try:
        found, hosts = await lease_areas.read_resource_owners(cmd.open_storage, resource, cmd.state.config.io_timeout)
    except LeaseError as exc:
        log.error("read_resource_owners: %s", exc)
        found = Resource(resource.lockspace, resource.name, flags=resource.flags)
        return cmd.reply(exc.rc, payload=found.encode(with_disks=False))
    payload = found.encode(with_disks=False) + b"".join(h.encode() for h in hosts)
    return cmd.reply(0, data2=len(hosts), payload=payload)


# ---------------------------------------------------------------------------
# Daemon-level commands


def mark_registered(client: ClientState) -> None:
    """The client's process is registered: its connection's close will mean it exited."""
    client.registered = True
    client.name = str(client.pid).encode()
    debug(log, "cmd_register ci %d pid %d", client.ci, client.pid)


def cmd_register(cmd: Command) -> Reply:
    # Identity (pid/uid) was taken from SO_PEERCRED by the connection; no reply, ever.
    client = cmd.client
    if client.pid <= 0:
        log.error("register ci %d: no peer credentials", client.ci)
        return Reply(close=True)
    mark_registered(client)
    return Reply()


def cmd_version(cmd: Command) -> Reply:
    header = Header(Cmd.VERSION, 0, protocol.HEADER_SIZE, 0, 0, protocol.VERSION_NUM, version=protocol.SM_PROTO)
    return Reply(header.encode())


def cmd_restrict(cmd: Command) -> Reply:
    cmd.client.restrict = cmd.header.cmd_flags
    return cmd.reply(0)


def cmd_killpath(cmd: Command) -> Reply:
    try:
        target = _target(cmd)
    except Refused as exc:
        return _fail(cmd, exc.rc, exc.detail)
    target.killpath = Killpath.decode(cmd.body)
    target.killpath_flags = cmd.header.cmd_flags
    return cmd.reply(0)


def cmd_log_dump(cmd: Command) -> Reply:
    text = cmd.state.log_ring.dump() if cmd.state.log_ring else b""
    header = Header(
        cmd.header.cmd, cmd.header.cmd_flags, cmd.header.length, cmd.header.seq, len(text), cmd.header.data2
    )
    return Reply(header.encode() + text, close=True)


def cmd_shutdown(cmd: Command) -> Reply:
    if cmd.state.lockspaces and not cmd.header.data:  # data: force
        log.debug("ignore shutdown, lockspace exists")
        return Reply(close=True)
    cmd.state.shutting_down = True
    return Reply(close=True)


def cmd_shutdown_wait(cmd: Command) -> Reply:
    if cmd.state.lockspaces and not cmd.header.data:
        return cmd.reply(ResultCode.EBUSY)
    cmd.state.shutting_down = True
    return Reply(
        Header(0, 0, protocol.HEADER_SIZE, 0, 0, 0, magic=cmd.header.magic, version=protocol.SM_PROTO).encode(),
        close=True,
    )


async def cmd_reg_event(cmd: Command) -> Reply:
    try:
        lockspace = cmd.state.event_lockspace(Lockspace.decode(cmd.body).name, "reg_event")
        make_channel_room(lockspace)
    except LeaseError as exc:
        return _answer(cmd, exc)
    return Reply(cmd.reply(0).data, channel=lockspace.add_event_channel)


def cmd_end_event(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    if not ls.name:
        return cmd.reply(ResultCode.EINVAL, close=True)
    lockspace = cmd.state.find_lockspace(ls.name)
    if lockspace is None:
        return cmd.reply(ResultCode.ENOENT, close=True)
    end_channels(lockspace)
    return cmd.reply(0, close=True)


def cmd_set_event(cmd: Command) -> Reply:
    ls = Lockspace.decode(cmd.body)
    event = HostEvent.decode(cmd.body[protocol.LOCKSPACE_SIZE :])
    flags = cmd.header.cmd_flags
    try:
        set_event(
            cmd.state.event_lockspace(ls.name, "set_event"),
            event,
            all_hosts=bool(flags & protocol.SETEV_ALL_HOSTS),
            clear_hostid=bool(flags & protocol.SETEV_CLEAR_HOSTID),
            clear_event=bool(flags & protocol.SETEV_CLEAR_EVENT),
            cur_generation=bool(flags & protocol.SETEV_CUR_GENERATION),
            replace=bool(flags & protocol.SETEV_REPLACE_EVENT),
        )
    except LeaseError as exc:
        return _answer(cmd, exc)
    return cmd.reply(0)


def cmd_set_config(cmd: Command) -> Reply:
    try:
        configure_lockspace(cmd.state, Lockspace.decode(cmd.body).name, cmd.header.data)
    except LeaseError as exc:
        return _answer(cmd, exc, close=True)
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


def cmd_unsupported(cmd: Command) -> Reply:
    return _fail(cmd, ResultCode.EOPNOTSUPP, "command not supported by leased yet")


# ---------------------------------------------------------------------------
# STATUS and LEASED_METRICS (leased extension): what they report is leased.status's


def cmd_status(cmd: Command) -> Reply:
    records = status.status_records(cmd.state, cmd.header.data, DEFAULT_CLOCK.now())
    header = cmd.header.reply(0, data2=cmd.header.data2)
    return Reply(header.encode() + b"".join(records), close=True)


def cmd_metrics(cmd: Command) -> Reply:
    text = render(status.metrics_families(cmd.state, DEFAULT_CLOCK.now())).encode(errors="replace")
    return cmd.reply(0, payload=text, close=True)


async def cmd_health(cmd: Command) -> Reply:
    """LEASED_HEALTH (leased extension): the connection becomes a health channel (:mod:`leased.health`)."""
    channels = cmd.state.health_channels
    try:
        make_health_room(channels)
    except LeaseError as exc:
        return _answer(cmd, exc)
    return Reply(cmd.reply(0).data, channel=partial(open_health_channel, channels, cmd.state.lockspaces))


HANDLERS: dict[int, Handler] = {
    Cmd.ADD_LOCKSPACE: cmd_add_lockspace,
    Cmd.REM_LOCKSPACE: cmd_rem_lockspace,
    Cmd.INQ_LOCKSPACE: cmd_inq_lockspace,
    Cmd.ACQUIRE: cmd_acquire,
    Cmd.RELEASE: cmd_release,
    Cmd.CONVERT: cmd_convert,
    Cmd.WRITE_LOCKSPACE: cmd_write_lockspace,
    Cmd.READ_LOCKSPACE: cmd_read_lockspace,
    Cmd.WRITE_RESOURCE: cmd_write_resource,
    Cmd.READ_RESOURCE: cmd_read_resource,
    Cmd.READ_RESOURCE_OWNERS: cmd_read_resource_owners,
    Cmd.REQUEST: cmd_request,
    Cmd.REG_EVENT: cmd_reg_event,
    Cmd.EXAMINE_LOCKSPACE: cmd_examine,
    Cmd.EXAMINE_RESOURCE: cmd_examine,
    Cmd.LEASED_HEALTH: cmd_health,
}
"""Commands whose handler may wait (the disk, a lockspace's progress) or turns the connection into a channel.

The daemon runs them in the connection's own task.
"""

IMMEDIATE_HANDLERS: dict[int, ImmediateHandler] = {
    Cmd.REGISTER: cmd_register,
    Cmd.GET_LOCKSPACES: cmd_get_lockspaces,
    Cmd.GET_HOSTS: cmd_get_hosts,
    Cmd.HOST_STATUS: cmd_host_status,
    Cmd.RENEWAL: cmd_renewal,
    Cmd.INQUIRE: cmd_inquire,
    Cmd.SET_LVB: cmd_set_lvb,
    Cmd.GET_LVB: cmd_get_lvb,
    Cmd.VERSION: cmd_version,
    Cmd.RESTRICT: cmd_restrict,
    Cmd.KILLPATH: cmd_killpath,
    Cmd.STATUS: cmd_status,
    Cmd.LOG_DUMP: cmd_log_dump,
    Cmd.SHUTDOWN: cmd_shutdown,
    Cmd.SHUTDOWN_WAIT: cmd_shutdown_wait,
    Cmd.END_EVENT: cmd_end_event,
    Cmd.SET_EVENT: cmd_set_event,
    Cmd.SET_CONFIG: cmd_set_config,
    Cmd.LEASED_METRICS: cmd_metrics,
}
"""Commands answered from memory, never waiting: the daemon may run them wherever the request is read.

A short-lived client (REGISTER, INQUIRE, close) is served from first byte
to close without a task of its own.  A command in neither table is
answered by :func:`cmd_unsupported`, which is immediate too.
"""

INLINE_CLOSERS = frozenset(
    {Cmd.STATUS, Cmd.HOST_STATUS, Cmd.RENEWAL, Cmd.GET_LOCKSPACES, Cmd.GET_HOSTS, Cmd.LOG_DUMP, Cmd.LEASED_METRICS}
)
"""Inline commands after which sanlock closes a one-shot connection (readers wait for EOF)."""
