"""Storage edge cases with real files: reads past the end, and a transfer that fails half way."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import trio

from leased.errors import LeaseError, ResultCode
from leased.geometry import ALL_GEOMETRIES
from leased.storage import KEEP_MMAP_THRESHOLD, FileStorage, keep_freed_memory
from leased.torture.faultfs import FaultFS

MiB = 1 << 20


def test_read_past_end_of_file_reads_zeros(lease_file: Path) -> None:
    size = lease_file.stat().st_size
    storage = FileStorage(str(lease_file))
    try:
        storage.write_sync(size - 512, b"\x07" * 512)
        data = storage.read_sync(size - 512, 4096)
    finally:
        storage.close()
    assert data == b"\x07" * 512 + bytes(4096 - 512)


def test_transfer_failing_half_way_is_an_error_not_zeros(faults: FaultFS) -> None:
    """A 2 MiB read reaches FUSE as two requests; if the second fails, the short result must not look like zeros."""
    path = faults.mountpoint / "leases"
    with path.open("wb") as f:
        f.truncate(4 * MiB)
    faults.set(read="eio", path="leases", start=2 * MiB, end=3 * MiB)
    storage = FileStorage(str(path))
    try:
        with pytest.raises(LeaseError) as info:
            storage.read_sync(MiB, 2 * MiB)
        assert info.value.rc == ResultCode.EIO
        assert storage.read_sync(0, MiB) == bytes(MiB), "outside the failing range reads still work"
    finally:
        faults.heal()
        storage.close()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_allocator_keeps_freed_read_results() -> None:
    """glibc takes both thresholds (it refuses one above its limits), and taking them twice is harmless."""
    assert keep_freed_memory()
    assert keep_freed_memory()
    assert max(g.align_size for g in ALL_GEOMETRIES) < KEEP_MMAP_THRESHOLD  # the largest area read is below


async def test_many_concurrent_ios_each_get_their_own_answer(tmp_path: Path, io_engine: str) -> None:
    """Answers reach the event loop in batches (a thread's, a ring's): none may be lost, late or misdelivered."""
    path = tmp_path / "leases"
    path.write_bytes(bytes(MiB))
    storage = FileStorage(str(path))
    done: list[int] = []

    async def writer_reader(index: int) -> None:
        for round_ in range(8):
            data = bytes([index + 1, round_ + 1]) * 256
            await storage.write(index * 4096, data, 60)
            assert await storage.read(index * 4096, 512, 60) == data
            sparse = await storage.read_sparse(index * 4096, 4096, 0, 512, 60)
            assert sparse.units == ((0, data),)
        done.append(index)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(48):
                nursery.start_soon(writer_reader, index)
    finally:
        storage.close()
    assert sorted(done) == list(range(48))
