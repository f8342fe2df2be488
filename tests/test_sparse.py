"""Sparse reads: a large, mostly-zero read kept as its head and its non-zero units.

The scan (``leased.sparse``) is held to the plain definition with
hypothesis, for used bytes anywhere (first and last byte of a unit, units
at the edges of the halved ranges, a cut-short last unit).  The storage
path is tested on a real file opened with O_DIRECT, through both shells:
what it keeps must rebuild the bytes a plain read returns, including past
the end of the file, where a reused pool buffer still holds the bytes of
its last read.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from leased.errors import LeaseError, ResultCode
from leased.sparse import SparseRead, nonzero_units, sparse_read
from leased.storage import BlockingFileStorage, FileStorage

MiB = 1 << 20


def plain_units(data: bytes, head: int, unit: int, length: int) -> list[tuple[int, bytes]]:
    """The definition: every unit after the head with a non-zero byte, cut short at ``length``."""
    return [
        (index, data[start : min(start + unit, length)])
        for index, start in enumerate(range(head, length, unit))
        if any(data[start : min(start + unit, length)])
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 7, 512]),
    st.integers(0, 3),
    st.integers(0, 40),
    st.integers(0, 511),
    st.lists(st.tuples(st.integers(0, 45), st.sampled_from(["first", "last", "middle"])), max_size=8),
)
def test_sparse_read_keeps_exactly_the_non_zero_units(
    unit: int, head_units: int, count: int, cut: int, marks: list[tuple[int, str]]
) -> None:
    head = head_units * unit
    length = head + count * unit + cut % unit  # a last unit cut short when unit > 1
    data = bytearray(length + unit)  # bytes past ``length`` are not part of the read
    data[length:] = b"\x01" * unit
    for index, where in marks:
        start = head + index * unit
        at = start + {"first": 0, "last": unit - 1, "middle": unit // 2}[where]
        if at < length:
            data[at] = 0x5A
    image = bytes(data)
    read = sparse_read(image, length, head, unit)
    assert read == SparseRead(length, image[:head], unit, tuple(plain_units(image, head, unit, length)))
    assert read.whole() == image[:length]


def test_nonzero_units_reads_in_place_and_refuses_ranges_past_the_buffer() -> None:
    buffer = mmap.mmap(-1, 4 * 4096)
    buffer[5 * 512 + 3] = 1
    buffer[31 * 512] = 1
    assert nonzero_units(buffer, 0, 512, 32) == [5, 31]
    assert nonzero_units(buffer, 512, 512, 31) == [4, 30]
    assert nonzero_units(buffer, 0, 512, 0) == []
    with pytest.raises(ValueError):
        nonzero_units(buffer, 512, 512, 32)
    with pytest.raises(ValueError):
        sparse_read(buffer, len(buffer) + 1, 0, 512)
    buffer.close()  # no view of it is left behind


def lease_file(tmp_path: Path, size: int, used: dict[int, bytes]) -> Path:
    path = tmp_path / "leases"
    image = bytearray(size)
    for offset, data in used.items():
        image[offset : offset + len(data)] = data
    path.write_bytes(bytes(image))
    return path


async def test_read_sparse_through_the_trio_shell_matches_a_plain_read(tmp_path: Path) -> None:
    used = {0: b"leader", 512: b"request", 2 * 512 + 7 * 512: b"host 8", MiB - 512: b"host 2046, the last sector"}
    storage = FileStorage(lease_file(tmp_path, 2 * MiB, used))
    assert storage.direct, "the test needs O_DIRECT storage"
    try:
        plain = await storage.read(0, MiB, 60)
        read = await storage.read_sparse(0, MiB, 1024, 512, 60)
        assert read.whole() == plain
        assert read.head == plain[:1024]
        assert [index for index, _ in read.units] == [7, 2045]
        assert read.units[0][1] == b"host 8".ljust(512, b"\0")
    finally:
        storage.close()


def test_read_sparse_past_the_end_reads_zeros_not_a_reused_buffer(tmp_path: Path) -> None:
    """A read past the end of a file leaves the tail of the pool buffer untouched: it must read as zeros."""
    storage = BlockingFileStorage(lease_file(tmp_path, MiB + 4096, {MiB: b"\xff" * 4096}))
    try:

        async def reads() -> tuple[bytes, SparseRead, bytes]:
            full = await storage.read(4096, MiB, 60)  # fills a pool buffer, its tail with 0xff
            sparse = await storage.read_sparse(MiB, MiB, 0, 4096, 60)  # the same buffer, 4096 bytes before EOF
            plain = await storage.read(MiB, MiB, 60)
            return full, sparse, plain

        full, sparse, plain = trio.run(reads)
        assert full[-4096:] == b"\xff" * 4096
        assert plain == b"\xff" * 4096 + bytes(MiB - 4096)
        assert sparse.whole() == plain
        assert [index for index, _ in sparse.units] == [0]
    finally:
        storage.close()


def test_read_sparse_refuses_a_layout_the_read_cannot_hold(tmp_path: Path) -> None:
    storage = FileStorage(lease_file(tmp_path, MiB, {}))
    try:
        with pytest.raises(LeaseError) as refused:
            storage.read_sparse_sync(0, 4096, 8192, 512)
        assert refused.value.rc == ResultCode.EINVAL
        with pytest.raises(LeaseError) as refused:
            storage.read_sparse_sync(0, 4096, 0, 0)
        assert refused.value.rc == ResultCode.EINVAL
        assert storage.read_sparse_sync(0, 4096, 512, 512).units == ()
    finally:
        storage.close()
