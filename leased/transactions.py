"""Ownership transactions: moving resource leases to a client and taking them back.

This module owns the moves that change who holds a lease on this host:

* :func:`acquire_resources`, an acquire: its checks, the reservation and
  the disk turns around :func:`acquire_leases`, the disk work and its
  commit point;
* :func:`release_leases`, leases let go by their client (RELEASE), each
  through :func:`release_token` (also a closing client's), and
  :func:`release_orphans` (``release -o``);
* :func:`convert_lease`, a held lease switched between shared and
  exclusive;
* :func:`release_client`, every lease of a registered process that is gone;
* :func:`request_lease`, asking another host's holder to give a lease up
  (a request record, then the holder's bit in our bitmap).

They are functions of plain arguments (the daemon state, the client, the
resources, the options, the ``open_storage`` seam, the client's
generation) that return what they did or raise
:class:`~leased.errors.LeaseError` with the result code and a sentence: a
:class:`~leased.errors.Refused` for a check that refused before anything
changed, a :class:`LocalConflict` for a lease busy on this host, a
:class:`~leased.errors.QuietRefusal` for an ordinary answer.
They know nothing of the wire: :mod:`leased.commands` decodes a request,
checks it, calls in here, and turns the outcome into a reply and a log line.

Their rules:

* **Prepare, then commit** (:mod:`leased.resource` states it for the
  :class:`~leased.resource.LeaseTable`): an acquire does all disk work first
  and attaches the tokens to the client in one step, only if the client is
  still the same live process; any failure before that, a refused lease, a
  failed I/O, an allocation failure at a fault point or a cancellation,
  gives back what this call took and leaves the client, and every other
  client, exactly as they were.  A release fails, if at all, before it
  detaches anything: the client still holds the lease and may ask again.
* **The release rule** is the daemon's (:mod:`leased.daemon`): it calls
  :func:`release_client` only for a process known gone, by EOF on its
  registered connection or its exit seen through its pidfd.  Nothing here
  decides that a holder is gone.
* **Never drop a lease silently**: a lease that cannot be let go is kept
  visible, held by its client or as an orphan that ``release -o`` can
  release; a lease given back or released is released on disk unless other
  local shared holders still rely on this host's hold.

Allocation failures (``MemoryError`` from the fault points of
:mod:`leased.faultpoints`) pass through unchanged once the state is as it
was: the command layer answers them -ENOMEM, as the daemon's boundary would.

Why a module of its own and not :mod:`leased.resource`: the transactions
read and change the :class:`~leased.state.DaemonState` and the
:class:`~leased.state.ClientState`, and :mod:`leased.state` imports
:mod:`leased.resource` (for the lease table and tokens).  Here they sit
above both and below :mod:`leased.commands`, so every import points
downward and none closes a cycle.
"""

from __future__ import annotations

import logging

import trio

from leased import paxos_lease
from leased.areas import ResourceArea
from leased.errors import LeaseError, QuietRefusal, Refused, ResultCode
from leased.geometry import request_geometry
from leased.lockspace import JoinedLockspace
from leased.ondisk import encode_name
from leased.protocol import RES_LVER, RES_NUM_HOSTS, RES_PERSISTENT, RES_SHARED, Cmd, Resource
from leased.resource import Key, LeaseTable, Token, release_unless_shared_on
from leased.state import ClientState, DaemonState
from leased.storage import OpenStorage, Storage, lease_storage, open_lease_storage

log = logging.getLogger(__name__)


def _name(name: bytes) -> str:
    return name.decode(errors="replace")


def resource_area(token_storage: Storage, resource: Resource, lockspace: JoinedLockspace) -> ResourceArea:
    """Where a requested resource lives on disk: the request's geometry, else its lockspace's."""
    disk = resource.disks[0]
    geometry = request_geometry(resource.flags)
    if geometry is None:
        assert lockspace.lease is not None
        geometry = lockspace.lease.area.geometry
    return ResourceArea(
        token_storage, disk.offset, encode_name(resource.lockspace), encode_name(resource.name), geometry
    )


class CommitRefused(Refused):
    """An acquire's disk work succeeded but its commit point refused: what it took has been given back."""


class LocalConflict(Refused):
    """An acquire refused before any disk work because the lease is busy on this host (wire spec §5.7)."""


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
"""The codes of another host or client holding (or taking) a lease an acquire wanted."""


def is_contention(exc: LeaseError) -> bool:
    """Whether an acquire failed because someone else holds (or is taking) the lease.

    That is the normal life of a lock, not a fault: a local conflict, or a
    contention code from the disk work (a check that refused says so with
    its own sentence, and is not contention).  The command layer logs it at
    debug under quiet_fail (-Q 1, the default) so busy clusters do not flood
    the log at error.
    """
    return isinstance(exc, LocalConflict) or (exc.rc in CONTENTION_CODES and not isinstance(exc, Refused))


def _check_acquire(
    state: DaemonState, resources: list[Resource], *, adopt_orphans: bool, orphans_only: bool
) -> dict[Key, Token]:
    """An acquire's checks before any disk work; returns the orphans to adopt, by key."""
    keys = [(r.lockspace, r.name) for r in resources]
    adopt: dict[Key, Token] = {}
    for resource in resources:
        if len(resource.disks) > 1:
            raise Refused(ResultCode.EINVAL, "multi-disk leases are not supported")
        lockspace = state.find_lockspace(resource.lockspace)
        if lockspace is None or not lockspace.usable:
            raise Refused(ResultCode.ENOSPC, f"lockspace {_name(resource.lockspace)} not joined")
        key = (resource.lockspace, resource.name)
        orphan = state.leases.orphan(key)
        if orphan is not None and (adopt_orphans or orphans_only):
            if orphan.shared != resource.shared:
                raise Refused(ResultCode.EUCLEAN, f"orphan {_name(resource.name)} is held in the other mode")
            adopt[key] = orphan
            continue
        if orphan is None and orphans_only:
            raise Refused(ResultCode.ENOENT, f"no orphan {_name(resource.name)} to adopt")
        conflict = state.leases.conflict(key, resource.shared)
        if conflict:
            raise LocalConflict(conflict, f"{_name(resource.name)} is busy here (local conflict)")
    if len(set(keys)) != len(keys):
        raise Refused(ResultCode.EINVAL, "the same resource twice in one acquire")
    return adopt


async def acquire_resources(
    state: DaemonState,
    target: ClientState,
    resources: list[Resource],
    *,
    open_storage: OpenStorage,
    owner_name: bytes,
    adopt_orphans: bool = False,
    orphans_only: bool = False,
    owner_nowait: bool = False,
    lvb: bool = False,
) -> list[Token]:
    """An acquire for ``target``: check, reserve, take the disk turns, then :func:`acquire_leases`.

    The checks refuse before anything changes (:class:`~leased.errors.Refused`,
    :class:`LocalConflict`); ``adopt_orphans`` adopts orphans of the same
    keys instead of taking them on disk, ``orphans_only`` refuses keys that
    have none.  No await between the checks and the reservation, so no other
    acquire can slip in.  The target is busy with ACQUIRE until this returns.
    """
    adopt = _check_acquire(state, resources, adopt_orphans=adopt_orphans, orphans_only=orphans_only)
    keys = [(r.lockspace, r.name) for r in resources]
    target.cmd_active = Cmd.ACQUIRE
    generation = target.generation
    state.leases.reserve(keys)
    try:
        async with state.leases.disk_turn(keys):
            return await acquire_leases(
                state,
                target,
                resources,
                adopt,
                generation=generation,
                open_storage=open_storage,
                owner_name=owner_name,
                owner_nowait=owner_nowait,
                lvb=lvb,
            )
    finally:
        state.leases.unreserve(keys)
        target.cmd_active = 0
        target.cmd_last = Cmd.ACQUIRE


async def acquire_leases(
    state: DaemonState,
    target: ClientState,
    resources: list[Resource],
    adopt: dict[Key, Token],
    *,
    generation: int,
    open_storage: OpenStorage,
    owner_name: bytes,
    owner_nowait: bool = False,
    lvb: bool = False,
) -> list[Token]:
    """The disk work of an acquire, then its commit point; the caller holds the disk turn of every key.

    ``adopt`` maps the keys of orphans to adopt to those orphans (no disk
    work: they move at the commit point).  Returns the tokens taken on disk,
    now the target's.  Raises the disk work's :class:`LeaseError` (or a
    MemoryError from a fault point) after giving back everything this call
    took, and :class:`CommitRefused` when the target exited (its generation
    changed) or an orphan to adopt went away meanwhile.
    """
    taken: list[Token] = []
    try:
        for resource in resources:
            key = (resource.lockspace, resource.name)
            if key in adopt:
                continue  # adopting an orphan needs no disk I/O; it is moved at the commit point
            joined = state.leases.shared_hold(key) if resource.shared else None
            if joined is not None:
                # This host already holds it shared on disk (one mode block for all its local
                # holders): join that hold without touching the disk.  A second paxos round here
                # would rewrite our host sector, and a failed one would blank the mode block the
                # other local holders rely on (found by leased torture).
                lockspace, lease, lvb_enabled = joined.lockspace, joined.lease, False
            else:
                found = state.find_lockspace(resource.lockspace)
                if found is None or not found.usable or found.lease is None:
                    raise LeaseError(ResultCode.ENOSPC, f"lockspace {_name(resource.lockspace)} not joined")
                lockspace = found
                storage = open_lease_storage(open_storage, resource.disks[0].path, ResultCode.ENOENT)
                try:
                    lease = await paxos_lease.acquire(
                        resource_area(storage, resource, lockspace),
                        lockspace.host_id,
                        lockspace.host_generation,
                        shared=resource.shared,
                        lver=resource.lver if resource.flags & RES_LVER else 0,
                        view=lockspace.view(),
                        num_hosts=resource.data32 if resource.flags & RES_NUM_HOSTS else None,
                        owner_nowait=owner_nowait,
                        read_lvb_data=lvb,
                        io_timeout=lockspace.io_timeout,
                        clock=lockspace.clock,
                    )
                except BaseException:
                    storage.close()
                    raise
                lvb_enabled = lvb
            # Held on disk from here on: into `taken` before anything else can fail, so a failure
            # below (the fault point stands for any allocation) gives this lease back too.
            taken.append(
                Token(
                    resource=Resource(
                        resource.lockspace, resource.name, flags=resource.flags, num_disks=1, disks=resource.disks
                    ),
                    lockspace=lockspace,
                    lease=lease,
                    client_id=target.ci,
                    client_generation=generation,
                    persistent=bool(resource.flags & RES_PERSISTENT),
                    lvb_enabled=lvb_enabled,
                )
            )
            state.faultpoints.check("acquire.prepare")
        state.faultpoints.check("acquire.commit")
    except BaseException:
        # Nothing was attached yet: give back what this call took; the client is as it was.
        await _give_back(state.leases, taken)
        raise

    # commit: the target must still be the same live process
    if target.dead or target.generation != generation:
        await _give_back(state.leases, taken)
        raise CommitRefused(ResultCode.ENOTTY, f"target pid {target.pid} exited during acquire")
    for orphan in adopt.values():
        if not orphan.orphan or orphan not in state.leases.held.get(orphan.key, []):
            await _give_back(state.leases, taken)
            raise CommitRefused(ResultCode.ENOENT, f"orphan {_name(orphan.key[1])} went away during the acquire")
    state.leases.attach(taken)
    target.tokens.extend(taken)
    for orphan in adopt.values():
        orphan.orphan, orphan.client_id, orphan.client_generation = False, target.ci, generation
        target.tokens.append(orphan)
        log.info("adopted orphan %s:%s for pid %d", _name(orphan.key[0]), _name(orphan.key[1]), target.pid)
    if owner_name or not target.name or target.name == str(target.pid).encode():
        target.name = owner_name
    for token in taken:
        log.info("acquired %s:%s lver %d for pid %d", _name(token.key[0]), _name(token.key[1]), token.lver, target.pid)
    return taken


async def _give_back(table: LeaseTable, taken: list[Token]) -> None:
    """Release on disk what a failed acquire took before its commit point; not cancellable half way.

    The acquire holds the disk turn of these keys; shared holds other local
    clients rely on stay on disk.
    """
    with trio.CancelScope(shield=True):
        for token in taken:
            await release_unless_shared_on(table, token)


async def release_token(state: DaemonState, client: ClientState, token: Token, *, rename: bytes | None = None) -> int:
    """Detach a token from its client and the table, then release it on disk.

    Returns 0 or the negative result code of the release on disk (already
    logged); the token is let go either way.  Anything that can fail before
    the detach (a MemoryError from the ``release.prepare`` fault point,
    raised as it is) leaves the token where it was: the client still holds
    the lease and may ask again.
    """
    state.faultpoints.check("release.prepare")
    state.leases.releasing.add(token.key)
    try:
        # Detach inside the disk turn: whether other local shared holders remain is decided
        # there, so of two holders releasing at once exactly one (the last) writes the disk.
        async with state.leases.disk_turn([token.key]):
            if token in client.tokens:
                client.tokens.remove(token)
            if token not in state.leases.held.get(token.key, []):
                return 0  # already let go by another path (the client's exit) while we waited
            state.leases.detach(token)
            return await release_unless_shared_on(state.leases, token, rename=rename)
    finally:
        if not state.leases.held.get(token.key):
            state.leases.releasing.discard(token.key)


async def release_leases(
    state: DaemonState, target: ClientState, keys: list[Key] | None, *, rename: bytes | None = None
) -> int:
    """RELEASE: let go of the target's leases of ``keys`` (None: all of them).

    A key the target does not hold is logged and makes the result -EPERM;
    the others are released anyway.  Returns 0, -EPERM or the first failed
    release's code.
    """
    if keys is None:
        chosen = list(target.tokens)
        missing: list[bytes] = []
    else:
        chosen, missing = [], []
        for key in keys:
            token = next((t for t in target.tokens if t.key == key), None)
            if token is None:
                missing.append(key[1])
            elif token not in chosen:
                chosen.append(token)
    result = 0
    for name in missing:
        log.error("cmd_release ci %d pid %d no resource %s", target.ci, target.pid, _name(name))
        result = ResultCode.EPERM
    for token in chosen:
        rc = await release_token(state, target, token, rename=rename)
        result = result or rc
    return result


async def release_orphans(state: DaemonState, lockspace_name: bytes, resource_name: bytes) -> int:
    """Release on disk the orphans of a lockspace (of one resource, unless ``resource_name`` is empty).

    Returns how many there were; one let go meanwhile by another path is skipped.
    """
    orphans = state.leases.orphans(lockspace_name, resource_name)
    for orphan in orphans:
        async with state.leases.disk_turn([orphan.key]):
            if orphan in state.leases.held.get(orphan.key, []):
                state.leases.detach(orphan)
                await release_unless_shared_on(state.leases, orphan)
    return len(orphans)


async def convert_lease(state: DaemonState, target: ClientState, key: Key, *, to_shared: bool) -> None:
    """Switch a lease the target holds to shared or exclusive, on disk, inside its disk turn.

    Refuses a lease not held (:class:`~leased.errors.Refused`), one already
    in that mode, and an exclusive conversion while another local client
    holds or is getting the lease (:class:`~leased.errors.QuietRefusal`).
    """
    token = next((t for t in target.tokens if t.key == key), None)
    if token is None:
        raise Refused(ResultCode.ENOENT, f"convert: {_name(key[1])} not held")
    if token.shared == to_shared:
        raise QuietRefusal(ResultCode.EALREADY, f"convert: {_name(key[1])} already in that mode")
    target.cmd_active = Cmd.CONVERT
    try:
        async with state.leases.disk_turn([token.key]):
            # Checked inside the turn: a local shared acquire waiting for it has already reserved the key.
            others = any(t is not token for t in state.leases.held.get(token.key, []))
            if not to_shared and (others or token.key in state.leases.acquiring):
                # another local client holds it shared, or is getting it
                raise QuietRefusal(ResultCode.EAGAIN, f"convert: {_name(key[1])} is shared here")
            await paxos_lease.convert(
                token.lease, to_shared=to_shared, view=token.lockspace.view(), clock=token.lockspace.clock
            )
    finally:
        target.cmd_active = 0
    flags = (token.resource.flags | RES_SHARED) if to_shared else (token.resource.flags & ~RES_SHARED)
    token.resource = Resource(
        token.resource.lockspace, token.resource.name, flags=flags, num_disks=1, disks=token.resource.disks
    )


async def request_lease(
    state: DaemonState, resource: Resource, force_mode: int, *, next_lver: bool, open_storage: OpenStorage
) -> None:
    """Ask the holder of a lease to give it up (wire spec §5.13, on-disk spec §7.10).

    Writes the request record, then flags the owner in our bitmap so its
    daemon reads it.
    """
    lockspace = state.find_lockspace(resource.lockspace)
    if lockspace is None or not lockspace.usable or lockspace.lease is None:
        raise Refused(ResultCode.ENOSPC, f"request: lockspace {_name(resource.lockspace)} not joined")
    with lease_storage(open_storage, resource.disks[0].path, ResultCode.ENOENT) as storage:
        area = resource_area(storage, resource, lockspace)
        owner = await paxos_lease.write_request(
            area, resource.lver, force_mode, lockspace.io_timeout, next_lver=next_lver
        )
    if owner:
        lockspace.flag_host(owner)


async def release_client(state: DaemonState, client: ClientState) -> None:
    """A registered connection closed: its process is gone; release its leases (wire spec §7.2)."""
    client.dead = True
    for token in list(client.tokens):
        for attempt in range(1, EXIT_RELEASE_ATTEMPTS + 1):
            try:
                await _let_go(state, client, token)
                break
            except MemoryError:
                name = _name(token.key[1])
                log.error("pid %d exit: %s: allocation failure (attempt %d)", client.pid, name, attempt)
                await trio.sleep(0.05 * attempt)
        else:
            # Never drop a lease silently: keep it visible and releasable (release -o) as an orphan.
            if token in client.tokens:
                client.tokens.remove(token)
            token.orphan, token.client_id = True, 0
            log.critical("pid %d exit: %s could not be released; kept as an orphan", client.pid, _name(token.key[1]))


EXIT_RELEASE_ATTEMPTS = 5
"""Tries per lease to let go of a closed client's lease (allocation failure) before keeping it as an orphan."""


async def _let_go(state: DaemonState, client: ClientState, token: Token) -> None:
    """One lease of a closed client: persistent ones become orphans, the others are released."""
    if token.persistent and token.lockspace.usable:
        state.faultpoints.check("orphan.move")
        client.tokens.remove(token)
        token.orphan, token.client_id = True, 0
        log.info("pid %d exit: %s kept as an orphan", client.pid, _name(token.key[1]))
        return
    rc = await release_token(state, client, token)
    log.info("pid %d exit: released %s rc %d", client.pid, _name(token.key[1]), rc)
