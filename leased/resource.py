"""Resource leases held by local clients: the lease table and its moves.

A :class:`Token` is one lease one client holds.  The :class:`LeaseTable`
knows every token on this host, which keys are being acquired or released
(so a second local acquire gets -EBUSY or -EAGAIN instead of racing on disk),
and enforces sanlock's local rule: one holder for EX, any number for SH.

Every move of a lease to an owner follows *prepare, then commit*: an acquire
reserves its keys and does all disk work first, and only when everything is
in hand attaches the tokens to the client in one step.  A failure before that
point releases what this call took and leaves the client, and every other
client, exactly as they were (the HAProxy takeover race).  Tokens carry the
client's generation at commit time, so a late completion for a client that
died and whose slot or pid was reused is recognised and discarded.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from leased import paxos_lease
from leased.errors import LeaseError, ResultCode
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
        self.releasing: set[Key] = set()

    def tokens(self) -> Iterable[Token]:
        for tokens in self.held.values():
            yield from tokens

    def conflict(self, key: Key, shared: bool) -> int:
        """The local refusal for acquiring ``key`` now, or 0 (wire spec §5.7)."""
        if key in self.acquiring:
            return ResultCode.EBUSY
        if key in self.releasing:
            return ResultCode.EAGAIN
        holders = self.held.get(key, [])
        if any(t.orphan for t in holders):
            return ResultCode.EUCLEAN
        if holders and not (shared and all(t.shared for t in holders)):
            return ResultCode.EEXIST
        return 0

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
