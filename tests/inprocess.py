"""Helpers for tests that run a leased daemon inside the test's trio loop and talk raw wire bytes to it."""

from __future__ import annotations

from pathlib import Path

import trio

from leased import delta_lease, paxos_lease
from leased.geometry import Geometry
from leased.protocol import HEADER_SIZE, Header
from leased.storage import FileStorage

MiB = 1 << 20
RESOURCES = (b"R1", b"R2", b"R3")


async def init_lease_file(path: Path, size: int = 4 * MiB) -> None:
    """Lockspace LS (io_timeout 1) at 0 and resources R1..R3 at 1, 2, 3 MiB."""
    with path.open("wb") as f:
        f.truncate(size)
    storage = FileStorage(str(path))
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", Geometry(512, MiB), 1)
        for index, name in enumerate(RESOURCES, start=1):
            await paxos_lease.init_resource(storage, index * MiB, "LS", name, Geometry(512, MiB))
    finally:
        storage.close()


async def recv_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


async def read_reply(stream: trio.SocketStream) -> tuple[Header, bytes]:
    header = Header.decode(await recv_exactly(stream, HEADER_SIZE))
    return header, await recv_exactly(stream, header.length - HEADER_SIZE)


async def call(stream: trio.SocketStream, header: Header, body: bytes = b"") -> tuple[Header, bytes]:
    await stream.send_all(header.encode() + body)
    return await read_reply(stream)
