"""Persistent leases and orphans (on-disk spec §7.12): kept when the process exits, adopted, released.

Moving an orphan to a new owner is also one of the prepare-then-commit
moves: an acquire that adopts an orphan and then fails on another resource
must leave the orphan an orphan.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from daemons import wait_for
from inprocess import call
from test_race_classes import Setup, daemon_seams, leader_timestamp, setup  # noqa: F401  (fixtures)

from leased.client import Client, SanlockError
from leased.errors import ResultCode
from leased.protocol import (
    ACQUIRE_ORPHAN,
    HEADER_SIZE,
    REL_ORPHAN,
    RES_LVER,
    RES_PERSISTENT,
    TARGET_SELF,
    Cmd,
    Header,
    Options,
    Resource,
)


async def test_persistent_lease_becomes_an_orphan_and_can_be_adopted(setup: Setup) -> None:  # noqa: F811
    run_dir = str(Path(setup.socket_path).parent)
    disks = [(str(setup.path), setup.disk(b"R1").offset)]

    def scenario() -> None:
        client = Client(run_dir, timeout=30)
        with client.register() as first:
            first.acquire(b"LS", b"R1", disks, persistent=True)

        # the process is gone: once the daemon has seen the connection close, the lease is an orphan
        def listed() -> list[tuple[bytes, str]]:
            return [(r.resource.name, r.fields["list"]) for r in client.status() if r.resource is not None]

        wait_for(lambda: listed() == [(b"R1", "orphan")], 10, "R1 listed as an orphan")
        with client.register() as second:
            with pytest.raises(SanlockError) as info:
                second.acquire(b"LS", b"R1", disks)
            assert info.value.rc == ResultCode.EUCLEAN
            with pytest.raises(SanlockError) as info:
                second.acquire(b"LS", b"R1", disks, shared=True, orphan=True)
            assert info.value.rc == ResultCode.EUCLEAN, "an orphan is adopted only in its own mode"
            adopted = second.acquire(b"LS", b"R1", disks, orphan=True)
            assert adopted.lver == 1, "adoption does no disk I/O: the lease version is unchanged"
            assert [lease.resource for lease in second.inquire()] == [b"R1"]
            second.release(b"LS", b"R1")

    with trio.fail_after(60):
        await trio.to_thread.run_sync(scenario)
    assert await leader_timestamp(setup, b"R1") == 0


async def test_failed_adoption_leaves_the_orphan_an_orphan(setup: Setup) -> None:  # noqa: F811
    """HAProxy takeover class, for orphans: adopt R1 and take R2 in one call; R2 fails; R1 stays an orphan."""
    with trio.fail_after(60):
        conn = await trio.open_unix_socket(setup.socket_path)
        async with conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            body = (
                Resource(b"LS", b"R1", flags=RES_PERSISTENT, disks=(setup.disk(b"R1"),)).encode() + Options().encode()
            )
            reply, _ = await call(
                conn, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF), body
            )
            assert reply.result == 0
        # the first process exited (connection closed): R1 becomes an orphan once the daemon saw it
        while not setup.daemon.state.leases.orphans(b"LS"):
            await trio.sleep(0.01)
        conn = await trio.open_unix_socket(setup.socket_path)
        async with conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            body = (
                Resource(b"LS", b"R1", flags=RES_PERSISTENT, disks=(setup.disk(b"R1"),)).encode()
                + Resource(b"LS", b"R2", lver=7, flags=RES_LVER, disks=(setup.disk(b"R2"),)).encode()
                + Options().encode()
            )
            header = Header(Cmd.ACQUIRE, ACQUIRE_ORPHAN, HEADER_SIZE + len(body), data=2, data2=TARGET_SELF)
            reply, _ = await call(conn, header, body)
            assert reply.result == ResultCode.ACQUIRE_LVER
            reply, _ = await call(conn, Header(Cmd.INQUIRE, data2=TARGET_SELF))
            assert reply.data2 == 0, "nothing was moved to the new process"
            (orphan,) = setup.daemon.state.leases.orphans(b"LS")
            assert orphan.key == (b"LS", b"R1")
            assert await leader_timestamp(setup, b"R1") != 0, "the orphan still holds R1 on disk"
            # release the orphans of the lockspace: the result is how many
            release = Resource(b"LS", b"").encode(with_disks=False)
            reply, _ = await call(
                conn, Header(Cmd.RELEASE, REL_ORPHAN, HEADER_SIZE + 128, 1, data2=TARGET_SELF), release
            )
            assert reply.result == 1
    assert await leader_timestamp(setup, b"R1") == 0
    assert setup.daemon.state.leases.orphans(b"LS") == []
