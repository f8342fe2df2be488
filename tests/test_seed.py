"""The seed of this project, reproduced: unserialized calls on one registered connection.

sanlock lost leases when a client sent header and body of two calls from two
threads without a lock: the daemon received header_1, header_2, body_1,
body_2, misread the stream, and (before 3.8.4) closed the connection and
released every lease the client still believed it held.  Here the bytes are
sent raw, exactly in that order, to a leased daemon on a real Unix socket.
The daemon must log the damage, keep the connection and every lease, and
serve the next well-formed request on the same connection correctly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
from inprocess import RESOURCES, InProcessDaemon, read_reply

from leased import paxos_lease
from leased.protocol import (
    HEADER_SIZE,
    TARGET_SELF,
    Cmd,
    Header,
    Options,
    Resource,
)
from leased.storage import FileStorage
from leased.text_forms import parse_state

MiB = 1 << 20


def acquire_msg(setup: InProcessDaemon, name: bytes) -> tuple[bytes, bytes]:
    body = Resource(b"LS", name, disks=(setup.disk(name),)).encode() + Options().encode()
    header = Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF)
    return header.encode(), body


def release_msg(name: bytes) -> tuple[bytes, bytes]:
    body = Resource(b"LS", name, num_disks=1).encode(with_disks=False)
    return Header(Cmd.RELEASE, length=HEADER_SIZE + len(body), data=1, data2=TARGET_SELF).encode(), body


async def one_shot(setup: InProcessDaemon, header: Header, body: bytes = b"") -> tuple[Header, bytes]:
    stream = await trio.open_unix_socket(setup.socket_path)
    async with stream:
        await stream.send_all(header.encode() + body)
        return await read_reply(stream)


async def held_by_us(setup: InProcessDaemon) -> list[bytes]:
    """What the daemon says this process holds, asked on a second connection."""
    reply, payload = await one_shot(setup, Header(Cmd.INQUIRE, data2=os.getpid()))
    assert reply.result == 0, reply
    return [r.name for r in parse_state(payload.decode())] if payload.strip(b"\0") else []


@pytest.fixture
def setup(joined_daemon: InProcessDaemon) -> InProcessDaemon:
    return joined_daemon


async def test_race_a_interleaved_calls_keep_connection_leases_and_stream(
    setup: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="leased")
    with trio.fail_after(30):
        conn = await trio.open_unix_socket(setup.socket_path)
        async with conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            h, b = acquire_msg(setup, b"R1")
            await conn.send_all(h + b)
            reply, _ = await read_reply(conn)
            assert reply.result == 0, reply
            assert await held_by_us(setup) == [b"R1"]

            # Two threads without a lock: header_1, header_2, body_1, body_2.
            header_1, body_1 = acquire_msg(setup, b"R2")
            header_2, body_2 = release_msg(b"R3")
            caplog.clear()
            await conn.send_all(header_1 + header_2 + body_1 + body_2)
            # The daemon treats header_2 + the start of body_1 as a release of R2 (not held: -1);
            # the rest is garbage it logs and skips.  Then a well-formed inquire on the same connection:
            await conn.send_all(Header(Cmd.INQUIRE, data2=TARGET_SELF).encode())
            replies = []
            while True:
                reply, payload = await read_reply(conn)
                replies.append(reply)
                if reply.cmd == Cmd.INQUIRE:
                    break
            assert reply.result == 0 and reply.data2 == 1
            assert [r.name for r in parse_state(payload.decode())] == [b"R1"]
            assert all(r.cmd in (Cmd.ACQUIRE, Cmd.RELEASE, Cmd.INQUIRE) for r in replies)

            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any("body is another header" in e for e in errors), errors
            assert any("cmd 7" in e for e in errors), "the dropped header's command is named"
            # still registered, still holding R1: through a second connection and on disk
            assert await held_by_us(setup) == [b"R1"]
            storage = FileStorage(str(setup.path))
            try:
                area = await paxos_lease.discover_resource(storage, MiB, "LS", "R1", 1)
                leader = await paxos_lease.read_leader(area, 0, 1)
            finally:
                storage.close()
            assert leader.owner_id == 1 and leader.timestamp != 0, "R1 must still be owned on disk"

            # and the connection keeps serving: a clean acquire and release of R2
            h, b = acquire_msg(setup, b"R2")
            await conn.send_all(h + b)
            reply, _ = await read_reply(conn)
            assert (reply.cmd, reply.result) == (Cmd.ACQUIRE, 0)
            assert sorted(await held_by_us(setup)) == [b"R1", b"R2"]


async def test_garbage_on_registered_connection_is_skipped(
    setup: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="leased")
    with trio.fail_after(30):
        conn = await trio.open_unix_socket(setup.socket_path)
        async with conn:
            await conn.send_all(Header(Cmd.REGISTER).encode())
            h, b = acquire_msg(setup, b"R1")
            await conn.send_all(h + b)
            assert (await read_reply(conn))[0].result == 0
            garbage = os.urandom(100).replace(b"\x10", b"\x11")  # no magic byte inside
            cases = [
                (Header(Cmd.INQUIRE, magic=0x11111111).encode() + garbage, "magic 0x11111111"),
                (Header(Cmd.INQUIRE, version=0x20000).encode(), "version 0x20000"),
                (Header(99).encode(), "cmd 99 unknown"),
            ]
            for junk, complaint in cases:
                caplog.clear()
                await conn.send_all(junk + Header(Cmd.INQUIRE, data2=TARGET_SELF).encode())
                reply, payload = await read_reply(conn)
                assert (reply.cmd, reply.result, reply.data2) == (Cmd.INQUIRE, 0, 1)
                assert [r.name for r in parse_state(payload.decode())] == [b"R1"]
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert len(errors) == 1 and complaint in errors[0], errors
                assert f"pid {os.getpid()}" in errors[0]


async def test_locked_clients_from_many_threads_and_tasks_never_interleave(
    setup: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """The fix: one lock per connection.  The same concurrent calls through Client and AsyncClient are all clean."""
    from concurrent.futures import ThreadPoolExecutor

    from leased.client import AsyncClient, Client

    caplog.set_level(logging.ERROR, logger="leased")
    run_dir = str(Path(setup.socket_path).parent)
    disks = {name: [(str(setup.path), setup.disk(name).offset)] for name in RESOURCES}

    def threaded() -> list[str]:
        problems: list[str] = []
        with Client(run_dir, timeout=30).register() as reg:

            def worker(index: int) -> None:
                name = RESOURCES[index % len(RESOURCES)]
                for _ in range(10):
                    held = {lease.resource for lease in reg.inquire()}
                    if index < len(RESOURCES):  # one owner thread per resource: acquire/release cycles
                        lease = reg.acquire(b"LS", name, disks[name])
                        if lease.resource != name or lease.lver is None or lease.lver < 1:
                            problems.append(f"thread {index}: acquire reply {lease}")
                        reg.release(b"LS", name)
                    elif not held <= set(RESOURCES):
                        problems.append(f"thread {index}: inquire reply {held}")

            with ThreadPoolExecutor(8) as pool:
                for future in [pool.submit(worker, i) for i in range(8)]:
                    future.result()
        return problems

    with trio.fail_after(120):
        assert await trio.to_thread.run_sync(threaded) == []
        async with AsyncClient(run_dir, timeout=30).register() as areg:

            async def task(index: int) -> None:
                name = RESOURCES[index % len(RESOURCES)]
                for _ in range(10):
                    held = {lease.resource for lease in await areg.inquire()}
                    assert held <= set(RESOURCES)
                    if index < len(RESOURCES):
                        lease = await areg.acquire(b"LS", name, disks[name])
                        assert lease.resource == name and lease.lver is not None and lease.lver >= 1
                        await areg.release(b"LS", name)

            async with trio.open_nursery() as nursery:
                for index in range(8):
                    nursery.start_soon(task, index)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
