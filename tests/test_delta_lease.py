"""Host-id leases with several hosts on one real file, no daemon (spec §5)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from leased import delta_lease
from leased.clock import MonotonicClock
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry
from leased.host_status import HostState, HostStatusTable
from leased.ondisk import leader_sector
from leased.storage import FileStorage
from leased.timeouts import host_dead_seconds

MiB = 1 << 20
IO_TIMEOUT = 1
W = 1  # leased-only tests shrink the watchdog fire timeout so takeovers take seconds


class AheadClock(MonotonicClock):
    """A host whose monotonic clock reads ``offset`` seconds more than ours."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return super().now() + self.offset


DEFAULT_GEOMETRY = Geometry(512, MiB)


async def make_lockspace(path: Path, geometry: Geometry = DEFAULT_GEOMETRY) -> None:
    storage = FileStorage(str(path))
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", geometry, IO_TIMEOUT)
    finally:
        storage.close()


async def join(open_storage: type[FileStorage], path: Path, host_id: int, name: str) -> delta_lease.HostIdLease:
    area = await delta_lease.discover_lockspace(open_storage(path), 0, "LS", IO_TIMEOUT)
    return await delta_lease.acquire_host_id(area, host_id, name, IO_TIMEOUT, watchdog_fire_timeout=W)


async def test_many_hosts_acquire_distinct_host_ids(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file)
    leases: dict[int, delta_lease.HostIdLease] = {}

    async def one(host_id: int) -> None:
        leases[host_id] = await join(open_storage, lease_file, host_id, f"host-{host_id}")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for host_id in (1, 2, 3, 5, 8, 13, 100, 2000):
                nursery.start_soon(one, host_id)
    assert sorted(leases) == [1, 2, 3, 5, 8, 13, 100, 2000]
    for host_id, lease in leases.items():
        assert lease.generation == 1
        on_disk = await lease.area.read_host(host_id, IO_TIMEOUT)
        assert on_disk.owner_id == host_id
        assert on_disk.resource == f"host-{host_id}"
        assert on_disk.io_timeout == IO_TIMEOUT


async def test_renew_release_and_generation_bump(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file)
    with trio.fail_after(20):
        lease = await join(open_storage, lease_file, 4, "alpha")
        before = lease.record
        snapshot = await delta_lease.renew_host_id(lease, watchdog_fire_timeout=W)
        assert len(snapshot) == MiB
        assert lease.record.timestamp >= before.timestamp
        assert lease.record.owner_generation == 1
        await delta_lease.release_host_id(lease)
        released = await lease.area.read_host(4, IO_TIMEOUT)
        assert released.timestamp == 0
        assert (released.owner_id, released.owner_generation, released.resource) == (4, 1, "alpha")
        again = await join(open_storage, lease_file, 4, "beta")
        assert again.generation == 2


async def test_host_id_above_max_hosts_is_refused(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file, Geometry(4096, MiB))
    with pytest.raises(LeaseError) as info:
        await join(open_storage, lease_file, 251, "x")
    assert info.value.rc == ResultCode.ADDLS_INVALID_HOSTID


async def renew_forever(lease: delta_lease.HostIdLease) -> None:
    while True:
        await trio.sleep(lease.io_timeout)
        await delta_lease.renew_host_id(lease, watchdog_fire_timeout=W)


@pytest.mark.slow
async def test_live_holder_keeps_its_host_id(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file)
    with trio.fail_after(40):
        holder = await join(open_storage, lease_file, 7, "holder")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew_forever, holder)
            with pytest.raises(LeaseError) as info:
                await join(open_storage, lease_file, 7, "intruder")
            nursery.cancel_scope.cancel()
    assert info.value.rc == ResultCode.HOSTID_BUSY
    assert (await holder.area.read_host(7, IO_TIMEOUT)).resource == "holder"


@pytest.mark.slow
async def test_abandoned_host_id_taken_over_after_host_dead_seconds(
    lease_file: Path, open_storage: type[FileStorage]
) -> None:
    await make_lockspace(lease_file)
    with trio.fail_after(40):
        dead = await join(open_storage, lease_file, 9, "crashed")
        start = trio.current_time()
        successor = await join(open_storage, lease_file, 9, "successor")
        waited = trio.current_time() - start
    assert successor.generation == dead.generation + 1
    # Safety, not speed: the takeover must not happen before host_dead_seconds.
    assert waited >= host_dead_seconds(IO_TIMEOUT, W)


async def test_renewal_detects_overwritten_owner(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file)
    with trio.fail_after(20):
        lease = await join(open_storage, lease_file, 3, "mine")
        intruder = replace(lease.record, resource_name=b"thief".ljust(48, b"\0")).sealed()
        await lease.area.storage.write(lease.area.host_offset(3), leader_sector(intruder, 512), IO_TIMEOUT)
        with pytest.raises(LeaseError) as info:
            await delta_lease.renew_host_id(lease, watchdog_fire_timeout=W)
    assert info.value.rc == ResultCode.RENEW_OWNER


async def test_host_status_from_renewal_snapshots(lease_file: Path, open_storage: type[FileStorage]) -> None:
    await make_lockspace(lease_file)
    with trio.fail_after(20):
        me = await join(open_storage, lease_file, 1, "me")
        other = await join(open_storage, lease_file, 2, "other")
        table = HostStatusTable(b"LS".ljust(48, b"\0"), me.area.geometry, 1, IO_TIMEOUT, W)
        t0 = 1000.0
        table.observe(await delta_lease.renew_host_id(me, watchdog_fire_timeout=W), t0)
        assert table.state(1, t0) == HostState.LIVE
        assert table.state(2, t0) == HostState.UNKNOWN
        assert table.state(3, t0) == HostState.FREE
        # The other host renews with a clock a few seconds ahead (hosts' clocks differ anyway),
        # so its timestamp changes without waiting for a new second here.
        await delta_lease.renew_host_id(other, clock=AheadClock(5), watchdog_fire_timeout=W)
        table.observe(await delta_lease.renew_host_id(me, watchdog_fire_timeout=W), t0 + 2)
    assert table.state(2, t0 + 2) == HostState.LIVE
    assert table.state(2, t0 + 2 + 8 * IO_TIMEOUT + 0.5) == HostState.FAIL
    assert table.state(2, t0 + 2 + host_dead_seconds(IO_TIMEOUT, W) + 0.5) == HostState.DEAD
