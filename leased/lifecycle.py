"""Lockspace lifecycle and fencing policy: what the daemon does on its own.

Most of what the daemon does answers a command.  This module owns what it
does in the background, started by a command or by a lockspace's own
renewal task, after the reply has been sent or with no request at all:

* joining a lockspace (:func:`join_lockspace`, ADD_LOCKSPACE's policy: which
  requests conflict with the lockspaces we have, the io_timeout limit) and
  wiring the new :class:`~leased.lockspace.JoinedLockspace` to this module's
  policy (:func:`new_lockspace`): a failed join forgets it, a failed
  renewal fences it, a scan that saw other hosts flag us examines their
  requests; how a join or a removal is going (:func:`lockspace_progress`);
  a joined lockspace's settings (:func:`configure_lockspace`, SET_CONFIG);
* leaving a lockspace (:func:`leave_lockspace`, :func:`begin_removal`,
  :func:`remove_lockspace`): SIGKILL every holder of a lease in it (wire
  spec §5.4), wait until they are gone, then release the host id;
* fencing a lockspace whose host id can no longer be renewed
  (:func:`fence_lockspace`): the escalation of :mod:`leased.fencing`
  (killpath, then SIGTERM, then SIGKILL) against its lease holders, then
  the lockspace is dropped without touching the disk;
* requests and events from other hosts (:func:`examine_requests`,
  :func:`examine_token`, :func:`examine_held`): a FORCE request kills the
  holder, a GRACEFUL one runs its killpath or sends SIGTERM, and an event
  addressed to us goes to the lockspace's event channels, once
  (:func:`leased.events.deliver_event`).

They are functions of plain arguments: the
:class:`~leased.state.DaemonState`, the lockspace (or the wire's
:class:`~leased.protocol.Lockspace` naming one) or token, the
:class:`~leased.fencing.Fencer` seam, the ``open_storage`` seam and a
:data:`~leased.tasks.Spawner` wherever they start background work.  They
never see a request and never build a reply; their outcome is the state
they change and the log lines they write, and for the calls that answer a
command a :class:`~leased.errors.Refused` or
:class:`~leased.errors.QuietRefusal` the command layer replies with.

Their rules:

* **The release rule** (:mod:`leased.daemon`): nothing here releases a
  resource lease on disk.  A removed or failed lockspace drops its leases
  from the lease table and closes their storage only after the escalation
  has seen every holder gone (or no longer holding); the leases of a failed
  lockspace stay owned on disk, so other hosts must see their owner dead.
* **Late work is stale work**: a scan result carries the lockspace's
  generation and an examine the token it was started for; a lockspace
  removed (and maybe re-added) or a token released meanwhile makes the work
  stale, and it is discarded with a debug line rather than acted on.
* **Signals only to the process that holds**: a holder is signalled only
  while it is the same live client (its generation unchanged), through the
  restrictions it registered (:func:`leased.fencing.restricted_signal`).

Why apart from :mod:`leased.commands`: a handler decodes one request and
answers it; this policy outlives the request that started it (REM_LOCKSPACE
with REM_ASYNC, ADD_LOCKSPACE's hooks) or has no request at all (renewal
failure, a scan, a forced shutdown in :mod:`leased.daemon`).  Here it sits
above :mod:`leased.state`, :mod:`leased.lockspace`, :mod:`leased.resource`,
:mod:`leased.fencing` and :mod:`leased.transactions`, and below
:mod:`leased.commands` and :mod:`leased.daemon`, which both call it.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial

import trio

from leased import paxos_lease
from leased.constants import REQ_FORCE, REQ_GRACEFUL
from leased.errors import LeaseError, QuietRefusal, Refused, ResultCode
from leased.events import deliver_event
from leased.fencing import Fencer, escalate, restricted_signal
from leased.health import announce_health
from leased.lockspace import JoinedLockspace, LockspaceKey, LockspaceState, lockspace_key
from leased.ondisk import bitmap_test, encode_name, names_equal
from leased.protocol import HealthState, Lockspace
from leased.resource import Token
from leased.state import DaemonState
from leased.storage import Storage, open_lease_storage
from leased.tasks import Spawner
from leased.timeouts import kill_grace_seconds

log = logging.getLogger(__name__)


def _ls_name(name: bytes) -> str:
    return name.decode(errors="replace")


# ---------------------------------------------------------------------------
# Joining and leaving


def _matches(lockspace: JoinedLockspace, ls: Lockspace) -> bool:
    key = lockspace.key
    return (
        names_equal(encode_name(key.name), encode_name(ls.name))
        and key.path == ls.disk.path
        and key.offset == ls.disk.offset
        and (ls.host_id == 0 or key.host_id == ls.host_id)
    )


async def join_lockspace(
    state: DaemonState,
    ls: Lockspace,
    io_timeout: int,
    *,
    wait: bool,
    open_storage: Callable[[str], Storage],
    spawn: Spawner,
    fencer: Fencer,
) -> None:
    """ADD_LOCKSPACE: start joining ``ls`` with host id ``ls.host_id``; with ``wait``, until it has joined.

    The same lockspace already joined, joining or leaving is an ordinary
    answer (-EEXIST, -EINPROGRESS, -EAGAIN); another one of that name or
    place, empty fields or an io_timeout that does not fit the leader's byte
    are refused before anything starts.  A failed join leaves no record
    (:func:`forget_lockspace`) and is refused with its code.
    """
    if not ls.name or not ls.host_id or not ls.disk.path:
        raise Refused(ResultCode.EINVAL, "empty name, host_id 0 or empty path")
    for existing in state.lockspaces:
        same = _matches(existing, ls) and existing.host_id == ls.host_id
        if same and existing.state is LockspaceState.JOINED:
            raise QuietRefusal(ResultCode.EEXIST, "lockspace already joined")
        if same and existing.state is LockspaceState.ADDING:
            raise QuietRefusal(ResultCode.EINPROGRESS, "lockspace being joined")
        if same and existing.state is LockspaceState.REMOVING:
            raise QuietRefusal(ResultCode.EAGAIN, "lockspace being left")
        if existing.state is LockspaceState.FAILED:
            continue
        if existing.name == ls.name or (existing.key.path, existing.key.offset) == (ls.disk.path, ls.disk.offset):
            raise Refused(ResultCode.EINVAL, f"lockspace {_ls_name(ls.name)} conflicts with a joined one")
    if io_timeout > 255:
        raise Refused(ResultCode.EINVAL, f"io_timeout {io_timeout} above 255 (stored in one byte on disk)")
    joined = new_lockspace(
        state,
        lockspace_key(ls.name, ls.host_id, ls.disk.path, ls.disk.offset),
        io_timeout,
        open_storage=open_storage,
        spawn=spawn,
        fencer=fencer,
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
    spawn(f"lockspace {_ls_name(ls.name)}", joined.run)
    if not wait:
        return
    await joined.joined.wait()
    if joined.state is not LockspaceState.JOINED:
        forget_lockspace(state, joined)
        raise Refused(joined.add_result or ResultCode.ERROR, f"add_lockspace {_ls_name(ls.name)} failed")


def _progress(state: DaemonState, ls: Lockspace) -> int:
    for existing in state.lockspaces:
        if _matches(existing, ls):
            if existing.state is LockspaceState.JOINED:
                return 0
            if existing.state in (LockspaceState.ADDING, LockspaceState.REMOVING):
                return ResultCode.EINPROGRESS
    return ResultCode.ENOENT


async def lockspace_progress(state: DaemonState, ls: Lockspace, *, wait: bool) -> int:
    """INQ_LOCKSPACE: 0 joined, -EINPROGRESS joining or leaving, -ENOENT unknown; ``wait`` waits out the middle."""
    result = _progress(state, ls)
    while result == ResultCode.EINPROGRESS and wait:
        await trio.sleep(1)
        result = _progress(state, ls)
    return result


async def leave_lockspace(
    state: DaemonState, ls: Lockspace, *, unused_only: bool, wait: bool, spawn: Spawner, fencer: Fencer
) -> None:
    """REM_LOCKSPACE: start leaving ``ls`` (:func:`begin_removal`); with ``wait``, until it has left.

    Unknown, already leaving, or (``unused_only``) still holding leases:
    ordinary answers (-ENOENT, -EINPROGRESS, -EBUSY).
    """
    target = next((x for x in state.lockspaces if _matches(x, ls)), None)
    if target is None:
        raise QuietRefusal(ResultCode.ENOENT, "no such lockspace")
    if target.state is LockspaceState.REMOVING:
        raise QuietRefusal(ResultCode.EINPROGRESS, "lockspace being left")
    tokens = state.leases.in_lockspace(target)
    if unused_only and tokens:
        raise QuietRefusal(ResultCode.EBUSY, "lockspace has leases")
    begin_removal(state, target, spawn, fencer)
    if wait:
        await target.removed.wait()


CONFIG_VALUES = frozenset({1, 2, 4, 8})
"""The lockspace settings SET_CONFIG takes (sanlock's ``SANLK_CONFIG_*``); one at a time."""


def configure_lockspace(state: DaemonState, name: bytes, value: int) -> None:
    """SET_CONFIG: keep ``value`` as the settings of lockspace ``name`` (joined, or failed).

    Unknown lockspace, a value not in :data:`CONFIG_VALUES`, or 1 for a
    failed lockspace: ordinary answers (-ENOENT, -EINVAL, -ENOSPC).
    """
    lockspace = state.find_lockspace(name, states=(LockspaceState.JOINED, LockspaceState.FAILED))
    if lockspace is None:
        raise QuietRefusal(ResultCode.ENOENT, "no such lockspace")
    if value not in CONFIG_VALUES:
        raise QuietRefusal(ResultCode.EINVAL, f"config value {value} unknown")
    if value == 1 and lockspace.state is LockspaceState.FAILED:
        raise QuietRefusal(ResultCode.ENOSPC, "lockspace failed")
    lockspace.config_flags = value


def new_lockspace(
    state: DaemonState,
    key: LockspaceKey,
    io_timeout: int,
    *,
    open_storage: Callable[[str], Storage],
    spawn: Spawner,
    fencer: Fencer,
) -> JoinedLockspace:
    """A lockspace to join, wired to this module's policy; the caller adds it to the state and runs it.

    A failed join forgets it (:func:`forget_lockspace`); a failed renewal
    starts :func:`fence_lockspace`; a scan that found hosts flagging us
    starts :func:`examine_requests`.  Each background task goes through
    ``spawn``, so its failure ends only itself.
    """
    return JoinedLockspace(
        key=key,
        io_timeout=io_timeout,
        timeouts=state.config.timeouts(io_timeout),
        host_name=state.config.our_host_name.encode(),
        open_storage=lambda path: open_lease_storage(open_storage, path),
        history_size=state.config.renewal_history_size,
        set_bitmap_seconds=state.config.set_bitmap_seconds,
        space_id=next(state.space_ids),
        watchdog=state.watchdog,
        on_join_failure=lambda failed: forget_lockspace(state, failed),
        on_failure=lambda failed: spawn(
            f"fence lockspace {_ls_name(failed.name)}", partial(fence_lockspace, state, failed, fencer)
        ),
        on_scan=lambda scanned, generation, changed: spawn(
            f"examine requests in {_ls_name(scanned.name)}",
            partial(examine_requests, state, scanned, generation, changed, fencer),
        ),
        on_health=lambda changed: announce_health(state.health_channels, changed),
    )


def forget_lockspace(state: DaemonState, lockspace: JoinedLockspace) -> None:
    """Drop a lockspace whose join failed: sync or async, a failed add leaves no record behind.

    (A hostile client could otherwise grow the lockspace list, and STATUS,
    by one record per failed ADD_ASYNC.)  Guarded: rem_lockspace may have
    dropped it first.
    """
    if lockspace in state.lockspaces:
        state.lockspaces.remove(lockspace)


def begin_removal(state: DaemonState, lockspace: JoinedLockspace, spawn: Spawner, fencer: Fencer) -> None:
    """Mark the lockspace REMOVING (cancelling a join in progress) and start :func:`remove_lockspace`.

    ``lockspace.removed`` is set once it has left; the caller may wait on it.
    """
    if lockspace.state is LockspaceState.ADDING:
        lockspace.cancel_scope.cancel()
    lockspace.state = LockspaceState.REMOVING
    spawn(f"remove lockspace {_ls_name(lockspace.name)}", partial(remove_lockspace, state, lockspace, fencer))


async def remove_lockspace(state: DaemonState, lockspace: JoinedLockspace, fencer: Fencer) -> None:
    """Kill every holder of a lease in the lockspace (SIGKILL, wire spec §5.4), wait, leave."""
    await _stop_holders(state, lockspace, fencer, fail_time=0, grace=0, immediate=True)
    await lockspace.leave()
    if lockspace in state.lockspaces:
        state.lockspaces.remove(lockspace)


async def _stop_holders(
    state: DaemonState, lockspace: JoinedLockspace, fencer: Fencer, *, fail_time: float, grace: float, immediate: bool
) -> None:
    """Run the kill escalation on the lockspace's lease holders, then drop its leases without disk writes."""
    holders = {t.client_id for t in state.leases.in_lockspace(lockspace)}
    clients = [(state.clients[ci], state.clients[ci].generation) for ci in sorted(holders) if ci in state.clients]
    if not immediate:
        log.error(
            "lockspace %s failed: fencing %d lease holders (grace %ds)", _ls_name(lockspace.name), len(clients), grace
        )
    await escalate(
        fencer,
        clients,
        fail_time=fail_time,
        grace=grace,
        immediate=immediate,
        clock=lockspace.clock,
        still_holding=lambda client: any(t.lockspace is lockspace for t in client.tokens),
    )
    for token in state.leases.in_lockspace(lockspace):
        state.leases.detach(token)
        token.lease.area.storage.close()


# ---------------------------------------------------------------------------
# Fencing


async def fence_lockspace(state: DaemonState, lockspace: JoinedLockspace, fencer: Fencer) -> None:
    """Our host id can no longer be renewed: stop every lease holder in it before others may take over.

    No lease of this lockspace is released on disk (their owners must look
    dead to other hosts); once no holder is left the lockspace is dropped
    without releasing the host id.
    """
    assert lockspace.lease is not None
    fail_time = lockspace.lease.last_success + 8 * lockspace.io_timeout
    grace = kill_grace_seconds(state.config.watchdog_fire_timeout, state.config.kill_grace_seconds)
    await _stop_holders(state, lockspace, fencer, fail_time=fail_time, grace=grace, immediate=False)
    # Every holder is gone, so the host need not be reset for this lockspace (sanlock's order too);
    # a holder that never dies keeps us above, and wdmd lets the watchdog fire.
    await lockspace.disarm_watchdog()
    lockspace.cancel_scope.cancel()
    if lockspace.lease is not None:
        lockspace.lease.area.storage.close()
    if lockspace in state.lockspaces:
        state.lockspaces.remove(lockspace)
    lockspace.set_health(HealthState.REMOVED)
    lockspace.removed.set()
    log.error("lockspace %s removed after failure; its leases stay owned on disk", _ls_name(lockspace.name))


# ---------------------------------------------------------------------------
# Requests and events from other hosts


async def examine_requests(
    state: DaemonState, lockspace: JoinedLockspace, generation: int, changed: list[int], fencer: Fencer
) -> None:
    """React to other hosts that flagged us in their bitmap (on-disk spec §5.5, §7.10).

    A late scan result of a lockspace that was removed (and maybe re-added
    since) carries the old generation and is discarded.
    """
    current = state.find_lockspace(lockspace.name)
    if current is not lockspace or current.generation != generation:
        log.debug("stale scan result of lockspace %s generation %d discarded", _ls_name(lockspace.name), generation)
        return
    table = lockspace.table
    if table is None:
        return
    now = lockspace.clock.now()
    keep = lockspace.set_bitmap_seconds or 6 * lockspace.io_timeout
    flagged = []
    for host_id in changed:
        record = table.hosts.get(host_id)
        if record is None or host_id == lockspace.host_id or not record.bitmap:
            continue
        if not bitmap_test(record.bitmap, lockspace.host_id):
            continue
        if record.write_generation:
            deliver_event(lockspace, host_id, record)
        if now - lockspace.examined.get(host_id, -keep - 1) <= keep:
            continue
        lockspace.examined[host_id] = now
        flagged.append(host_id)
    if not flagged:
        return
    log.info("request from host_id %s in lockspace %s", flagged, _ls_name(lockspace.name))
    for token in list(state.leases.in_lockspace(lockspace)):
        await examine_token(state, token, fencer)


async def examine_held(state: DaemonState, lockspace_name: bytes, resource_name: bytes | None, fencer: Fencer) -> None:
    """Examine now every held lease of the lockspace, or only those of ``resource_name`` in it."""
    for token in list(state.leases.tokens()):
        if token.key[0] == lockspace_name and resource_name in (None, token.key[1]):
            await examine_token(state, token, fencer)


async def examine_token(state: DaemonState, token: Token, fencer: Fencer) -> None:
    """Act on the request record of one held lease: FORCE kills, GRACEFUL asks (§7.10).

    An examine may come late: the token it was started for can have been
    released (and the resource re-acquired, with a new lver) meanwhile.  A
    token no longer held is stale and is discarded; judging the new lease by
    the old token's lver would kill a process for a request it already
    satisfies.
    """
    if token not in state.leases.held.get(token.key, []):
        log.debug("examine %s: stale token %d discarded", _ls_name(token.resource.name), token.token_id)
        return
    try:
        request = await paxos_lease.read_request(token.lease.area, token.lockspace.io_timeout)
    except LeaseError as exc:
        log.error("examine %s: %s", _ls_name(token.resource.name), exc)
        return
    if not request.force_mode or not request.lver or request.lver <= token.lver:
        return
    if token not in state.leases.held.get(token.key, []):
        log.debug(
            "examine %s: token %d released while reading its request", _ls_name(token.resource.name), token.token_id
        )
        return
    client = state.clients.get(token.client_id)
    if client is None or client.dead or client.generation != token.client_generation:
        log.debug("examine %s: holder gone or stale", _ls_name(token.resource.name))
        return
    log.info(
        "examine %s lver %d: request lver %d mode %d for pid %d",
        _ls_name(token.resource.name),
        token.lver,
        request.lver,
        request.force_mode,
        client.pid,
    )
    if request.force_mode == REQ_FORCE:
        fencer.send_signal(client, restricted_signal(client, signal.SIGKILL))
    elif request.force_mode == REQ_GRACEFUL and (client.killpath is None or not fencer.run_killpath(client)):
        fencer.send_signal(client, restricted_signal(client, signal.SIGTERM))
