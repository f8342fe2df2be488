"""Disk Paxos ballot steps as pure functions of records (on-disk spec §6.4, §7).

Everything here decides from records already read, and does no I/O: the
leader ``init -r`` writes, our first ballot number for an instance
(:func:`choose_mbal`), the scan of every host's block after a phase
(:func:`scan_blocks`, which raises :class:`BallotAborted` when another host
is ahead), the leader that makes the chosen value official
(:func:`commit_record`), and the block we own for a lease another host
committed on our behalf (:func:`block_for`).

:mod:`leased.paxos_lease` drives these steps over storage: it reads, calls
in here, and writes what comes back.  Apart, the rules of a ballot can be
tested exhaustively without a disk (``tests/test_paxos_steps.py``), and the
drivers stay about ordering I/O and handling its failures.
"""

from __future__ import annotations

from collections.abc import Iterable

from leased.constants import LFL_SHORT_HOLD, MBLOCK_SHARED, PAXOS_DISK_CLEAR, PAXOS_DISK_MAGIC, PAXOS_DISK_VERSION
from leased.errors import ResultCode
from leased.geometry import Geometry
from leased.ondisk import Dblock, Leader, ModeBlock, encode_name


class BallotAborted(Exception):
    """A ballot met a higher ballot or a later instance (-212/-213)."""

    def __init__(self, rc: int) -> None:
        self.rc = rc


def new_resource_leader(
    space_name: str | bytes,
    resource_name: str | bytes,
    geometry: Geometry,
    num_hosts: int = 0,
    clear: bool = False,
    write_timestamp: int = 0,
) -> Leader:
    """The leader ``init -r`` writes (§6.4); ``clear`` makes the lease unusable."""
    max_hosts = geometry.max_hosts
    return Leader(
        magic=PAXOS_DISK_CLEAR if clear else PAXOS_DISK_MAGIC,
        version=PAXOS_DISK_VERSION,
        flags=geometry.align_flag,
        sector_size=geometry.sector_size,
        num_hosts=num_hosts if 1 <= num_hosts <= max_hosts else max_hosts,
        max_hosts=max_hosts,
        owner_id=0,
        owner_generation=0,
        lver=0,
        space_name=encode_name(space_name),
        resource_name=encode_name(resource_name),
        timestamp=0,
        unused1=0,
        checksum=0,
        unused2=0,
        io_timeout=0,
        write_id=0,
        write_generation=0,
        write_timestamp=write_timestamp,
    ).sealed()


def choose_mbal(max_mbal: int, max_hosts: int, host_id: int) -> int:
    """Our first ballot number for an instance (§7.3): congruent to host_id mod max_hosts."""
    if max_mbal == 0:
        return host_id
    return (max_mbal - max_mbal % max_hosts) + max_hosts + host_id


def scan_blocks(
    blocks: Iterable[tuple[int, Dblock, ModeBlock]], next_lver: int, our_mbal: int
) -> tuple[Dblock | None, set[int]]:
    """One phase's read of all blocks (§7.5 step 2): the best accepted block and SH holders.

    Raises :class:`BallotAborted` for a block of a later instance or a higher ballot.
    """
    best: Dblock | None = None
    shared: set[int] = set()
    for slot, block, mode in blocks:
        if not block.checksum_ok():
            continue
        if mode.flags & MBLOCK_SHARED:
            shared.add(slot + 1)
        if block.lver < next_lver:
            continue
        if block.lver > next_lver:
            raise BallotAborted(ResultCode.DBLOCK_LVER)
        if block.mbal > our_mbal:
            raise BallotAborted(ResultCode.DBLOCK_MBAL)
        if block.inp and block.bal and (best is None or block.bal > best.bal):
            best = block
    return best, shared


def commit_record(
    cur: Leader,
    next_lver: int,
    chosen: Dblock,
    host_id: int,
    generation: int,
    now: int,
    shared: bool,
    num_hosts: int | None,
) -> Leader:
    """The leader that makes the chosen value official (§7.7)."""
    flags = cur.flags
    if chosen.inp == host_id:
        flags = flags | LFL_SHORT_HOLD if shared else flags & ~LFL_SHORT_HOLD
    return cur.sealed(
        lver=next_lver,
        owner_id=chosen.inp,
        owner_generation=chosen.inp2,
        timestamp=chosen.inp3,
        write_id=host_id,
        write_generation=generation,
        write_timestamp=now,
        num_hosts=num_hosts if num_hosts else cur.num_hosts,
        flags=flags,
    )


def roundup_pow2(value: int) -> int:
    return 1 << (value - 1).bit_length()


def block_for(leader: Leader, host_id: int) -> Dblock:
    """Our block for a lease another host committed on our behalf (used on release)."""
    mbal = leader.max_hosts * (leader.lver + 1) + host_id
    return Dblock(
        mbal=mbal, bal=mbal, inp=host_id, inp2=leader.owner_generation, inp3=leader.timestamp, lver=leader.lver
    ).sealed()


def owner_of(leader: Leader) -> tuple[int, int] | None:
    """(owner_id, generation) if the leader says the lease is held, else None."""
    return (leader.owner_id, leader.owner_generation) if leader.timestamp else None
