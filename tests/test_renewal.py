"""Renewal under slow storage: a read that finishes late is waited for and used (on-disk spec §5.2)."""

from __future__ import annotations

import logging

import pytest
import trio

from leased import delta_lease
from leased.geometry import Geometry
from leased.lockspace import JoinedLockspace, LockspaceState, lockspace_key
from leased.storage import FileStorage
from leased.timeouts import Timeouts
from leased.torture.faultfs import FaultFS

MiB = 1 << 20


async def test_late_renewal_read_is_used_not_repeated(faults: FaultFS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leased")
    path = faults.mountpoint / "leases"
    with path.open("wb") as f:
        f.truncate(2 * MiB)
    storage = FileStorage(str(path))
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", Geometry(512, MiB), 2)
    finally:
        storage.close()
    lockspace = JoinedLockspace(
        key=lockspace_key(b"LS", 1, str(path), 0), io_timeout=2, timeouts=Timeouts(2, 2), host_name=b"slow-host"
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(lockspace.run)
            assert lockspace.lease is not None
            before = lockspace.lease.last_success
            faults.set(read="stall", path="leases", start=0, end=MiB)  # the renewal's area read hangs
            await trio.to_thread.run_sync(lambda: faults.wait_stalled(1, timeout=20))
            while not lockspace.history or not lockspace.history[-1].next_errors:
                await trio.sleep(0.1)  # poll: the renewal attempt has failed with its timeout
            faults.heal()  # the stalled read completes now, within renewal_read_extend
            while lockspace.lease.last_success == before:
                await trio.sleep(0.1)
            assert lockspace.state is LockspaceState.JOINED
            nursery.cancel_scope.cancel()
    assert any("using the late renewal read" in r.getMessage() for r in caplog.records)
    lockspace.lease.area.storage.close()
