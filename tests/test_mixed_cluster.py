"""A mixed cluster on one lockspace file: two leased daemons and a real sanlock 3.8.5 daemon.

Hosts 1 and 2 are leased daemons, host 3 is sanlock, each with its own run
directory; all join lockspace LS on one file.  Exclusive leases held through
one host are refused through the others, shared leases coexist, and a release
through one host lets another acquire.  W stays at sanlock 3.8.5's 60 s
(nothing here waits for a takeover).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import pytest
from daemons import Daemon, LeaseFile, init_lease_file_direct, sanlock_daemon, wait_for
from leased_daemons import leased_daemon

from leased import uring
from leased.client import Registration, SanlockError
from leased.errors import ResultCode

pytestmark = pytest.mark.sanlock

IDLIVE = ResultCode.ACQUIRE_IDLIVE


def refused_until(attempt: Callable[[], object], expected: int, timeout: float = 20) -> None:
    """Retry ``attempt`` until it fails with ``expected``; it must never succeed meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            attempt()
        except SanlockError as exc:
            if exc.rc == expected:
                return
            if time.monotonic() > deadline:
                raise
            continue
        raise AssertionError("acquire succeeded while another host holds the lease")


def seen_hosts(daemon: Daemon) -> set[int]:
    try:
        return {h.host_id for h in daemon.client().get_hosts(b"LS")}
    except SanlockError as exc:
        if exc.rc == ResultCode.EAGAIN:  # sanlock: first scan of other hosts not done yet
            return set()
        raise


def sees_every_host(daemon: Daemon) -> bool:
    return seen_hosts(daemon) >= {1, 2, 3}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[LeaseFile, dict[int, Daemon]]]:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1", b"R2"], io_timeout=1)
    with ExitStack() as stack:
        daemons = {
            1: stack.enter_context(leased_daemon(tmp_path, "leased1", "leased-host-1")),
            # one leased host on each I/O engine
            2: stack.enter_context(
                leased_daemon(tmp_path, "leased2", "leased-host-2", extra=("--io-engine", "threads"))
            ),
            3: stack.enter_context(sanlock_daemon(tmp_path, "sanlock3", "sanlock-host-3")),
        }
        for host_id, daemon in daemons.items():
            daemon.client().add_lockspace(b"LS", host_id, lease_file.path, 0, io_timeout=1, wait=False)
        for host_id, daemon in daemons.items():
            assert daemon.client().inq_lockspace(b"LS", host_id, lease_file.path, 0, wait=True) is True
        auto = "threads" if uring.unavailable() else "io_uring"
        assert f"lease I/O through {auto} (io_engine auto)" in daemons[1].log()
        assert "lease I/O through threads (io_engine threads)" in daemons[2].log()
        yield lease_file, daemons


def test_exclusive_shared_and_release_across_leased_and_sanlock(
    cluster: tuple[LeaseFile, dict[int, Daemon]],
) -> None:
    lease_file, daemons = cluster
    r1, r2 = lease_file.disks(b"R1"), lease_file.disks(b"R2")
    with ExitStack() as stack:
        regs: dict[int, Registration] = {h: stack.enter_context(d.client().register()) for h, d in daemons.items()}

        # Every host comes to see every other host.
        for daemon in daemons.values():
            wait_for(partial(sees_every_host, daemon), 30, "all hosts seen")

        for holder in (1, 3, 2):
            lease = regs[holder].acquire(b"LS", b"R1", r1)
            assert lease.lver is not None and lease.lver >= 1
            for other in daemons:
                if other != holder:
                    refused_until(partial(regs[other].acquire, b"LS", b"R1", r1), IDLIVE)
            owners = daemons[holder].client().read_resource_owners(b"LS", b"R1", r1)[1]
            assert [o.host_id for o in owners] == [holder]
            regs[holder].release(b"LS", b"R1")
            # released through one host: the next holder may take it at once
        shared = [regs[h].acquire(b"LS", b"R2", r2, shared=True) for h in (1, 2, 3)]
        assert all(lease.shared for lease in shared)
        owners = daemons[3].client().read_resource_owners(b"LS", b"R2", r2)[1]
        assert sorted(o.host_id for o in owners) == [1, 2, 3]
        with pytest.raises(SanlockError) as info:
            regs[1].convert(b"LS", b"R2", shared=False)
        assert info.value.rc == ResultCode.EAGAIN, "SH->EX must be refused while other hosts hold SH"
        for host_id in (2, 3):
            regs[host_id].release(b"LS", b"R2")
        regs[1].convert(b"LS", b"R2", shared=False)
        held = {lease.resource: lease for lease in regs[1].inquire()}
        assert not held[b"R2"].shared
        refused_until(lambda: regs[3].acquire(b"LS", b"R2", r2, shared=True), IDLIVE)
