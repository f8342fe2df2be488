"""Connections served inline from the idle watch, and promoted to a task of their own.

``leased/daemon.py`` serves a connection from the idle watch (no task) while
every command it sends is answered from memory, and promotes it to a task
at its first command that may wait.  A registered process can hold a lease
while its connection is still served inline: another process acquired it on
its behalf (``data2``, the target pid).  What that must not change is the
release rule (a bug in inline serving keeps the holder's lease, its close
releases it on disk), the order of replies across a promotion, and service
when the idle watch has no room.  An in-process daemon over its real socket;
the holder is this test process, which keeps running.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from inprocess import (
    FramingBug,
    InjectedBug,
    MiB,
    call,
    r1_owner,
    read_reply,
    recv_exactly,
    serving,
)

from leased.client_socket import Connection, peer_pidfd_supported
from leased.daemon import Daemon
from leased.protocol import (
    HEADER_SIZE,
    TARGET_SELF,
    Cmd,
    Disk,
    Header,
    Options,
    Resource,
)
from leased.socket_watch import SocketWatch
from leased.state import ClientState

pytestmark = pytest.mark.timeout(60)


def acquire_r1(path: Path, target_pid: int) -> bytes:
    body = Resource(b"LS", b"R1", disks=(Disk(str(path), MiB),)).encode() + Options().encode()
    return Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=target_pid).encode() + body


async def register_and_hold_r1_on_its_behalf(daemon: Daemon, path: Path) -> trio.SocketStream:
    """A registered connection that only ever sent REGISTER, holding R1 through another one's ACQUIRE."""
    holder = await trio.open_unix_socket(daemon.config.socket_path)
    await holder.send_all(Header(Cmd.REGISTER).encode())
    async with await trio.open_unix_socket(daemon.config.socket_path) as manager:
        # The REGISTER may still be in flight: retry while the pid is not registered yet (-ESRCH).
        while True:
            await manager.send_all(acquire_r1(path, os.getpid()))
            reply, _ = await read_reply(manager)
            if reply.result != -3:
                break
            await trio.sleep(0.01)
    assert reply.result == 0, reply
    assert await r1_owner(path) == 1
    await only_registered_left(daemon)
    (client,) = registered(daemon)
    assert [t.key for t in client.tokens] == [(b"LS", b"R1")]
    return holder


async def only_registered_left(daemon: Daemon) -> None:
    """Wait until every one-shot connection is gone, so an injected bug meets the registered one."""
    while any(not c.registered for c in daemon.state.clients.values()):
        await trio.sleep(0.01)


def registered(daemon: Daemon) -> list[ClientState]:
    return [c for c in daemon.state.clients.values() if c.registered and not c.dead]


async def register_inquire_close(daemon: Daemon) -> None:
    """What a short-lived libsanlock client does: REGISTER (no reply), INQUIRE (holding nothing), close."""
    async with await trio.open_unix_socket(daemon.config.socket_path) as conn:
        await conn.send_all(Header(Cmd.REGISTER).encode())
        reply, payload = await call(conn, Header(Cmd.INQUIRE, data2=TARGET_SELF))
        assert (reply.cmd, reply.result, payload) == (Cmd.INQUIRE, 0, b"")


def connection_tasks(daemon: Daemon) -> list[str]:
    """The daemon's tasks that serve one connection each (promoted ones)."""
    return [task.name for task in daemon.nursery.child_tasks if task.name.endswith("._connection")]


async def test_a_parked_holders_close_releases_its_lease_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "leases"
    with trio.fail_after(30):
        async with serving(tmp_path, join=True) as daemon:
            holder = await register_and_hold_r1_on_its_behalf(daemon, path)
            await holder.aclose()  # for sanlock's clients, the process exited
            while registered(daemon) or await r1_owner(path) != 0:
                await trio.sleep(0.01)
            assert not list(daemon.state.leases.tokens()), "no lease left in the daemon"


async def test_a_promotion_keeps_the_order_of_what_the_connection_sent(tmp_path: Path) -> None:
    """REGISTER, ACQUIRE (may wait: promoted) and INQUIRE in one send: answered in order, INQUIRE after the lease.

    Once the waiting commands are answered the connection goes back into
    the idle watch: its task ends and its next INQUIRE is answered inline.
    """
    path = tmp_path / "leases"
    with trio.fail_after(30):
        async with (
            serving(tmp_path, join=True) as daemon,
            await trio.open_unix_socket(daemon.config.socket_path) as conn,
        ):
            await conn.send_all(
                Header(Cmd.REGISTER, seq=1).encode()
                + acquire_r1(path, TARGET_SELF)
                + Header(Cmd.INQUIRE, seq=3, data2=TARGET_SELF).encode()
            )
            acquired, _ = await read_reply(conn)
            inquired, payload = await read_reply(conn)
            assert (acquired.cmd, acquired.result) == (Cmd.ACQUIRE, 0)
            assert (inquired.cmd, inquired.seq, inquired.result, inquired.data2) == (Cmd.INQUIRE, 3, 0, 1)
            assert payload.startswith(b"LS:R1:")
            release = Resource(b"LS", b"R1").encode()
            reply, _ = await call(
                conn, Header(Cmd.RELEASE, length=HEADER_SIZE + len(release), data=1, data2=TARGET_SELF), release
            )
            assert (reply.cmd, reply.result) == (Cmd.RELEASE, 0)
            while connection_tasks(daemon):  # its task ends once the RELEASE is answered
                await trio.sleep(0.01)
            reply, _ = await call(conn, Header(Cmd.INQUIRE, seq=5, data2=TARGET_SELF))
            assert (reply.cmd, reply.seq, reply.result, reply.data2) == (Cmd.INQUIRE, 5, 0, 0)
            assert not connection_tasks(daemon), "an INQUIRE is answered inline again"


async def test_with_no_room_in_the_idle_watch_a_connection_gets_its_own_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_add = SocketWatch.add

    def add(watch: SocketWatch[object], fd: int, member: object) -> None:
        if isinstance(member, Connection):  # the listener still goes in
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_add(watch, fd, member)

    monkeypatch.setattr(SocketWatch, "add", add)
    with trio.fail_after(30), caplog.at_level(logging.WARNING, logger="leased.daemon"):
        async with serving(tmp_path) as daemon:
            for _ in range(3):
                await register_inquire_close(daemon)
            while daemon.state.clients:
                await trio.sleep(0.01)
    assert "idle watch full" in caplog.text


async def test_a_registered_connection_is_served_from_the_idle_watch_for_its_whole_life(tmp_path: Path) -> None:
    """Immediate commands one at a time on one registered connection: answered in order, with no task for it."""
    with trio.fail_after(30):
        async with serving(tmp_path) as daemon, await trio.open_unix_socket(daemon.config.socket_path) as conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            for seq in range(100):
                await conn.send_all(Header(Cmd.INQUIRE, seq=seq, data2=TARGET_SELF).encode())
                reply = Header.decode(await recv_exactly(conn, HEADER_SIZE))
                assert (reply.cmd, reply.seq, reply.result) == (Cmd.INQUIRE, seq, 0)
                assert not connection_tasks(daemon)
            (client,) = registered(daemon)
            assert client.pid == os.getpid()


def pidfds_open() -> int:
    """pidfds open in this process (the in-process daemon's among them)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]"
    return count


async def test_a_registered_process_that_holds_nothing_costs_no_pidfd(tmp_path: Path) -> None:
    """The pidfd is opened when first needed, from the connection (SO_PEERPIDFD): register+inquire opens none."""
    if not peer_pidfd_supported():
        pytest.skip("this kernel has no SO_PEERPIDFD (Linux 6.5): pidfds are opened at REGISTER")
    with trio.fail_after(30):
        async with serving(tmp_path) as daemon:
            before = pidfds_open()
            conns = [await trio.open_unix_socket(daemon.config.socket_path) for _ in range(20)]
            for conn in conns:
                await conn.send_all(Header(Cmd.REGISTER).encode())
                reply, _ = await call(conn, Header(Cmd.INQUIRE, data2=TARGET_SELF))
                assert reply.result == 0
            assert len(registered(daemon)) == 20
            assert pidfds_open() == before
            (first, *_) = registered(daemon)
            pidfd = first.pidfd  # asked for: opened now, naming this process
            assert pidfd >= 0 and pidfds_open() == before + 1
            with open(f"/proc/self/fdinfo/{pidfd}") as info:
                assert f"Pid:\t{os.getpid()}\n" in info.read()
            for conn in conns:
                await conn.aclose()
            while daemon.state.clients:
                await trio.sleep(0.01)
            assert pidfds_open() == before, "each closed with its client"


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(64)
        if not chunk:
            break
        line += chunk
    return line


HOLDER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sock.sendall(bytes.fromhex(sys.argv[2]))
print("registered", flush=True)
sys.stdin.readline()
sock.sendall(bytes.fromhex(sys.argv[3]))
try:
    closed = sock.recv(64) == b""
except ConnectionResetError:
    closed = True
print("closed" if closed else "answered", flush=True)
sys.stdin.read()
"""


async def test_a_parked_holder_whose_connection_broke_is_released_when_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug closes a parked holder's connection; the daemon then sees the process exit through its pidfd.

    The pidfd is opened lazily from the connection, so it must be opened
    before that connection is closed: the process's exit is the only way its
    lease may go after that.
    """
    path = tmp_path / "leases"
    bug = FramingBug(monkeypatch)

    with trio.fail_after(30):
        async with serving(tmp_path, join=True) as daemon:
            holder = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-c",
                    HOLDER,
                    daemon.config.socket_path,
                    Header(Cmd.REGISTER).encode().hex(),
                    Header(Cmd.INQUIRE, data2=TARGET_SELF).encode().hex(),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            try:
                assert holder.stdin is not None and holder.stdout is not None
                assert await read_line(holder.stdout) == b"registered\n"
                async with await trio.open_unix_socket(daemon.config.socket_path) as manager:
                    while True:
                        await manager.send_all(acquire_r1(path, holder.pid))
                        reply, _ = await read_reply(manager)
                        if reply.result != -3:  # -ESRCH: its REGISTER not served yet
                            break
                        await trio.sleep(0.01)
                assert reply.result == 0, reply
                await only_registered_left(daemon)
                bug.arm()
                await holder.stdin.send_all(b"\n")  # its INQUIRE meets the bug: its connection is closed
                assert await read_line(holder.stdout) == b"closed\n"
                bug.disarm()
                assert await r1_owner(path) == 1, "kept while the process runs"
            finally:
                holder.kill()
                await holder.wait()
            while await r1_owner(path) != 0:  # its exit seen through the pidfd: released on disk
                await trio.sleep(0.01)


async def test_a_bug_around_inline_serving_leaves_the_idle_watch_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure outside a connection's own boundary (here, forgetting it at its close) ends only that connection."""
    real_forget = SocketWatch.forget_closing
    armed = [True]

    def forget_closing(watch: SocketWatch[object], fd: int) -> None:
        if armed[0]:
            armed[0] = False
            raise InjectedBug("injected into the idle watch")
        real_forget(watch, fd)

    monkeypatch.setattr(SocketWatch, "forget_closing", forget_closing)
    with trio.fail_after(30), caplog.at_level(logging.ERROR, logger="leased.daemon"):
        async with serving(tmp_path) as daemon:
            for _ in range(3):
                await register_inquire_close(daemon)
            # The first one's close met the bug: not known gone, it stays registered (its pidfd is
            # watched); the two after it were served and closed as usual.
            while len(daemon.state.clients) > 1:
                await trio.sleep(0.01)
            assert not armed[0], "the bug was met"
            assert len(registered(daemon)) == 1
    assert "internal error in the idle watch" in caplog.text
