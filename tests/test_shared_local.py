"""Several local clients holding one resource shared share one on-disk hold: only the last one lets it go.

On disk a host holds a shared lease through one mode block (its own host
sector), whatever the number of its local clients holding it.  Found by
``leased torture``: leased cleared that block when the *first* of two local
shared holders released, so another host got the lease exclusively while the
second local holder still used it shared (a shared/exclusive overlap, seen by
the devcount check too).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from daemons import Daemon, LeaseFile, init_lease_file_direct, wait_for
from leased_daemons import leased_daemon

from leased.client import SanlockError
from leased.errors import ResultCode

pytestmark = pytest.mark.sanlock  # sanlock direct writes the lease file


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[tuple[LeaseFile, Daemon, Daemon]]:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1"], io_timeout=1)
    with ExitStack() as stack:
        one = stack.enter_context(leased_daemon(tmp_path, "one", "host-one", watchdog_fire_timeout=5))
        two = stack.enter_context(leased_daemon(tmp_path, "two", "host-two", watchdog_fire_timeout=5))
        for host_id, daemon in ((1, one), (2, two)):
            daemon.client().add_lockspace(b"LS", host_id, lease_file.path, 0, io_timeout=1, wait=False)
        for host_id, daemon in ((1, one), (2, two)):
            assert daemon.client().inq_lockspace(b"LS", host_id, lease_file.path, 0, wait=True) is True
        yield lease_file, one, two


def test_first_of_two_local_shared_holders_keeps_the_host_hold(
    two_hosts: tuple[LeaseFile, Daemon, Daemon],
) -> None:
    lease_file, one, two = two_hosts
    disks = lease_file.disks(b"R1")
    with one.client().register() as first, one.client().register() as second, two.client().register() as other:
        first.acquire(b"LS", b"R1", disks, shared=True)
        second.acquire(b"LS", b"R1", disks, shared=True)
        first.release(b"LS", b"R1")
        assert [lease.resource for lease in second.inquire()] == [b"R1"]
        # host one still holds R1 shared on disk: host two may not take it exclusively
        with pytest.raises(SanlockError) as refused:
            other.acquire(b"LS", b"R1", disks)
        assert refused.value.rc in (ResultCode.ACQUIRE_SHRETRY, ResultCode.EAGAIN), refused.value
        second.release(b"LS", b"R1")

        def exclusive_on_two() -> bool:
            try:
                other.acquire(b"LS", b"R1", disks)
            except SanlockError as exc:
                if exc.rc in (ResultCode.ACQUIRE_SHRETRY, ResultCode.EAGAIN, ResultCode.ACQUIRE_IDLIVE):
                    return False
                raise
            return True

        wait_for(exclusive_on_two, 20, "host two to get R1 exclusively once the last shared holder left")


def test_second_local_shared_holder_joins_without_touching_the_disk(
    two_hosts: tuple[LeaseFile, Daemon, Daemon],
) -> None:
    """A second paxos round would rewrite this host's sector; a failed one would blank its mode block."""
    lease_file, one, _ = two_hosts
    disks = lease_file.disks(b"R1")
    offset = lease_file.offset(b"R1")

    def area() -> bytes:
        with lease_file.path.open("rb") as f:
            f.seek(offset)
            return f.read(8 * 512)

    with one.client().register() as first, one.client().register() as second:
        first.acquire(b"LS", b"R1", disks, shared=True)
        before = area()
        second.acquire(b"LS", b"R1", disks, shared=True)
        assert area() == before, "joining a shared hold this host has must not write"
        second.release(b"LS", b"R1")
        assert area() == before, "leaving it while another local holder stays must not write"
        assert [lease.resource for lease in first.inquire()] == [b"R1"]
        first.release(b"LS", b"R1")
        assert area() != before, "the last local holder releases on disk"


def test_two_local_shared_holders_releasing_at_once_both_succeed(
    two_hosts: tuple[LeaseFile, Daemon, Daemon],
) -> None:
    """Both detached before either wrote: each thought it was the last, and the second failed (-211).

    Found by leased torture.  Repeated, since the two releases only sometimes meet.
    """
    lease_file, one, two = two_hosts
    disks = lease_file.disks(b"R1")
    with one.client().register() as first, one.client().register() as second, two.client().register() as other:
        for _ in range(20):
            first.acquire(b"LS", b"R1", disks, shared=True)
            second.acquire(b"LS", b"R1", disks, shared=True)
            with ThreadPoolExecutor(2) as pool:
                for done in [pool.submit(first.release, b"LS", b"R1"), pool.submit(second.release, b"LS", b"R1")]:
                    done.result()  # raises the SanlockError of a failed release
            assert first.inquire() == [] and second.inquire() == []
        other.acquire(b"LS", b"R1", disks)  # released on disk: another host takes it at once
