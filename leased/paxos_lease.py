"""Resource leases: Disk Paxos on one disk (on-disk spec §6, §7).

Each lease version (``lver``) is one Paxos instance.  A host proposes itself
as owner of ``lver + 1`` with a ballot number congruent to its host_id
(§7.3), writes its block, reads everyone's, and aborts when it sees a higher
ballot or a later instance (§7.5).  The value chosen in phase 2 is written to
the leader (§7.7).  There is no renewal: the owner's delta lease stands in for
it, which is why taking a lease from another host needs that host's liveness
(§7.4), supplied by a :class:`LockspaceView`.

The pure steps (ballot number, the per-phase scan of blocks, the commit
record) are functions of records in :mod:`leased.paxos_steps`; here are the
async drivers :func:`acquire`, :func:`release` and :func:`convert`, and the
reads and writes of a resource area's records.

Safety rule for failures: any I/O error or timeout during a ballot or the
commit makes ``acquire`` raise, so
the caller never believes it holds a lease whose commit it did not see
complete.  After a phase-2 or commit failure our block is rewritten with
``RELEASED`` (best effort), so if another host later commits our proposal it
can still take the lease at once instead of waiting for us to die.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace

from leased.areas import LockspaceArea, ResourceArea
from leased.clock import DEFAULT_CLOCK, Clock, disk_timestamp
from leased.constants import (
    DBLOCK_FL_RELEASED,
    LFL_SHORT_HOLD,
    MBLOCK_SHARED,
    REQ_FORCE_NONE,
)
from leased.errors import LeaseError, ResultCode
from leased.geometry import DISCOVERY_READ_SIZE, Geometry, geometry_from_leader
from leased.host_status import HostStatusTable
from leased.ondisk import (
    BLANK_DBLOCK,
    BLANK_MODE_BLOCK,
    Dblock,
    Leader,
    ModeBlock,
    RequestRecord,
    decode_host_sector,
    encode_name,
    host_sector,
    leader_sector,
    used_host_sectors,
    verify_paxos_leader,
    verify_request,
)
from leased.paxos_steps import (
    BallotAborted,
    block_for,
    choose_mbal,
    commit_record,
    new_resource_leader,
    roundup_pow2,
    scan_blocks,
)
from leased.sparse import SparseRead
from leased.storage import StepFailed, Storage
from leased.timeouts import WRITE_INIT_IO_TIMEOUT, host_dead_seconds

log = logging.getLogger(__name__)

SH_RETRIES = 8
"""Shared acquires retry this often when they meet another host's short hold."""


@dataclass(frozen=True)
class LockspaceView:
    """What a paxos acquire needs to judge another owner: its delta leases and our table."""

    area: LockspaceArea
    io_timeout: int
    watchdog_fire_timeout: int
    table: HostStatusTable | None = None


@dataclass
class PaxosLease:
    """A resource lease we hold, with the records kept to release it safely."""

    area: ResourceArea
    host_id: int
    generation: int
    leader: Leader
    dblock: Dblock
    shared: bool
    io_timeout: int
    lvb: bytes | None = None
    lvb_dirty: bool = False
    released: bool = field(default=False)

    @property
    def lver(self) -> int:
        return self.leader.lver


class _Restart(Exception):
    """The leader changed under an acquire: start again from the initial read."""


# ---------------------------------------------------------------------------
# Reads and writes


async def init_resource(
    storage: Storage,
    offset: int,
    space_name: str | bytes,
    resource_name: str | bytes,
    geometry: Geometry,
    num_hosts: int = 0,
    clear: bool = False,
    now: int = 0,
) -> None:
    """Write a fresh resource area in one I/O (§6.4)."""
    leader = new_resource_leader(space_name, resource_name, geometry, num_hosts, clear, now if clear else 0)
    image = bytearray(geometry.align_size)
    sector = geometry.sector_size
    image[:sector] = leader_sector(leader, sector)
    image[sector : 2 * sector] = bytes(RequestRecord().encode()).ljust(sector, b"\0")
    await storage.write(offset, bytes(image), WRITE_INIT_IO_TIMEOUT)


async def discover_resource(
    storage: Storage, offset: int, space_name: str | bytes, resource_name: str | bytes, timeout: float
) -> ResourceArea:
    """Find a resource lease's geometry from its leader (§1.2)."""
    data = await storage.read(offset, DISCOVERY_READ_SIZE, timeout)
    leader = Leader.decode(data)
    area = ResourceArea(storage, offset, encode_name(space_name), encode_name(resource_name), Geometry(512, 1 << 20))
    verify_paxos_leader(leader, area.space_name, area.resource_name, 0, f"leader of {area.where()}")
    return area.with_geometry(geometry_from_leader(leader.sector_size, leader.flags))


async def read_resource_leader(
    storage: Storage,
    offset: int,
    space_name: bytes,
    resource_name: bytes,
    wanted: Geometry | None,
    timeout: float,
    *,
    geometry_first: bool,
) -> tuple[Leader, Geometry]:
    """Read and verify a resource leader and the geometry it records (READ_RESOURCE(_OWNERS)).

    Empty names accept the names on disk.  ``geometry_first``:
    READ_RESOURCE_OWNERS compares the caller's ALIGN/SECTOR flags
    (``wanted``) with the disk before anything else (-EINVAL, also for a
    blank area), READ_RESOURCE reports the leader's problem (-223 for a
    blank area), as sanlock 3.8.5 does.
    """
    leader = Leader.decode(await storage.read(offset, DISCOVERY_READ_SIZE, timeout))
    try:
        probed: Geometry | None = geometry_from_leader(leader.sector_size, leader.flags)
    except LeaseError:
        probed = None
    if geometry_first and wanted is not None and wanted != probed:
        raise LeaseError(ResultCode.EINVAL, f"requested geometry {wanted} differs from on-disk {probed}")
    space = encode_name(space_name) if space_name else leader.space_name
    name = encode_name(resource_name) if resource_name else leader.resource_name
    verify_paxos_leader(leader, space, name, 0, f"{storage.path}:{offset}")
    if probed is None:
        raise LeaseError(ResultCode.LEADER_SECTORSIZE, f"bad sector size {leader.sector_size} on disk")
    return leader, probed


async def read_shared_modes(
    storage: Storage, offset: int, leader: Leader, geometry: Geometry, timeout: float
) -> list[tuple[int, int]]:
    """(host_id, generation) of every host whose mode block says it holds the lease shared."""
    sector = geometry.sector_size
    area = await storage.read_sparse(offset, geometry.align_size, 2 * sector, sector, timeout)
    used = used_host_sectors(area, min(leader.num_hosts, geometry.sectors - 2))
    return [(slot + 1, mode.generation) for slot, _, mode in used if mode.flags & MBLOCK_SHARED]


async def read_leader(area: ResourceArea, host_id: int, timeout: float) -> Leader:
    """Read and verify the leader; I/O failure is LEADER_READ."""
    try:
        data = await area.storage.read(area.offset, area.sector_size, timeout)
    except LeaseError as exc:
        raise _leader_read_failed(exc) from exc
    return _verified_leader(area, host_id, data)


def _leader_read_failed(exc: LeaseError) -> LeaseError:
    return LeaseError(ResultCode.LEADER_READ if exc.rc != ResultCode.AIO_TIMEOUT else exc.rc, exc.detail)


def _verified_leader(area: ResourceArea, host_id: int, data: bytes) -> Leader:
    leader = Leader.decode(data)
    verify_paxos_leader(leader, area.space_name, area.resource_name, host_id, f"leader of {area.where()}")
    return leader


async def _read_area(area: ResourceArea, length: int, timeout: float) -> SparseRead:
    """The first ``length`` bytes of the area, kept sparse: leader and request sectors, then used host sectors."""
    sector = area.sector_size
    return await area.storage.read_sparse(area.offset, length, 2 * sector, sector, timeout)


async def _write_then_read_blocks(
    area: ResourceArea, host_id: int, dblock: Dblock, mode: ModeBlock, num_hosts: int, length: int, timeout: float
) -> list[tuple[int, Dblock, ModeBlock]]:
    """A phase of a ballot: our block written, then everyone's read (:meth:`Storage.write_then_read_sparse`)."""
    sector = area.sector_size
    try:
        read = await area.storage.write_then_read_sparse(
            area.host_offset(host_id),
            host_sector(dblock, mode, sector),
            area.offset,
            length,
            2 * sector,
            sector,
            timeout,
        )
    except StepFailed as exc:
        if exc.step == "write":
            raise LeaseError(ResultCode.DBLOCK_WRITE, f"writing block {host_id} of {area.where()}: {exc}") from exc
        raise LeaseError(ResultCode.DBLOCK_READ, f"reading blocks of {area.where()}: {exc}") from exc
    return used_host_sectors(read, min(num_hosts, length // sector - 2))


async def _write_host_sector(
    area: ResourceArea, host_id: int, dblock: Dblock, mode: ModeBlock, timeout: float, rc: int
) -> None:
    try:
        await area.storage.write(area.host_offset(host_id), host_sector(dblock, mode, area.sector_size), timeout)
    except LeaseError as exc:
        raise LeaseError(rc, f"writing block {host_id} of {area.where()}: {exc}") from exc


async def _write_leader(area: ResourceArea, leader: Leader, timeout: float) -> None:
    try:
        await area.storage.write(area.offset, leader_sector(leader, area.sector_size), timeout)
    except LeaseError as exc:
        raise LeaseError(ResultCode.LEADER_WRITE, f"writing leader of {area.where()}: {exc}") from exc


async def read_host_block(area: ResourceArea, host_id: int, timeout: float) -> tuple[Dblock, ModeBlock]:
    data = await area.storage.read(area.host_offset(host_id), area.sector_size, timeout)
    return decode_host_sector(data, 0)


async def read_lvb(area: ResourceArea, timeout: float) -> bytes:
    return await area.storage.read(area.lvb_offset, area.sector_size, timeout)


async def write_lvb(area: ResourceArea, data: bytes, timeout: float) -> None:
    if len(data) > area.sector_size:
        raise LeaseError(ResultCode.E2BIG, f"LVB of {len(data)} bytes exceeds sector size {area.sector_size}")
    await area.storage.write(area.lvb_offset, data.ljust(area.sector_size, b"\0"), timeout)


async def read_request(area: ResourceArea, timeout: float) -> RequestRecord:
    data = await area.storage.read(area.request_offset, area.sector_size, timeout)
    record = RequestRecord.decode(data)
    verify_request(record, f"request of {area.where()}")
    return record


async def write_request(
    area: ResourceArea, lver: int, force_mode: int, timeout: float, *, next_lver: bool = False
) -> int:
    """Ask the holder to give the lease up (§7.10, requester side).

    Returns the owner host_id the request is aimed at (0 when the lease is
    free and nothing was written); the caller sets that host's bitmap bit.
    """
    if lver == 0 and force_mode == REQ_FORCE_NONE and not next_lver:
        await read_request(area, timeout)
        await area.storage.write(area.request_offset, RequestRecord().encode().ljust(area.sector_size, b"\0"), timeout)
        return 0
    leader = await read_leader(area, 0, timeout)
    if leader.timestamp == 0:
        return 0
    if next_lver and lver == 0:
        lver = leader.lver + 1
    if leader.lver >= lver:
        raise LeaseError(
            ResultCode.REQUEST_OLD, f"request lver {lver} not above lease lver {leader.lver} of {area.where()}"
        )
    current = await read_request(area, timeout)
    if current.lver > lver:
        raise LeaseError(
            ResultCode.REQUEST_LVER, f"a request for lver {current.lver} > {lver} exists on {area.where()}"
        )
    record = RequestRecord(lver=lver, force_mode=force_mode)
    await area.storage.write(area.request_offset, record.encode().ljust(area.sector_size, b"\0"), timeout)
    return leader.owner_id


# ---------------------------------------------------------------------------
# Acquire


async def _owner_gone(
    area: ResourceArea,
    cur: Leader,
    host_id: int,
    view: LockspaceView | None,
    owner_nowait: bool,
    clock: Clock,
    io_timeout: int,
) -> None:
    """Wait until the owner named in ``cur`` is known gone (§7.4), or raise.

    Returns when the ballot may run; raises ACQUIRE_IDLIVE for a live owner,
    ACQUIRE_OWNED_RETRY with ``owner_nowait``, ACQUIRE_LOCKSPACE without a
    lockspace view, and :class:`_Restart` when the leader changes meanwhile.
    """
    if view is None:
        raise LeaseError(
            ResultCode.ACQUIRE_LOCKSPACE,
            f"{area.where()} is held by host {cur.owner_id}/{cur.owner_generation}; no lockspace to check it",
        )
    hs = view.table.hosts.get(cur.owner_id) if view.table else None
    if (
        hs
        and hs.last_check
        and hs.last_live
        and (hs.owner_id, hs.owner_generation) == (cur.owner_id, cur.owner_generation)
    ):
        wait_start, last_ts = hs.last_live, hs.timestamp
    else:
        wait_start, last_ts = clock.now(), 0
    while True:
        delta = await view.area.read_host(cur.owner_id, view.io_timeout)
        owner_io_timeout = (
            view.table.io_timeout_of(cur.owner_id) if view.table else (delta.io_timeout or view.io_timeout)
        )
        if delta.timestamp == 0:
            log.debug("owner %d left its lockspace; %s is free", cur.owner_id, area.where())
            return
        if delta.owner_id != cur.owner_id or delta.owner_generation > cur.owner_generation:
            log.debug("owner %d/%d has been replaced; %s is free", cur.owner_id, cur.owner_generation, area.where())
            return
        if last_ts == 0:
            last_ts = delta.timestamp
        elif delta.timestamp != last_ts or (hs is not None and hs.last_live and hs.last_check == hs.last_live):
            if cur.write_id != cur.owner_id:
                block, _ = await read_host_block(area, cur.owner_id, io_timeout)
                if block.flags & DBLOCK_FL_RELEASED:
                    return
            raise LeaseError(
                ResultCode.ACQUIRE_IDLIVE,
                f"{area.where()} is held by live host {cur.owner_id} generation {cur.owner_generation}",
            )
        elif clock.now() - wait_start > host_dead_seconds(owner_io_timeout, view.watchdog_fire_timeout):
            log.info("owner %d/%d of %s is dead; taking over", cur.owner_id, cur.owner_generation, area.where())
            return
        elif owner_nowait:
            raise LeaseError(ResultCode.ACQUIRE_OWNED_RETRY, f"{area.where()} owner {cur.owner_id} not yet known dead")
        await clock.sleep(1)
        again = await read_leader(area, host_id, io_timeout)
        if again != cur:
            raise _Restart()


async def _ballot(
    area: ResourceArea,
    host_id: int,
    generation: int,
    num_hosts: int,
    next_lver: int,
    mbal: int,
    our_mode: ModeBlock,
    clock: Clock,
    io_timeout: int,
) -> tuple[Dblock, set[int]]:
    """Both phases of one ballot (§7.5).  Returns our phase-2 block and SH holders seen."""
    length = min(roundup_pow2(num_hosts + 2) * area.sector_size, area.geometry.align_size)
    block = Dblock(mbal=mbal, lver=next_lver).sealed()
    blocks = await _write_then_read_blocks(area, host_id, block, our_mode, num_hosts, length, io_timeout)
    best, shared = scan_blocks(blocks, next_lver, mbal)
    if best is not None:
        block = block.sealed(inp=best.inp, inp2=best.inp2, inp3=best.inp3, bal=mbal)
    else:
        block = block.sealed(inp=host_id, inp2=generation, inp3=disk_timestamp(clock), bal=mbal)
    try:
        blocks = await _write_then_read_blocks(area, host_id, block, our_mode, num_hosts, length, io_timeout)
    except LeaseError:
        await _retract(area, host_id, block, our_mode, io_timeout)
        raise
    _, shared2 = scan_blocks(blocks, next_lver, mbal)
    return block, shared | shared2


async def _run_ballots(
    area: ResourceArea,
    cur: Leader,
    host_id: int,
    generation: int,
    next_lver: int,
    mbal: int,
    our_mode: ModeBlock,
    clock: Clock,
    io_timeout: int,
) -> tuple[Dblock, set[int]] | Leader:
    """Ballots until one completes (§7.6).

    Returns our phase-2 block and the SH holders seen, or the leader when
    another host committed *our* proposal for ``next_lver``.  Raises
    ACQUIRE_OWNED when it committed someone else, and :class:`_Restart` when
    the leader moved on.
    """
    while True:
        try:
            return await _ballot(area, host_id, generation, cur.num_hosts, next_lver, mbal, our_mode, clock, io_timeout)
        except BallotAborted as abort:
            log.debug("ballot aborted rc=%d mbal=%d %s", abort.rc, mbal, area.where())
        await clock.sleep(random.random())
        mbal += cur.max_hosts
        now_leader = await read_leader(area, host_id, io_timeout)
        if now_leader.lver == next_lver:
            if (now_leader.owner_id, now_leader.owner_generation) == (host_id, generation):
                return now_leader
            raise LeaseError(
                ResultCode.ACQUIRE_OWNED, f"{area.where()} lver {next_lver} was committed to host {now_leader.owner_id}"
            )
        if now_leader != cur:
            raise _Restart()


async def _shared_holders(area: ResourceArea, leader: Leader, io_timeout: int) -> set[int]:
    """The hosts whose mode block says SHARED, from one read of the area."""
    try:
        read = await _read_area(area, area.geometry.align_size, io_timeout)
    except LeaseError as exc:
        raise LeaseError(ResultCode.DBLOCK_READ, f"reading {area.where()}: {exc}") from exc
    blocks = used_host_sectors(read, min(leader.num_hosts, area.geometry.sectors - 2))
    return {slot + 1 for slot, _, mode in blocks if mode.flags & MBLOCK_SHARED}


async def _retract(area: ResourceArea, host_id: int, block: Dblock, mode: ModeBlock, io_timeout: int) -> None:
    """Best effort after a failed phase 2 or commit: mark our proposal released."""
    try:
        await _write_host_sector(
            area, host_id, replace(block, flags=DBLOCK_FL_RELEASED), mode, io_timeout, ResultCode.DBLOCK_WRITE
        )
    except LeaseError as exc:
        log.warning("retract failed on %s: %s", area.where(), exc)


async def _acquire_once(
    area: ResourceArea,
    host_id: int,
    generation: int,
    *,
    shared: bool,
    lver: int,
    view: LockspaceView | None,
    num_hosts: int | None,
    owner_nowait: bool,
    our_mode: ModeBlock,
    clock: Clock,
    io_timeout: int,
) -> tuple[ResourceArea, Leader, Dblock, set[int]]:
    """The exclusive algorithm (§7.1-7.7) up to and including the commit."""
    while True:
        length = area.geometry.align_size
        try:
            read = await _read_area(area, length, io_timeout)
        except LeaseError as exc:
            raise LeaseError(ResultCode.DBLOCK_READ, f"reading {area.where()}: {exc}") from exc
        cur = Leader.decode(read.head)
        verify_paxos_leader(cur, area.space_name, area.resource_name, host_id, f"leader of {area.where()}")
        geometry = geometry_from_leader(cur.sector_size, cur.flags)
        if geometry != area.geometry:
            area = area.with_geometry(geometry)
            continue
        blocks = used_host_sectors(read, min(cur.num_hosts, area.geometry.sectors - 2))
        for slot, block, _ in blocks:
            if not block.checksum_ok():
                raise LeaseError(ResultCode.DBLOCK_CHECKSUM, f"block {slot + 1} of {area.where()} has a bad checksum")
        max_mbal = max((block.mbal for _, block, _ in blocks), default=0)

        if lver and cur.lver != lver:
            raise LeaseError(ResultCode.ACQUIRE_LVER, f"{area.where()} is at lver {cur.lver}, not {lver}")
        ours = cur.owner_id == host_id and cur.owner_generation <= generation
        if cur.timestamp != 0 and not ours:
            try:
                await _owner_gone(area, cur, host_id, view, owner_nowait, clock, io_timeout)
            except _Restart:
                continue

        next_lver = cur.lver + 1
        mbal = choose_mbal(max_mbal, cur.max_hosts, host_id)
        try:
            outcome = await _run_ballots(area, cur, host_id, generation, next_lver, mbal, our_mode, clock, io_timeout)
        except _Restart:
            continue
        if isinstance(outcome, Leader):
            # Another host committed our proposal; it checked no shared holders for us, and our
            # aborted ballot saw none it finished reading.  Read them now, or an exclusive acquire
            # would be granted over a host holding the lease shared (found by leased torture).
            return area, outcome, block_for(outcome, host_id), await _shared_holders(area, cur, io_timeout)
        block, holders = outcome
        try:
            latest = await read_leader(area, host_id, io_timeout)
        except LeaseError as exc:
            await _retract(area, host_id, block, our_mode, io_timeout)  # nothing committed: withdraw our proposal
            if exc.rc == ResultCode.AIO_TIMEOUT:  # as every read of a ballot: a timeout is a failed read here
                raise LeaseError(ResultCode.LEADER_READ, exc.detail) from exc
            raise
        if latest.lver >= next_lver:
            # Another host committed this instance, or a later one, while our ballot ran: writing our commit
            # now would set the leader back to an older instance, and a later acquire would run that instance
            # again (found by leased torture with real sanlock in the cluster).
            if latest.lver == next_lver and (latest.owner_id, latest.owner_generation) == (host_id, generation):
                return area, latest, block, holders
            raise LeaseError(
                ResultCode.ACQUIRE_OWNED,
                f"{area.where()} lver {latest.lver} was committed to host {latest.owner_id} during our ballot",
            )
        new = commit_record(cur, next_lver, block, host_id, generation, disk_timestamp(clock), shared, num_hosts)
        try:
            await _write_leader(area, new, io_timeout)
        except LeaseError:
            # The write may have landed with only its completion lost: undo our
            # block and, if the leader now names us as written by us, free it,
            # or every other host would see a live owner that holds nothing.
            await _retract(area, host_id, block, our_mode, io_timeout)
            try:
                await _release_leader(PaxosLease(area, host_id, generation, new, block, shared, io_timeout), clock)
            except LeaseError as exc:
                log.debug("no commit of ours to undo on %s: %s", area.where(), exc)
            raise
        if block.inp != host_id:
            raise LeaseError(
                ResultCode.ACQUIRE_OTHER, f"ballot for {area.where()} lver {next_lver} committed host {block.inp}"
            )
        return area, new, block, holders


async def acquire(
    area: ResourceArea,
    host_id: int,
    generation: int,
    *,
    shared: bool = False,
    lver: int = 0,
    view: LockspaceView | None = None,
    num_hosts: int | None = None,
    owner_nowait: bool = False,
    read_lvb_data: bool = False,
    io_timeout: int = 10,
    clock: Clock = DEFAULT_CLOCK,
) -> PaxosLease:
    """Acquire the lease exclusively or shared (§7.2-7.9).

    ``view`` is the lockspace this host has joined; without it a lease held by
    another host fails with ACQUIRE_LOCKSPACE, as in sanlock's direct mode.
    """
    retries = 0
    while True:
        try:
            area, leader, block, holders = await _acquire_once(
                area,
                host_id,
                generation,
                shared=shared,
                lver=lver,
                view=view,
                num_hosts=num_hosts,
                owner_nowait=owner_nowait,
                our_mode=BLANK_MODE_BLOCK,
                clock=clock,
                io_timeout=io_timeout,
            )
            break
        except LeaseError as exc:
            if not shared or exc.rc not in (
                ResultCode.ACQUIRE_IDLIVE,
                ResultCode.ACQUIRE_OWNED,
                ResultCode.ACQUIRE_OTHER,
            ):
                raise
            current = await read_leader(area, host_id, io_timeout)
            if not current.flags & LFL_SHORT_HOLD:
                raise
            retries += 1
            if retries > SH_RETRIES:
                raise LeaseError(
                    ResultCode.ACQUIRE_SHRETRY, f"{area.where()}: shared acquire kept meeting short holds"
                ) from exc
            await clock.sleep(random.random())

    lease = PaxosLease(area, host_id, generation, leader, block, shared, io_timeout)
    live_shared = False
    try:
        if shared:
            await _write_host_sector(
                area,
                host_id,
                replace(block, flags=DBLOCK_FL_RELEASED),
                ModeBlock(MBLOCK_SHARED, generation),
                io_timeout,
                ResultCode.DBLOCK_WRITE,
            )
            await _release_leader(lease, clock)
        else:
            holders.discard(host_id)
            live_shared = bool(holders) and bool(await _live_shared_holders(area, holders, view, clock, io_timeout))
        if read_lvb_data and not live_shared:
            lease.lvb = await read_lvb(area, io_timeout)
    except LeaseError:
        await _undo_commit(lease, clock)
        raise
    if live_shared:
        await release(lease, clock=clock)
        raise LeaseError(ResultCode.EAGAIN, f"{area.where()} is held shared by live hosts")
    return lease


async def _undo_commit(lease: PaxosLease, clock: Clock) -> None:
    """Best effort after a step past the commit failed: give up what the commit made ours.

    The acquire fails, so nobody here holds the lease; left as it is, the
    leader would name us, alive, to every other host until this host left
    the lockspace (sanlock's acquire_token releases the token it took after
    such a failure too).  Our sector is blanked (a shared mode block
    written, or half written, goes with it) and, unless a shared acquire
    freed it already, the leader freed if it is still the one we committed.
    """
    leader_freed = lease.shared and lease.leader.timestamp == 0
    try:
        await release(lease if leader_freed else replace(lease, shared=False), clock=clock)
    except LeaseError as exc:
        log.warning("undoing the commit of %s after a failed acquire: %s", lease.area.where(), exc)


async def _live_shared_holders(
    area: ResourceArea, holders: set[int], view: LockspaceView | None, clock: Clock, io_timeout: int
) -> list[int]:
    """SH holders still alive after an EX commit; dead ones are cleared (§7.8)."""
    live: list[int] = []
    for holder in sorted(holders):
        _, mode = await read_host_block(area, holder, io_timeout)
        if not mode.flags & MBLOCK_SHARED:
            continue
        if mode.generation == 0:
            log.warning("shared holder %d of %s has generation 0; ignored", holder, area.where())
            continue
        table = view.table if view else None
        if table is None or table.is_live_for_shared(holder, mode.generation, clock.now()):
            live.append(holder)
            continue
        log.info("clearing dead shared holder %d of %s", holder, area.where())
        await area.storage.write(area.host_offset(holder), bytes(area.sector_size), io_timeout)
    return live


# ---------------------------------------------------------------------------
# Release and convert


async def _release_leader(
    lease: PaxosLease, clock: Clock, resource_name: bytes | None = None, current: Leader | None = None
) -> None:
    """Free the leader if we wrote it and it is unchanged (§7.9 step 3); ``current``: the leader just read."""
    area = lease.area
    if current is None:
        current = await read_leader(area, lease.host_id, lease.io_timeout)
    if current.write_id != lease.host_id:
        log.debug("leader of %s written by host %d; release by dblock only", area.where(), current.write_id)
        return
    if current.lver != lease.leader.lver:
        raise LeaseError(ResultCode.RELEASE_LVER, f"{area.where()} lver is {current.lver}, we hold {lease.leader.lver}")
    if current.timestamp == 0 or (current.owner_id, current.owner_generation) != (lease.host_id, lease.generation):
        raise LeaseError(
            ResultCode.RELEASE_OWNER, f"{area.where()} is owned by {current.owner_id}/{current.owner_generation}"
        )
    if current != lease.leader:
        raise LeaseError(ResultCode.RELEASE_OWNER, f"{area.where()} leader changed since acquire")
    released = current.sealed(
        timestamp=0,
        write_id=lease.host_id,
        write_generation=lease.generation,
        write_timestamp=disk_timestamp(clock),
        flags=current.flags & ~LFL_SHORT_HOLD,
        resource_name=current.resource_name if resource_name is None else resource_name,
    )
    await _write_leader(area, released, lease.io_timeout)
    lease.leader = released


async def release(lease: PaxosLease, *, clock: Clock = DEFAULT_CLOCK, rename: str | None = None) -> None:
    """Release an exclusive or shared hold (§7.9).  Raises on a leader that moved."""
    area = lease.area
    released_block = replace(lease.dblock, flags=DBLOCK_FL_RELEASED)
    if lease.shared:
        await _write_host_sector(
            area, lease.host_id, released_block, BLANK_MODE_BLOCK, lease.io_timeout, ResultCode.DBLOCK_WRITE
        )
        lease.released = True
        if lease.leader.timestamp != 0:
            # A conversion to shared that could not free the leader (see `convert`): free it now.
            try:
                await _release_leader(lease, clock)
            except LeaseError as exc:
                log.warning("release of %s: leader left from a conversion not freed: %s", area.where(), exc)
        return
    if lease.lvb_dirty and lease.lvb is not None:
        await write_lvb(area, lease.lvb, lease.io_timeout)
    sector = area.sector_size
    current = None
    try:
        # our block marked released, then the leader read, as one pair (Storage.write_then_read_sparse)
        read = await area.storage.write_then_read_sparse(
            area.host_offset(lease.host_id),
            host_sector(released_block, BLANK_MODE_BLOCK, sector),
            area.offset,
            sector,
            sector,
            sector,
            lease.io_timeout,
        )
    except StepFailed as exc:
        lease.released = True
        if exc.step != "write":
            raise _leader_read_failed(exc) from exc
        log.warning("release: could not mark block released on %s: %s", area.where(), exc)
    else:
        lease.released = True
        current = _verified_leader(area, lease.host_id, read.head)
    await _release_leader(lease, clock, encode_name(rename) if rename else None, current)


async def convert(
    lease: PaxosLease, *, to_shared: bool, view: LockspaceView | None = None, clock: Clock = DEFAULT_CLOCK
) -> None:
    """Convert EX->SH or SH->EX in place (§7.9).  A refused SH->EX keeps SH (-11)."""
    area = lease.area
    shared_mode = ModeBlock(MBLOCK_SHARED, lease.generation)
    if to_shared:
        if lease.shared:
            return
        if lease.lvb_dirty and lease.lvb is not None:
            await write_lvb(area, lease.lvb, lease.io_timeout)
        await _write_host_sector(
            area,
            lease.host_id,
            replace(lease.dblock, flags=DBLOCK_FL_RELEASED),
            shared_mode,
            lease.io_timeout,
            ResultCode.DBLOCK_WRITE,
        )
        # Our mode block says shared: the hold is shared from here, whatever the leader write below
        # does.  Refused, it might still have landed and let other hosts in shared, so the client
        # must not go on believing it holds the lease exclusively; a leader left ours only keeps
        # other hosts out a while longer, and the release frees it (see `release`).
        lease.shared = True
        try:
            await _release_leader(lease, clock)
        except LeaseError as exc:
            log.warning("convert to shared of %s: leader not freed: %s", area.where(), exc)
        return
    if not lease.shared:
        return
    area, leader, block, holders = await _acquire_once(
        area,
        lease.host_id,
        lease.generation,
        shared=False,
        lver=0,
        view=view,
        num_hosts=None,
        owner_nowait=False,
        our_mode=shared_mode,
        clock=clock,
        io_timeout=lease.io_timeout,
    )
    candidate = PaxosLease(area, lease.host_id, lease.generation, leader, block, False, lease.io_timeout)
    holders.discard(lease.host_id)
    try:
        live_shared = bool(holders) and bool(await _live_shared_holders(area, holders, view, clock, lease.io_timeout))
        if not live_shared:
            await _write_host_sector(
                area, lease.host_id, block, BLANK_MODE_BLOCK, lease.io_timeout, ResultCode.DBLOCK_WRITE
            )
    except LeaseError:
        await _back_to_shared(lease, candidate, shared_mode, clock)
        raise
    if live_shared:
        await _back_to_shared(lease, candidate, shared_mode, clock)
        raise LeaseError(ResultCode.EAGAIN, f"{area.where()} is held shared by other live hosts")
    lease.area, lease.leader, lease.dblock, lease.shared = area, leader, block, False


async def _back_to_shared(lease: PaxosLease, candidate: PaxosLease, shared_mode: ModeBlock, clock: Clock) -> None:
    """A conversion to exclusive that committed and then did not go through: keep the shared hold, free the leader.

    Best effort, as the client keeps its shared hold either way: our sector
    written shared again (the blanking write that failed may have landed),
    then the leader we committed freed.  Only once the sector says shared:
    a leader freed over a blank sector would let other hosts in exclusive.
    A leader left ours becomes the shared hold's, freed by its release.
    """
    area = candidate.area
    try:
        await _write_host_sector(
            area,
            candidate.host_id,
            replace(candidate.dblock, flags=DBLOCK_FL_RELEASED),
            shared_mode,
            candidate.io_timeout,
            ResultCode.DBLOCK_WRITE,
        )
        await _release_leader(candidate, clock)
    except LeaseError as exc:
        log.warning("convert to exclusive of %s given up, its leader left ours: %s", area.where(), exc)
        lease.area, lease.leader, lease.dblock = area, candidate.leader, candidate.dblock


__all__ = [
    "BLANK_DBLOCK",
    "LockspaceView",
    "PaxosLease",
    "acquire",
    "convert",
    "discover_resource",
    "init_resource",
    "read_leader",
    "read_lvb",
    "read_request",
    "read_resource_leader",
    "read_shared_modes",
    "release",
    "write_lvb",
    "write_request",
]
