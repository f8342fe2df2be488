"""Resource leases held by local clients: the lease table and its moves.

A :class:`Token` is one lease one client holds.  The :class:`LeaseTable`
knows every token on this host, which keys are being acquired or released
(so a second local acquire gets -EBUSY or -EAGAIN instead of racing on disk),
and enforces sanlock's local rule: one holder for EX, any number for SH.

The local answers are sanlock 3.8's (``acquire_token`` and
``_release_token`` in its src/resource.c), checked in its order: a resource
being released on disk (its last local holder went) answers -EAGAIN, one
being acquired on disk -EBUSY; a shared request meeting this host's shared
hold joins it at once, with no disk I/O; any other local hold answers
-EEXIST.  A holder leaving while others stay is no release in progress: it
writes nothing, and the hold stays joinable.

Every move of a lease to an owner follows *prepare, then commit*: an acquire
reserves its keys and does all disk work first, and only when everything is
in hand attaches the tokens to the client in one step.  A failure before that
point releases what this call took and leaves the client, and every other
client, exactly as they were (the HAProxy takeover race).  Tokens carry the
client's generation at commit time, so a late completion for a client that
died and whose slot or pid was reused is recognised and discarded.  The
transactions that make these moves for a client (acquire, release, a closed
client's leases) are :mod:`leased.transactions`'.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from leased import paxos_lease
from leased.errors import LeaseError, Refused, ResultCode
from leased.lockspace import JoinedLockspace, LockspaceState
from leased.paxos_lease import PaxosLease
from leased.protocol import Resource

log = logging.getLogger(__name__)

_token_ids = itertools.count(1)

Key = tuple[bytes, bytes]
"""(lockspace name, resource name): how leases are matched, as in sanlock."""


@dataclass
class Token:
    """One lease held by one client."""

    resource: Resource
    lockspace: JoinedLockspace
    lease: PaxosLease
    client_id: int
    client_generation: int
    persistent: bool = False
    lvb_enabled: bool = False
    orphan: bool = False
    """A persistent lease whose process exited: still held here and on disk, adoptable (ACQUIRE_ORPHAN)."""
    token_id: int = field(default_factory=lambda: next(_token_ids))

    @property
    def key(self) -> Key:
        return (self.resource.lockspace, self.resource.name)

    @property
    def shared(self) -> bool:
        return self.lease.shared

    @property
    def lver(self) -> int:
        return self.lease.lver


class LeaseTable:
    """Every lease held on this host, plus the keys with a move in progress."""

    def __init__(self) -> None:
        self.held: dict[Key, list[Token]] = {}
        self.acquiring: set[Key] = set()
        self.releasing: dict[Key, int] = {}
        """Keys whose last local holder is being released on disk, with how many such releases run."""
        self._disk_locks: dict[Key, trio.Lock] = {}

    @asynccontextmanager
    async def disk_turn(self, keys: Iterable[Key]) -> AsyncIterator[None]:
        """This host's disk work on these resources, one operation at a time.

        Several local clients may hold one resource shared, and they share
        this host's one mode block on disk.  So an acquire (disk work, then
        commit) and a release (decide whether we are the last local holder,
        then write) of the same resource must not interleave: a release that
        cleared the mode block while a shared acquire was between its disk
        write and its commit would leave that client holding a lease no
        other host can see (found by ``leased torture``).  Keys are locked in
        sorted order, so two multi-resource operations cannot deadlock.  A
        lock lives only while somebody uses it: memory stays bounded by the
        operations in flight, not by every name ever seen.
        """
        async with AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                lock = self._disk_locks.setdefault(key, trio.Lock())
                stack.push_async_callback(self._forget_lock, key, lock)
                await stack.enter_async_context(lock)
            yield

    async def _forget_lock(self, key: Key, lock: trio.Lock) -> None:
        if not lock.locked() and lock.statistics().tasks_waiting == 0 and self._disk_locks.get(key) is lock:
            del self._disk_locks[key]

    def tokens(self) -> Iterable[Token]:
        for tokens in self.held.values():
            yield from tokens

    def conflict(self, key: Key, shared: bool) -> int:
        """The local refusal for acquiring ``key`` now, or 0 (wire spec §5.7); sanlock's order of checks."""
        if key in self.releasing:
            return ResultCode.EAGAIN
        if key in self.acquiring:
            return ResultCode.EBUSY
        holders = self.held.get(key, [])
        if any(t.orphan for t in holders):
            return ResultCode.EUCLEAN
        if holders and not (shared and all(t.shared for t in holders)):
            return ResultCode.EEXIST
        return 0

    def shared_hold(self, key: Key) -> Token | None:
        """A live local shared holder of ``key`` whose on-disk hold a new shared holder can join."""
        return next((t for t in self.held.get(key, []) if t.shared and not t.orphan), None)

    def orphan(self, key: Key) -> Token | None:
        return next((t for t in self.held.get(key, []) if t.orphan), None)

    def orphans(self, lockspace_name: bytes, resource_name: bytes = b"") -> list[Token]:
        return [
            t for t in self.tokens() if t.orphan and t.key[0] == lockspace_name and resource_name in (b"", t.key[1])
        ]

    def reserve(self, keys: list[Key]) -> None:
        self.acquiring.update(keys)

    def unreserve(self, keys: list[Key]) -> None:
        self.acquiring.difference_update(keys)

    def begin_release(self, key: Key) -> None:
        """This host's hold of ``key`` is being released on disk: local acquires answer -EAGAIN until it ends."""
        self.releasing[key] = self.releasing.get(key, 0) + 1

    def end_release(self, key: Key) -> None:
        left = self.releasing.get(key, 0) - 1
        if left > 0:
            self.releasing[key] = left
        else:
            self.releasing.pop(key, None)

    def is_last_holder(self, token: Token) -> bool:
        return self.held.get(token.key) == [token]

    def attach(self, tokens: list[Token]) -> None:
        """The commit point of an acquire."""
        for token in tokens:
            self.held.setdefault(token.key, []).append(token)

    def detach(self, token: Token) -> None:
        holders = self.held.get(token.key, [])
        if token in holders:
            holders.remove(token)
        if not holders:
            self.held.pop(token.key, None)

    def in_lockspace(self, lockspace: JoinedLockspace) -> list[Token]:
        return [t for t in self.tokens() if t.lockspace is lockspace]

    def find_held(self, key: Key) -> Token | None:
        holders = self.held.get(key)
        return holders[0] if holders else None

    def set_lvb(self, key: Key, data: bytes) -> None:
        """SET_LVB: keep ``data`` as the lease's value block, written to disk with its release.

        Refused (and nothing kept) for a lease not held here, one acquired
        without ACQUIRE_LVB, and data longer than a sector.
        """
        token = self._lvb_token("set_lvb", key)
        if not token.lvb_enabled:
            raise Refused(ResultCode.EINVAL, "set_lvb: lease acquired without ACQUIRE_LVB")
        if len(data) > token.lease.area.sector_size:
            raise Refused(ResultCode.E2BIG, f"set_lvb: {len(data)} bytes exceed the sector")
        token.lease.lvb = data.ljust(token.lease.area.sector_size, b"\0")
        token.lease.lvb_dirty = True

    def get_lvb(self, key: Key, size: int) -> bytes:
        """GET_LVB: the first ``size`` bytes (0: all) of the lease's value block; refused as :meth:`set_lvb`."""
        token = self._lvb_token("get_lvb", key)
        if not token.lvb_enabled or token.lease.lvb is None:
            raise Refused(ResultCode.EINVAL, "get_lvb: lease acquired without ACQUIRE_LVB")
        return token.lease.lvb[: size or token.lease.area.sector_size]

    def _lvb_token(self, action: str, key: Key) -> Token:
        token = self.find_held(key)
        if token is None:
            raise Refused(ResultCode.ENOENT, f"{action}: {key[1].decode(errors='replace')} not held here")
        return token


async def release_on_disk(token: Token, *, rename: bytes | None = None) -> int:
    """Release a token's lease on disk; returns 0 or the error code (the token is gone either way).

    A lockspace that failed or is being removed gets no disk write: its
    leases must stay owned on disk until other hosts see the host dead.
    """
    lease = token.lease
    try:
        if token.lockspace.state is not LockspaceState.JOINED or token.lockspace.renewal_fail:
            log.info("lockspace failing or leaving: lease %s not released on disk", token.resource.name)
            return 0
        await paxos_lease.release(lease, rename=rename.decode() if rename else None)
        return 0
    except LeaseError as exc:
        log.error("release of %s failed: %s", token.resource.name.decode(errors="replace"), exc)
        return exc.rc
    finally:
        lease.area.storage.close()


async def release_unless_shared_on(table: LeaseTable, token: Token, *, rename: bytes | None = None) -> int:
    """Release a detached token on disk, unless other local holders still rely on this host's hold.

    Shared holders of one resource on one host are one mode block on disk:
    only the last of them to go clears it.  The caller holds the resource's
    :meth:`LeaseTable.disk_turn`.
    """
    others = table.held.get(token.key, [])
    if token.shared and others:
        log.debug("%s: other local shared holders remain; nothing to release on disk", token.resource.name)
        if not any(other.lease is token.lease for other in others):
            token.lease.area.storage.close()  # its own handle, not the one the others share
        return 0
    return await release_on_disk(token, rename=rename)
