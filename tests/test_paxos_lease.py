"""Resource leases with several hosts on one real file, no daemon (spec §7)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from faulty_storage import Disk, FaultyStorage, Op

from leased import delta_lease, paxos_lease
from leased.areas import ResourceArea
from leased.clock import DEFAULT_CLOCK
from leased.constants import DBLOCK_FL_RELEASED, MBLOCK_SHARED
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry
from leased.host_status import HostStatusTable
from leased.ondisk import Leader
from leased.paxos_lease import LockspaceView, PaxosLease
from leased.storage import FileStorage
from leased.timeouts import host_dead_seconds

MiB = 1 << 20
IO_TIMEOUT = 1
W = 1
RES_OFFSET = MiB
GEOMETRY = Geometry(512, MiB)


async def make_areas(path: Path) -> None:
    storage = FileStorage(str(path))
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", GEOMETRY, IO_TIMEOUT)
        await paxos_lease.init_resource(storage, RES_OFFSET, "LS", "R", GEOMETRY)
    finally:
        storage.close()


async def resource(open_storage: type[FileStorage], path: Path) -> ResourceArea:
    return await paxos_lease.discover_resource(open_storage(path), RES_OFFSET, "LS", "R", IO_TIMEOUT)


async def test_free_lease_acquire_release_reacquire(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_areas(lease_file)
    area = await resource(open_storage, lease_file)
    with trio.fail_after(10):
        lease = await paxos_lease.acquire(area, 1, 1, io_timeout=IO_TIMEOUT)
        assert (lease.lver, lease.leader.owner_id, lease.dblock.mbal) == (1, 1, 1)
        await paxos_lease.release(lease)
        leader = await paxos_lease.read_leader(area, 1, IO_TIMEOUT)
        assert leader.timestamp == 0 and leader.lver == 1
        other = await paxos_lease.acquire(await resource(open_storage, lease_file), 2, 1, io_timeout=IO_TIMEOUT)
    assert other.lver == 2
    assert other.dblock.mbal == 2002  # §7.3: next ballot above max_mbal, congruent to host 2


async def test_held_lease_is_refused_without_lockspace(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_areas(lease_file)
    with trio.fail_after(10):
        await paxos_lease.acquire(await resource(open_storage, lease_file), 1, 1, io_timeout=IO_TIMEOUT)
        with pytest.raises(LeaseError) as info:
            await paxos_lease.acquire(await resource(open_storage, lease_file), 2, 1, io_timeout=IO_TIMEOUT)
    assert info.value.rc == ResultCode.ACQUIRE_LOCKSPACE


async def test_acquire_at_wrong_lver_is_refused(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_areas(lease_file)
    with pytest.raises(LeaseError) as info:
        await paxos_lease.acquire(await resource(open_storage, lease_file), 1, 1, lver=5, io_timeout=IO_TIMEOUT)
    assert info.value.rc == ResultCode.ACQUIRE_LVER


@pytest.mark.slow
async def test_two_hosts_racing_never_both_win(lease_file: Path, open_storage: type[FileStorage]) -> None:
    """Many rounds of two hosts racing for one free EX lease: at most one winner each round."""
    await make_areas(lease_file)
    areas = {1: await resource(open_storage, lease_file), 2: await resource(open_storage, lease_file)}
    rng = random.Random(7)
    wins = {1: 0, 2: 0}
    for _ in range(40):
        winners: dict[int, PaxosLease] = {}
        errors: dict[int, int] = {}

        async def contend(
            host_id: int, delay: float, winners: dict[int, PaxosLease] = winners, errors: dict[int, int] = errors
        ) -> None:
            await trio.sleep(delay)
            try:
                winners[host_id] = await paxos_lease.acquire(areas[host_id], host_id, 1, io_timeout=IO_TIMEOUT)
            except LeaseError as exc:
                errors[host_id] = exc.rc

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                for host_id in (1, 2):
                    nursery.start_soon(contend, host_id, rng.random() * 0.005)
        assert len(winners) <= 1, "two hosts hold one exclusive lease"
        leader = await paxos_lease.read_leader(areas[1], 0, IO_TIMEOUT)
        for host_id, lease in winners.items():
            wins[host_id] += 1
            assert (leader.owner_id, leader.lver) == (host_id, lease.lver)
            await paxos_lease.release(lease)
        for rc in errors.values():
            assert rc in (ResultCode.ACQUIRE_LOCKSPACE, ResultCode.ACQUIRE_OWNED, ResultCode.ACQUIRE_OTHER)
    assert wins[1] + wins[2] >= 20


async def test_shared_holders_coexist_and_exclusive_is_refused(
    lease_file: Path, open_storage: type[FileStorage]
) -> None:
    await make_areas(lease_file)
    with trio.fail_after(20):
        holders = [
            await paxos_lease.acquire(
                await resource(open_storage, lease_file), h, 1, shared=True, io_timeout=IO_TIMEOUT
            )
            for h in (1, 2, 3)
        ]
        area = await resource(open_storage, lease_file)
        for h in (1, 2, 3):
            block, mode = await paxos_lease.read_host_block(area, h, IO_TIMEOUT)
            assert mode.flags & MBLOCK_SHARED and mode.generation == 1
            assert block.flags & DBLOCK_FL_RELEASED
        with pytest.raises(LeaseError) as info:
            await paxos_lease.acquire(area, 4, 1, io_timeout=IO_TIMEOUT)
        assert info.value.rc == ResultCode.EAGAIN
        leader = await paxos_lease.read_leader(area, 0, IO_TIMEOUT)
        assert leader.timestamp == 0, "the refused EX acquire must free the leader again"
        for lease in holders:
            await paxos_lease.release(lease)
        exclusive = await paxos_lease.acquire(area, 4, 1, io_timeout=IO_TIMEOUT)
    assert exclusive.leader.owner_id == 4


async def test_convert_between_shared_and_exclusive(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_areas(lease_file)
    with trio.fail_after(20):
        one = await paxos_lease.acquire(
            await resource(open_storage, lease_file), 1, 1, shared=True, io_timeout=IO_TIMEOUT
        )
        two = await paxos_lease.acquire(
            await resource(open_storage, lease_file), 2, 1, shared=True, io_timeout=IO_TIMEOUT
        )
        with pytest.raises(LeaseError) as info:
            await paxos_lease.convert(one, to_shared=False)
        assert info.value.rc == ResultCode.EAGAIN
        _, mode = await paxos_lease.read_host_block(one.area, 1, IO_TIMEOUT)
        assert mode.flags & MBLOCK_SHARED, "a refused SH->EX keeps the shared hold"
        await paxos_lease.release(two)
        await paxos_lease.convert(one, to_shared=False)
        assert not one.shared
        leader = await paxos_lease.read_leader(one.area, 1, IO_TIMEOUT)
        assert (leader.owner_id, leader.timestamp != 0) == (1, True)
        await paxos_lease.convert(one, to_shared=True)
        leader = await paxos_lease.read_leader(one.area, 1, IO_TIMEOUT)
        assert leader.timestamp == 0
        _, mode = await paxos_lease.read_host_block(one.area, 1, IO_TIMEOUT)
        assert mode.flags & MBLOCK_SHARED


async def test_lvb_written_on_release_and_read_on_acquire(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_areas(lease_file)
    with trio.fail_after(10):
        lease = await paxos_lease.acquire(await resource(open_storage, lease_file), 1, 1, io_timeout=IO_TIMEOUT)
        lease.lvb, lease.lvb_dirty = b"value-block", True
        await paxos_lease.release(lease)
        again = await paxos_lease.acquire(
            await resource(open_storage, lease_file), 2, 1, read_lvb_data=True, io_timeout=IO_TIMEOUT
        )
    assert again.lvb is not None and again.lvb.startswith(b"value-block\0")


async def join(open_storage: type[FileStorage], path: Path, host_id: int) -> delta_lease.HostIdLease:
    area = await delta_lease.discover_lockspace(open_storage(path), 0, "LS", IO_TIMEOUT)
    return await delta_lease.acquire_host_id(area, host_id, f"host{host_id}", IO_TIMEOUT, watchdog_fire_timeout=W)


async def renew_forever(lease: delta_lease.HostIdLease, table: HostStatusTable | None = None) -> None:
    while True:
        snapshot = await delta_lease.renew_host_id(lease, watchdog_fire_timeout=W)
        if table is not None:
            table.observe(snapshot, DEFAULT_CLOCK.now())
        await trio.sleep(lease.io_timeout)


@pytest.mark.slow
async def test_live_owner_refuses_and_dead_owner_is_taken_over(
    lease_file: Path, open_storage: type[FileStorage]
) -> None:
    await make_areas(lease_file)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            owner, taker = await join(open_storage, lease_file, 1), None
            taker = await join(open_storage, lease_file, 2)
            table = HostStatusTable(b"LS".ljust(48, b"\0"), GEOMETRY, 2, IO_TIMEOUT, W)
            view = LockspaceView(taker.area, IO_TIMEOUT, W, table)
            owner_scope = trio.CancelScope()

            async def owner_renews() -> None:
                with owner_scope:
                    await renew_forever(owner)

            nursery.start_soon(owner_renews)
            nursery.start_soon(renew_forever, taker, table)
            held = await paxos_lease.acquire(
                await resource(open_storage, lease_file), 1, owner.generation, io_timeout=IO_TIMEOUT
            )

            async def take() -> paxos_lease.PaxosLease:
                """The taker's acquire, retried past AIO_TIMEOUT: an I/O that outlived io_timeout on a loaded
                machine answers nothing about the owner, and a client retries it like any transient error."""
                while True:
                    try:
                        return await paxos_lease.acquire(
                            await resource(open_storage, lease_file),
                            2,
                            taker.generation,
                            view=view,
                            io_timeout=IO_TIMEOUT,
                        )
                    except LeaseError as exc:
                        if exc.rc != ResultCode.AIO_TIMEOUT:
                            raise

            with pytest.raises(LeaseError) as info:
                await take()
            assert info.value.rc == ResultCode.ACQUIRE_IDLIVE

            owner_scope.cancel()  # the owner's host stops renewing: it has "died"
            died_at = trio.current_time()
            refusals = 0
            while True:  # a client retries -243 until the owner's silence is long enough (§7.4)
                try:
                    taken = await take()
                    break
                except LeaseError as exc:
                    assert exc.rc == ResultCode.ACQUIRE_IDLIVE
                    refusals += 1
                    await trio.sleep(IO_TIMEOUT)
            taken_at = trio.current_time()
            nursery.cancel_scope.cancel()
    assert taken.lver == held.lver + 1
    assert taken.leader.owner_id == 2
    # Safety: never before host_dead_seconds since the owner's last renewal could have been seen.
    assert taken_at - died_at >= host_dead_seconds(IO_TIMEOUT, W) - 2 * IO_TIMEOUT


# Where another host's I/O is placed inside one acquire: the operation numbers
# of a FaultyStorage handle on which an uncontended acquire runs (pinned by
# test_faults.test_uncontended_acquire_does_four_reads_and_three_writes):
# 0 area read, 1 phase-1 write, 2 phase-1 read, 3 phase-2 write, 4 phase-2
# read, 5 the leader read again, 6 the commit write.
PHASE2_READ = 4
"""Our phase-2 block is on disk; we have not yet read the others' blocks back."""
AFTER_BALLOT = 5
"""Our ballot is complete; nothing of the commit has been read or written yet."""


def faulty_handle(
    path: Path, nursery: trio.Nursery, at_op: dict[int, Callable[[], Awaitable[object]]]
) -> FaultyStorage:
    """A host's own O_DIRECT handle on the lease file, running ``at_op`` hooks before chosen operations."""
    return FaultyStorage(str(path), Disk(GEOMETRY.sector_size), nursery, at_op=at_op)


async def test_exclusive_committed_for_us_by_another_host_still_respects_shared_holders(
    lease_file: Path, open_storage: type[FileStorage], nursery: trio.Nursery
) -> None:
    """Host 3 finished host 2's ballot and committed it: host 2 must still refuse while host 1 holds SH.

    Host 3's whole acquire runs between host 2's phase-2 write and its
    phase-2 read (placed there by a hook on host 2's storage, a window real
    contention reaches only by chance, as ``leased torture`` did): host 3
    finds host 2's accepted proposal, carries it with a higher ballot and
    commits the leader naming host 2.  Host 2's phase 2 then meets that
    higher ballot, aborts, and finds the lease committed for it.  Before the
    fix the holders seen were "none" on this path and the exclusive acquire
    succeeded over the shared holder.
    """
    await make_areas(lease_file)
    committed_for_2: list[Leader] = []

    async def host_3_commits_host_2s_proposal() -> None:
        assert host_2.ops[-1] == Op(PHASE2_READ, False, RES_OFFSET, GEOMETRY.align_size)
        area_3 = await resource(open_storage, lease_file)
        with pytest.raises(LeaseError) as other:
            await paxos_lease.acquire(area_3, 3, 1, io_timeout=IO_TIMEOUT)
        assert other.value.rc == ResultCode.ACQUIRE_OTHER, "host 3 committed host 2's value, not its own"
        leader = await paxos_lease.read_leader(area_3, 3, IO_TIMEOUT)
        assert (leader.lver, leader.owner_id, leader.owner_generation, leader.write_id) == (2, 2, 1, 3)
        committed_for_2.append(leader)

    host_2 = faulty_handle(lease_file, nursery, {PHASE2_READ: host_3_commits_host_2s_proposal})
    try:
        with trio.fail_after(10):
            await paxos_lease.acquire(
                await resource(open_storage, lease_file), 1, 1, shared=True, io_timeout=IO_TIMEOUT
            )
            area_2 = replace(await resource(open_storage, lease_file), storage=host_2)
            with pytest.raises(LeaseError) as refused:
                await paxos_lease.acquire(area_2, 2, 1, io_timeout=IO_TIMEOUT)
    finally:
        host_2.close()
    assert committed_for_2, "host 3's commit was never placed in host 2's ballot"
    assert refused.value.rc == ResultCode.EAGAIN


async def test_a_commit_never_sets_the_leader_back_to_an_older_instance(
    lease_file: Path, open_storage: type[FileStorage], nursery: trio.Nursery
) -> None:
    """Our ballot for lver N finished, but before our commit another host committed N and then N + 1.

    Host 3's ballot for N completes first and waits before its commit (a
    hook on its storage).  Host 2's ballot then finds host 3's accepted
    proposal and carries it through; right after host 2's ballot (a hook on
    host 2's storage) host 3 commits N, releases it and commits N + 1 for
    itself.  Writing our commit for N then would put the leader back to N,
    and the next acquirer would run instance N + 1 again over a live holder
    (seen in a torture run with real sanlock).  Host 2 ran a ballot for
    another host's value, as the leased host in that run did.
    """
    await make_areas(lease_file)
    host_3_ballot_done, host_3_may_commit = trio.Event(), trio.Event()
    host_3_leases: list[PaxosLease] = []
    host_3_committed = trio.Event()

    async def host_3_waits_before_commit() -> None:
        host_3_ballot_done.set()
        await host_3_may_commit.wait()

    async def host_3_commits_n_and_n_plus_1() -> None:
        phase_2 = [(op.write, op.offset) for op in host_2.ops[PHASE2_READ - 1 : AFTER_BALLOT]]
        assert phase_2 == [(True, area_2.host_offset(2)), (False, RES_OFFSET)], "host 2's ballot is complete"
        host_3_may_commit.set()
        await host_3_committed.wait()
        (first,) = host_3_leases
        await paxos_lease.release(first)
        second = await paxos_lease.acquire(area_3, 3, 1, io_timeout=IO_TIMEOUT)
        assert (first.lver, second.lver) == (1, 2)

    host_3 = faulty_handle(lease_file, nursery, {AFTER_BALLOT: host_3_waits_before_commit})
    host_2 = faulty_handle(lease_file, nursery, {AFTER_BALLOT: host_3_commits_n_and_n_plus_1})
    area_3 = replace(await resource(open_storage, lease_file), storage=host_3)
    area_2 = replace(await resource(open_storage, lease_file), storage=host_2)

    async def host_3_acquires() -> None:
        host_3_leases.append(await paxos_lease.acquire(area_3, 3, 1, io_timeout=IO_TIMEOUT))
        host_3_committed.set()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as hosts:
                hosts.start_soon(host_3_acquires)
                await host_3_ballot_done.wait()
                with pytest.raises(LeaseError) as refused:
                    await paxos_lease.acquire(area_2, 2, 1, io_timeout=IO_TIMEOUT)
            assert refused.value.rc == ResultCode.ACQUIRE_OWNED
            leader = await paxos_lease.read_leader(area_2, 2, IO_TIMEOUT)
    finally:
        host_2.close()
        host_3.close()
    assert (leader.lver, leader.owner_id, leader.write_id) == (2, 3, 3), "the newer commit stays on disk"
