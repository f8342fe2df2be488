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
  still the same live process and every lockspace is still joined and
  renewing (one that failed or was left meanwhile has fenced its holders
  already, and this client was none of them); any failure before that, a
  refused lease, a failed I/O, an allocation failure at a fault point or a
  cancellation, gives back what this call took and leaves the client, and
  every other client, exactly as they were.  A release fails, if at all, before it
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
) -> tuple[dict[Key, Token], dict[Key, Token]]:
    """An acquire's checks before any disk work.

    Returns the orphans to adopt and the local shared holds to join (a
    holder of each), by key.
    """
    keys = [(r.lockspace, r.name) for r in resources]
    adopt: dict[Key, Token] = {}
    join: dict[Key, Token] = {}
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
        holder = state.leases.shared_hold(key) if resource.shared else None
        if holder is not None:
            join[key] = holder
    if len(set(keys)) != len(keys):
        raise Refused(ResultCode.EINVAL, "the same resource twice in one acquire")
    return adopt, join


def _join(state: DaemonState, target: ClientState, resource: Resource, holder: Token, generation: int) -> Token:
    """A token sharing ``holder``'s on-disk hold, attached to the table at once (sanlock's "add shared").

    Attached before anything awaits, so this host's hold cannot be released
    under it; it becomes the target's at the acquire's commit point, or is let
    go again (:func:`_let_go_of_joined`) if the acquire fails.
    """
    token = Token(
        resource=Resource(resource.lockspace, resource.name, flags=resource.flags, num_disks=1, disks=resource.disks),
        lockspace=holder.lockspace,
        lease=holder.lease,
        client_id=target.ci,
        client_generation=generation,
        persistent=bool(resource.flags & RES_PERSISTENT),
    )
    state.leases.attach([token])
    return token


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
    have none.  A shared request meeting this host's shared hold joins it
    there and then, with no disk I/O and no reservation (sanlock 3.8's
    ``acquire_token`` "add shared"); the other keys are reserved (-EBUSY for
    other local acquires) and taken on disk.  No await between the checks, the
    joins and the reservation, so no other acquire or release can slip in.
    The target is busy with ACQUIRE until this returns.
    """
    adopt, join = _check_acquire(state, resources, adopt_orphans=adopt_orphans, orphans_only=orphans_only)
    target.cmd_active = Cmd.ACQUIRE
    generation = target.generation
    joined = [
        _join(state, target, r, join[(r.lockspace, r.name)], generation)
        for r in resources
        if (r.lockspace, r.name) in join
    ]
    keys = [(r.lockspace, r.name) for r in resources if (r.lockspace, r.name) not in join]
    state.leases.reserve(keys)
    try:
        try:
            async with state.leases.disk_turn(keys):
                return await acquire_leases(
                    state,
                    target,
                    resources,
                    adopt,
                    joined=joined,
                    generation=generation,
                    open_storage=open_storage,
                    owner_name=owner_name,
                    owner_nowait=owner_nowait,
                    lvb=lvb,
                )
        finally:
            state.leases.unreserve(keys)
    except BaseException:
        # outside the other keys' disk turns: giving a joined hold back takes its own turn
        with trio.CancelScope(shield=True):
            for token in joined:
                await _release_held(state.leases, token)
        raise
    finally:
        target.cmd_active = 0
        target.cmd_last = Cmd.ACQUIRE


async def acquire_leases(
    state: DaemonState,
    target: ClientState,
    resources: list[Resource],
    adopt: dict[Key, Token],
    *,
    joined: list[Token] | None = None,
    generation: int,
    open_storage: OpenStorage,
    owner_name: bytes,
    owner_nowait: bool = False,
    lvb: bool = False,
) -> list[Token]:
    """The disk work of an acquire, then its commit point; the caller holds the disk turn of every key.

    ``adopt`` maps the keys of orphans to adopt to those orphans (no disk
    work: they move at the commit point); ``joined`` are tokens already in
    the table sharing a local shared hold (:func:`_join`), the target's at
    the commit point and the caller's to give back on failure.  Returns the
    tokens taken on disk and joined, now the target's.  Raises the disk work's :class:`LeaseError` (or a
    MemoryError from a fault point) after giving back everything this call
    took, and :class:`CommitRefused` when the target exited (its generation
    changed), an orphan to adopt went away or a lockspace failed or was left
    meanwhile (-ENOSPC).  A disk failure caused by the lockspace's going (its
    storage closed under the owner check) is -ENOSPC too, as for an acquire
    that came after it, not the closed handle's -EBADF.
    """
    taken: list[Token] = []
    joined = joined or []
    joined_keys = {token.key for token in joined}
    lockspace: JoinedLockspace | None = None
    try:
        for resource in resources:
            key = (resource.lockspace, resource.name)
            if key in adopt or key in joined_keys:
                continue  # no disk I/O: an orphan moves at the commit point, a joined hold is in the table
            # This host holds no hold of it to join (the checks joined those): a paxos round.
            # Joining matters: a second round would rewrite our host sector, and a failed one would
            # blank the mode block the other local holders rely on (found by leased torture).
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
                    lvb_enabled=lvb,
                )
            )
            state.faultpoints.check("acquire.prepare")
        state.faultpoints.check("acquire.commit")
    except BaseException as exc:
        # Nothing was attached yet: give back what this call took; the client is as it was.
        await _give_back(state.leases, taken)
        if isinstance(exc, LeaseError) and lockspace is not None and not _still_joined(state, lockspace):
            # Its failure is the lockspace's going (its storage closed under the owner check, say):
            # answer what an acquire that came after would hear.
            raise Refused(
                ResultCode.ENOSPC, f"lockspace {_name(lockspace.name)} failed or was left during the acquire: {exc}"
            ) from exc
        raise

    # commit: the target must still be the same live process
    if target.dead or target.generation != generation:
        await _give_back(state.leases, taken)
        raise CommitRefused(ResultCode.ENOTTY, f"target pid {target.pid} exited during acquire")
    # ... and every lockspace still joined and renewing.  One that failed or was left while the
    # disk work ran has fenced its holders already, and this client was none of them: attached
    # now, it would hold a lease no renewal covers, which other hosts take once our host id
    # looks dead (sanlock's cmd_acquire checks the same before it hands the tokens over).
    for token in (*taken, *joined, *adopt.values()):
        if not _still_joined(state, token.lockspace):
            await _give_back(state.leases, taken)
            raise CommitRefused(
                ResultCode.ENOSPC, f"lockspace {_name(token.key[0])} failed or was left during the acquire"
            )
    for orphan in adopt.values():
        if not orphan.orphan or orphan not in state.leases.held.get(orphan.key, []):
            await _give_back(state.leases, taken)
            raise CommitRefused(ResultCode.ENOENT, f"orphan {_name(orphan.key[1])} went away during the acquire")
    state.leases.attach(taken)
    target.tokens.extend(taken)
    target.tokens.extend(joined)
    for orphan in adopt.values():
        orphan.orphan, orphan.client_id, orphan.client_generation = False, target.ci, generation
        target.tokens.append(orphan)
        log.info("adopted orphan %s:%s for pid %d", _name(orphan.key[0]), _name(orphan.key[1]), target.pid)
    if owner_name or not target.name or target.name == str(target.pid).encode():
        target.name = owner_name
    for token in taken:
        log.info("acquired %s:%s lver %d for pid %d", _name(token.key[0]), _name(token.key[1]), token.lver, target.pid)
    for token in joined:
        log.info("acquired %s:%s shared for pid %d: joined this host's hold", *map(_name, token.key), target.pid)
    return [*taken, *joined]


def _still_joined(state: DaemonState, lockspace: JoinedLockspace) -> bool:
    """Whether ``lockspace`` is still joined and renewing: not failed, not being left, not replaced."""
    return lockspace.usable and lockspace in state.lockspaces


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
    return await _release_held(state.leases, token, client, rename=rename)


async def _release_held(
    table: LeaseTable, token: Token, client: ClientState | None = None, *, rename: bytes | None = None
) -> int:
    """Detach a token from the table (and its client) and release it on disk if it was this host's last holder.

    As sanlock 3.8's ``_release_token``: only the last local holder's release
    is a release in progress (local acquires answer -EAGAIN until its disk
    write is done); one of several shared holders leaving writes nothing, and
    the hold stays joinable.  Detached inside the disk turn, so of two holders
    releasing at once exactly one (the last) writes the disk; marked in the
    same step as it turns out to be the last, with no await between.
    """
    releasing = table.is_last_holder(token)
    if releasing:
        table.begin_release(token.key)
    try:
        async with table.disk_turn([token.key]):
            if client is not None and token in client.tokens:
                client.tokens.remove(token)
            if token not in table.held.get(token.key, []):
                return 0  # already let go by another path (the client's exit) while we waited
            table.detach(token)
            if not releasing and not table.held.get(token.key):
                releasing = True
                table.begin_release(token.key)
            return await release_unless_shared_on(table, token, rename=rename)
    finally:
        if releasing:
            table.end_release(token.key)


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
            # Checked inside the turn, with no await before the reservation below.
            others = any(t is not token for t in state.leases.held.get(token.key, []))
            if not to_shared and (others or token.key in state.leases.acquiring):
                # Another local client holds it shared.  sanlock 3.8's convert_token does not
                # look: it converts (its ballot skips our own mode block) and leaves the other
                # local holders believing they share an exclusive lease; its later releases of
                # them fail with SANLK_ERROR.  leased refuses as it would for other hosts' holds.
                raise QuietRefusal(ResultCode.EAGAIN, f"convert: {_name(key[1])} is shared here")
            # A convert is a disk move of the one hold local clients share: no local acquire may
            # join it half converted (-EBUSY, as for an acquire in progress, until it is done).
            state.leases.reserve([token.key])
            try:
                await paxos_lease.convert(
                    token.lease, to_shared=to_shared, view=token.lockspace.view(), clock=token.lockspace.clock
                )
            finally:
                state.leases.unreserve([token.key])
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
