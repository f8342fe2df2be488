"""Ownership transactions: moving resource leases to a client and taking them back.

This module owns the three moves that change who holds a lease on this host:

* :func:`acquire_leases`, an acquire's disk work and its commit point;
* :func:`release_token`, one lease let go by its client (RELEASE, or a
  closing client);
* :func:`release_client`, every lease of a registered process that is gone.

They are functions of plain arguments (the daemon state, the client, the
resources, the options, the ``open_storage`` seam, the client's
generation) that return what they did or raise
:class:`~leased.errors.LeaseError` with the result code and a sentence.
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
from collections.abc import Callable

import trio

from leased import paxos_lease
from leased.areas import ResourceArea
from leased.errors import LeaseError, ResultCode
from leased.geometry import request_geometry
from leased.lockspace import JoinedLockspace
from leased.ondisk import encode_name
from leased.protocol import RES_LVER, RES_NUM_HOSTS, RES_PERSISTENT, Resource
from leased.resource import Key, LeaseTable, Token, release_unless_shared_on
from leased.state import ClientState, DaemonState
from leased.storage import Storage

log = logging.getLogger(__name__)

OpenStorage = Callable[[str], Storage]
"""The daemon's ``open_storage`` seam: a lease file's path to an open storage handle."""


def _name(name: bytes) -> str:
    return name.decode(errors="replace")


def open_lease_storage(open_storage: OpenStorage, path: str, missing_rc: int = ResultCode.ENODEV) -> Storage:
    """Open lease storage through the seam; a missing file is ``missing_rc`` (commands differ on it)."""
    if not path:
        raise LeaseError(missing_rc, "empty path")
    try:
        return open_storage(path)
    except LeaseError as exc:
        raise LeaseError(missing_rc if exc.rc == ResultCode.ENOENT else exc.rc, exc.detail) from exc


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


class CommitRefused(LeaseError):
    """An acquire's disk work succeeded but its commit point refused: what it took has been given back."""


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
