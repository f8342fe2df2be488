"""Resource leases with several hosts on one real file, no daemon (spec §7)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio

from leased import delta_lease, paxos_lease
from leased.clock import DEFAULT_CLOCK
from leased.constants import DBLOCK_FL_RELEASED, MBLOCK_SHARED
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry
from leased.host_status import HostStatusTable
from leased.paxos_lease import LockspaceView, PaxosLease, ResourceArea
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
            with pytest.raises(LeaseError) as info:
                await paxos_lease.acquire(
                    await resource(open_storage, lease_file), 2, taker.generation, view=view, io_timeout=IO_TIMEOUT
                )
            assert info.value.rc == ResultCode.ACQUIRE_IDLIVE

            owner_scope.cancel()  # the owner's host stops renewing: it has "died"
            died_at = trio.current_time()
            refusals = 0
            while True:  # a client retries -243 until the owner's silence is long enough (§7.4)
                try:
                    taken = await paxos_lease.acquire(
                        await resource(open_storage, lease_file), 2, taker.generation, view=view, io_timeout=IO_TIMEOUT
                    )
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


async def test_exclusive_committed_for_us_by_another_host_still_respects_shared_holders(
    lease_file: Path, open_storage: type[FileStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host 3 finished host 2's ballot and committed it: host 2 must still refuse while host 1 holds SH.

    The commit on our behalf is injected at the ballot seam (a real leader
    write naming host 2, by host 3), because reaching it through real
    contention takes a race that ``leased torture`` found but a test cannot
    schedule.  Before the fix the holders seen were "none" on this path and
    the exclusive acquire succeeded over the shared holder.
    """
    await make_areas(lease_file)
    with trio.fail_after(10):
        await paxos_lease.acquire(await resource(open_storage, lease_file), 1, 1, shared=True, io_timeout=IO_TIMEOUT)

        async def committed_by_host_3(area: ResourceArea, cur: paxos_lease.Leader, host_id: int, generation: int,
                                      next_lver: int, *args: object) -> paxos_lease.Leader:  # fmt: skip
            leader = cur.sealed(
                lver=next_lver, owner_id=host_id, owner_generation=generation, timestamp=12345, write_id=3
            )
            await paxos_lease._write_leader(area, leader, IO_TIMEOUT)
            return leader

        monkeypatch.setattr(paxos_lease, "_run_ballots", committed_by_host_3)
        with pytest.raises(LeaseError) as refused:
            await paxos_lease.acquire(await resource(open_storage, lease_file), 2, 1, io_timeout=IO_TIMEOUT)
    assert refused.value.rc == ResultCode.EAGAIN


async def test_a_commit_never_sets_the_leader_back_to_an_older_instance(
    lease_file: Path, open_storage: type[FileStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our ballot for lver N finished, but before our commit another host committed N and then N + 1.

    Writing our commit for N then would put the leader back to N, and the
    next acquirer would run instance N + 1 again over a live holder (seen in
    a torture run with real sanlock).  The later commit is injected at the
    ballot seam: a real leader write by host 3 between our phase 2 and our
    commit, a window a test cannot schedule otherwise.
    """
    await make_areas(lease_file)
    real_ballots = paxos_lease._run_ballots

    async def others_commit_meanwhile(area: ResourceArea, cur: paxos_lease.Leader, host_id: int, generation: int,
                                      next_lver: int, *args: Any) -> Any:  # fmt: skip
        outcome = await real_ballots(area, cur, host_id, generation, next_lver, *args)
        later = cur.sealed(lver=next_lver + 1, owner_id=3, owner_generation=1, timestamp=54321, write_id=3)
        await paxos_lease._write_leader(area, later, IO_TIMEOUT)
        return outcome

    monkeypatch.setattr(paxos_lease, "_run_ballots", others_commit_meanwhile)
    with trio.fail_after(10):
        area = await resource(open_storage, lease_file)
        with pytest.raises(LeaseError) as refused:
            await paxos_lease.acquire(area, 2, 1, io_timeout=IO_TIMEOUT)
        assert refused.value.rc == ResultCode.ACQUIRE_OWNED
        leader = await paxos_lease.read_leader(area, 2, IO_TIMEOUT)
    assert (leader.lver, leader.owner_id, leader.write_id) == (2, 3, 3), "the newer commit stays on disk"
