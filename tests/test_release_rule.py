"""The release rule: a lease is released on disk only when its holder is known gone.

(``leased/daemon.py`` states the rule above ``Daemon._connection``.)  Here a
bug is injected into a running daemon, once into the serving loop itself and
once into the holder's own connection, while the holder (this test process,
which keeps running) holds R1.  Neither may release R1 on disk: before the
hardening issue, the first one freed every registered client's leases on
the daemon's way out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from inprocess import FramingBug, InjectedBug, MiB, call, closed_by_daemon, init_lease_file, new_daemon, r1_owner

from leased.daemon import Daemon
from leased.protocol import HEADER_SIZE, TARGET_SELF, Cmd, Disk, Header, Lockspace, Options, Resource


async def join_and_hold_r1(daemon: Daemon, path: Path) -> trio.SocketStream:
    """Join LS, then register a connection of this process and acquire R1 on it."""
    ls = Lockspace(b"LS", 1, 0, Disk(str(path), 0)).encode()
    async with await trio.open_unix_socket(daemon.config.socket_path) as admin:
        reply, _ = await call(admin, Header(Cmd.ADD_LOCKSPACE, length=HEADER_SIZE + len(ls), data=1), ls)
        assert reply.result == 0
    holder = await trio.open_unix_socket(daemon.config.socket_path)
    await holder.send_all(Header(Cmd.REGISTER).encode())
    body = Resource(b"LS", b"R1", disks=(Disk(str(path), MiB),)).encode() + Options().encode()
    reply, _ = await call(holder, Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF), body)
    assert reply.result == 0
    assert await r1_owner(path) == 1
    return holder


def flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in flatten(inner)]
    return [exc]


async def test_a_bug_that_kills_the_serving_loop_leaves_a_live_holders_lease_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "leases"
    await init_lease_file(path)
    daemon = new_daemon(tmp_path)
    holder: trio.SocketStream | None = None

    async def bug() -> None:
        raise InjectedBug("injected into the daemon's own nursery")

    with trio.fail_after(30):
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(daemon.serve)
                holder = await join_and_hold_r1(daemon, path)
                assert daemon.nursery is not None
                daemon.nursery.start_soon(bug)
                await trio.sleep_forever()
        except BaseException as exc:  # the daemon died of the bug, as it should: it is a bug
            assert any(isinstance(leaf, InjectedBug) for leaf in flatten(exc)), exc
    assert holder is not None
    try:
        # The holder still runs (it is this process): its lease stays on disk for other hosts to
        # time out, instead of being freed under it.
        assert await r1_owner(path) == 1
    finally:
        await holder.aclose()


async def test_a_bug_in_the_holders_connection_closes_it_and_keeps_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leases"
    await init_lease_file(path)
    daemon = new_daemon(tmp_path)
    bug = FramingBug(monkeypatch)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve)
            holder = await join_and_hold_r1(daemon, path)
            async with holder:
                bug.arm()
                await holder.send_all(Header(Cmd.INQUIRE, data2=TARGET_SELF).encode())
                assert await closed_by_daemon(holder), "the broken connection is closed"
            bug.disarm()
            # Its process still runs: registered, holding R1 in the daemon and on disk.
            (client,) = [c for c in daemon.state.clients.values() if c.registered]
            assert [t.key for t in client.tokens] == [(b"LS", b"R1")]
            assert await r1_owner(path) == 1
            async with await trio.open_unix_socket(daemon.config.socket_path) as other:
                reply, _ = await call(other, Header(Cmd.VERSION))
                assert reply.result >= 0, "every other connection is served"
            # Not daemon.stop(): a stop runs the kill escalation on live holders, and the holder is us.
            nursery.cancel_scope.cancel()
    assert await r1_owner(path) == 1, "a cancelled daemon leaves a live holder's lease on disk too"
