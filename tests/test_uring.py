"""io_uring as lease I/O uses it: the ring itself on real files, and the trio shell's use of it.

The ring is checked against what a plain read sees in the same file;
the shell's promises are the ones threads kept: an abandoned I/O holds its
buffer and its storage's descriptor until the kernel completes it, and a
ring filled by a stalled device sends new I/O to threads instead of holding
back the storage that still works.
"""

from __future__ import annotations

import errno
import mmap
import os
import platform
import select
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from leased import storage as storage_module
from leased import uring
from leased.errors import LeaseError, ResultCode
from leased.sparse import SparseRead
from leased.storage import FileStorage, StepFailed, io_engine_in_use
from leased.torture.faultfs import FaultFS

MiB = 1 << 20
LONG = 60.0
"""A deadline no completing I/O meets, however loaded the machine."""
WAIT = 5.0

T = TypeVar("T")


def io_uring_expected() -> bool:
    """io_uring should work here: x86-64 Linux with io_uring not disabled by sysctl."""
    disabled = Path("/proc/sys/kernel/io_uring_disabled")
    return platform.machine() == "x86_64" and (not disabled.exists() or disabled.read_text().strip() == "0")


def completions(ring: uring.Ring, count: int) -> dict[int, int]:
    """Wait for ``count`` completions; ``user_data -> res``."""
    done: dict[int, int] = {}
    while len(done) < count:
        readable, _, _ = select.select([ring.event_fd], [], [], LONG)
        assert readable, "no completion within a minute"
        done.update(ring.completions())
    return done


def test_io_uring_is_used_where_the_kernel_has_it() -> None:
    why = uring.unavailable()
    if io_uring_expected():
        assert why is None
    else:
        assert why

    async def engine() -> str:
        return io_engine_in_use()

    assert trio.run(engine) == ("io_uring" if why is None else "threads")


@pytest.mark.skipif(not io_uring_expected(), reason="io_uring is used on x86-64 Linux only")
def test_the_ring_reads_and_writes_what_a_plain_read_sees(lease_file: Path) -> None:
    fd = os.open(lease_file, os.O_RDWR | os.O_DIRECT | os.O_SYNC)
    ring = uring.Ring(8)
    buf = mmap.mmap(-1, 8192)
    try:
        address = uring.buffer_address(buf)
        buf[:8192] = b"\x11" * 4096 + b"\x22" * 4096
        ring.queue(uring.OP_WRITE, fd, address, 8192, MiB, user_data=7)
        assert ring.submit() == 1
        assert completions(ring, 1) == {7: 8192}
        with lease_file.open("rb") as plain:  # buffered, after a direct write: the page cache was dropped
            plain.seek(MiB)
            assert plain.read(8192) == b"\x11" * 4096 + b"\x22" * 4096

        buf[:8192] = bytes(8192)
        ring.queue(uring.OP_READ, fd, address, 4096, MiB + 4096, user_data=8)
        ring.queue(uring.OP_READ, fd, address + 4096, 4096, MiB, user_data=9)
        assert ring.submit() == 2
        assert completions(ring, 2) == {8: 4096, 9: 4096}
        assert buf[:8192] == b"\x22" * 4096 + b"\x11" * 4096
        buf.close()  # no export is left on the buffer by taking its address
    finally:
        ring.close()
        os.close(fd)


@pytest.mark.skipif(not io_uring_expected(), reason="io_uring is used on x86-64 Linux only")
def test_a_failed_io_completes_with_minus_errno(lease_file: Path) -> None:
    fd = os.open(lease_file, os.O_RDONLY)
    ring = uring.Ring(2)
    buf = mmap.mmap(-1, 4096)
    try:
        ring.queue(uring.OP_WRITE, fd, uring.buffer_address(buf), 4096, 0, user_data=1)
        ring.submit()
        assert completions(ring, 1) == {1: -errno.EBADF}
    finally:
        ring.close()
        buf.close()
        os.close(fd)


async def test_the_shell_reports_device_errors_as_threads_do(faults: FaultFS, io_engine: str) -> None:
    path = faults.mountpoint / "leases"
    with path.open("wb") as f:
        f.truncate(4 * MiB)
    storage = FileStorage(str(path))
    try:
        await storage.write(MiB, b"\x33" * 4096, LONG)
        faults.set(read="eio", write="eio", start=MiB, end=MiB + 4096)
        with pytest.raises(LeaseError) as read_error:
            await storage.read(MiB, 4096, LONG)
        with pytest.raises(LeaseError) as write_error:
            await storage.write(MiB, bytes(4096), LONG)
        assert read_error.value.rc == write_error.value.rc == -errno.EIO
        assert f"read {path} offset {MiB} length 4096" in read_error.value.detail
        faults.heal()
        assert await storage.read(MiB, 4096, LONG) == b"\x33" * 4096
        assert await storage.read(4 * MiB - 512, 4096, LONG) == bytes(4096), "past the end of the file: zeros"
    finally:
        faults.heal()
        storage.close()


class CountingStorage(FileStorage):
    """A real FileStorage that counts the I/Os it hands to worker threads."""

    jobs = 0

    async def _in_worker(self, job: Callable[[], T]) -> T:
        self.jobs += 1
        return await super()._in_worker(job)


@pytest.mark.skipif(not io_uring_expected(), reason="io_uring is used on x86-64 Linux only")
async def test_a_ring_full_of_stalled_ios_sends_new_ones_to_threads(
    faults: FaultFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled device's abandoned I/Os fill the ring; another storage's I/O still runs (in a thread), and the
    abandoned ones release their storage's descriptor once the device completes them."""
    monkeypatch.setattr(storage_module, "RING_ENTRIES", 2)
    stalled_path = faults.mountpoint / "leases"
    with stalled_path.open("wb") as f:
        f.truncate(4 * MiB)
    healthy_path = tmp_path / "healthy"
    healthy_path.write_bytes(b"\x44" * 4096)
    stalled = FileStorage(str(stalled_path))
    healthy = CountingStorage(str(healthy_path))
    try:
        with trio.fail_after(LONG):
            assert io_engine_in_use() == "io_uring"
            assert await healthy.read(0, 4096, LONG) == b"\x44" * 4096
            assert healthy.jobs == 0, "with room in the ring, no thread"
            faults.set(read="stall")
            for _ in range(2):
                with pytest.raises(LeaseError) as timed_out:
                    await stalled.read(0, 512, timeout=0.2)
                assert timed_out.value.rc == ResultCode.AIO_TIMEOUT
            faults.wait_stalled(2, timeout=WAIT)
            assert await healthy.read(0, 4096, LONG) == b"\x44" * 4096
            assert healthy.jobs == 1, "the ring is full: a thread"
            stalled.close()  # deferred: the kernel still holds two I/Os on the descriptor
            assert faults.counts()["open"] == 1
            faults.heal()
            while faults.counts()["open"]:  # both completed, the real close happened, the kernel sent RELEASE
                await trio.sleep(0.01)
            assert await healthy.read(0, 4096, LONG) == b"\x44" * 4096
            assert healthy.jobs == 1, "the completed I/Os left the ring: room again"
    finally:
        faults.heal()
        stalled.close()
        healthy.close()


@pytest.mark.skipif(not io_uring_expected(), reason="io_uring is used on x86-64 Linux only")
async def test_a_ballot_phase_read_has_its_own_deadline_from_the_write(
    faults: FaultFS, mock_clock: trio.testing.MockClock
) -> None:
    """The linked pair gives each I/O ``timeout``: the read's runs from the write's completion, as two timed I/Os
    would (sanlock's).  trio's clock is moved by hand, so no deadline depends on how loaded the machine is."""
    path = faults.mountpoint / "leases"
    with path.open("wb") as f:
        f.truncate(4 * MiB)
    storage = FileStorage(str(path))
    block = b"\x5a" * 512
    outcome: list[object] = []

    async def phase() -> None:
        try:
            outcome.append(await storage.write_then_read_sparse(MiB + 1024, block, MiB, MiB, 1024, 512, timeout=10))
        except StepFailed as exc:
            outcome.append((exc.step, exc.rc))

    try:
        async with trio.open_nursery() as nursery:
            faults.set(write="stall")
            nursery.start_soon(phase)
            await trio.to_thread.run_sync(faults.wait_stalled, 1, WAIT)
            mock_clock.jump(6)  # the write is 6 s in: within its 10
            faults.set(read="stall")
            faults.release()  # the write completes; the kernel starts the read, which stalls
            await trio.to_thread.run_sync(faults.wait_stalled, 1, WAIT)
            await trio.testing.wait_all_tasks_blocked()  # the write's completion has been taken
            mock_clock.jump(6)  # 12 s after the pair began, 6 s into the read
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == [], "the read's deadline runs from the write's completion, not from the pair's start"
            faults.heal()
        [done] = outcome
        assert isinstance(done, SparseRead) and done.units == ((0, block),)

        outcome.clear()
        async with trio.open_nursery() as nursery:
            faults.set(read="stall")
            nursery.start_soon(phase)
            await trio.to_thread.run_sync(faults.wait_stalled, 1, WAIT)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(11)
        assert outcome == [("read", ResultCode.AIO_TIMEOUT)]
    finally:
        faults.heal()
        storage.close()


@pytest.mark.skipif(not io_uring_expected(), reason="io_uring is used on x86-64 Linux only")
def test_a_run_ending_with_an_io_in_flight_never_unmaps_its_buffer(faults: FaultFS) -> None:
    """The kernel may still write into an abandoned I/O's buffer after the ring is gone: the memory stays mapped,
    so its address is never handed to another buffer."""
    path = faults.mountpoint / "leases"
    with path.open("wb") as f:
        f.truncate(MiB)
    before = len(storage_module._NEVER_FREED)

    async def abandon_a_stalled_read() -> None:
        storage = FileStorage(str(path))
        assert io_engine_in_use() == "io_uring"
        faults.set(read="stall")
        with pytest.raises(LeaseError) as timed_out:
            await storage.read(0, 4096, timeout=0.2)
        assert timed_out.value.rc == ResultCode.AIO_TIMEOUT
        await trio.to_thread.run_sync(faults.wait_stalled, 1, WAIT)
        storage.close()

    try:
        trio.run(abandon_a_stalled_read)
        kept = storage_module._NEVER_FREED[before:]
        assert len(kept) == 1 and not kept[0].closed and len(kept[0]) >= 4096
    finally:
        faults.heal()


async def test_where_no_ring_can_be_set_up_lease_io_runs_in_threads(
    lease_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A machine the ring is not written for (here: told it is arm64) gets threads, with the reason logged."""
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert uring.unavailable() == "io_uring is used on x86-64 only (this is aarch64)"
    storage = CountingStorage(str(lease_file))
    try:
        with caplog.at_level("WARNING", logger="leased.storage"):
            assert io_engine_in_use() == "threads"
        assert "io_uring not used, lease I/O runs in threads: io_uring is used on x86-64 only" in caplog.text
        await storage.write(MiB, b"\x55" * 512, LONG)
        assert await storage.read(MiB, 512, LONG) == b"\x55" * 512
        assert storage.jobs == 2
    finally:
        storage.close()
