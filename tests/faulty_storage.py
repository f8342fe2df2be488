"""A :class:`~leased.storage.Storage` that fails, stalls, delays or tears chosen I/O.

Each host in a test gets its own :class:`FaultyStorage`, wrapping its own
:class:`~leased.storage.FileStorage` handle (``O_DIRECT``) on the one lease
file, as two hosts would.  The wrapper numbers every operation, reads and
writes together, from 0; a :class:`Fault` names the operation it hits and
what happens to it:

* ``EIO``: nothing reaches the disk; the caller gets ``-EIO`` at once.
* ``STALL``: nothing reaches the disk; the caller gets ``AIO_TIMEOUT`` when
  its deadline passes, as it would from a device that never answers.
* ``LATE``: the caller gets ``AIO_TIMEOUT`` when its deadline passes, but the
  write is not lost: like an abandoned I/O still queued in the kernel, it
  lands later, in a task of the test's nursery, when the test calls
  :meth:`FaultyStorage.land_late_writes` (directly or from an ``at_op`` hook
  of another host, to land it between two of that host's operations).
* ``TORN``: the first ``tear_at`` bytes of the write land and the rest keep
  their old bytes; the caller gets ``-EIO``.  Every record sits at the start
  of its sector (leader 200 bytes, dblock 56), so where the tear falls
  decides what a reader sees: 40 splits both records before their checksum;
  256, half a 512-byte sector, leaves the record whole (the write landed
  but the caller was told it failed).

A read has nothing to tear or to land later: on a read ``TORN`` acts as
``EIO`` and ``LATE`` as ``STALL``.

Writes are tracked in a :class:`Disk` shared by every handle on the file, so
a test can tell a sector that was torn (and not rewritten since) from one
whose checksum went bad for another reason.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from leased.errors import LeaseError, ResultCode
from leased.sparse import SparseRead, sparse_read
from leased.storage import FileStorage, Storage, write_then_read_sparse

LAND_TIMEOUT = 10.0
"""Deadline for a late write to land once the test releases it."""


class Kind(enum.Enum):
    EIO = "eio"
    STALL = "stall"
    LATE = "late"
    TORN = "torn"


@dataclass(frozen=True)
class Fault:
    """What happens to operation number ``op`` of one handle."""

    kind: Kind
    op: int
    tear_at: int = 40

    def __str__(self) -> str:
        tear = f"@{self.tear_at}" if self.kind is Kind.TORN else ""
        return f"{self.kind.value}{tear} at op {self.op}"


@dataclass(frozen=True)
class Op:
    """One operation as the caller asked for it."""

    index: int
    write: bool
    offset: int
    length: int

    def __str__(self) -> str:
        return f"{'W' if self.write else 'R'}{self.index} {self.offset}+{self.length}"


@dataclass
class Disk:
    """What the handles on one file know about it: its sector size and the torn sectors."""

    sector_size: int
    torn: set[int] = field(default_factory=set)

    def wrote(self, offset: int, length: int) -> None:
        """A write landed whole: its sectors are no longer torn."""
        self.torn.difference_update(range(offset, offset + length, self.sector_size))

    def tore(self, offset: int, tear_at: int, length: int) -> None:
        """A torn write: sectors before the tear are new, the one it falls in is mixed."""
        self.wrote(offset, tear_at - tear_at % self.sector_size)
        if tear_at < length and tear_at % self.sector_size:
            self.torn.add(offset + tear_at - tear_at % self.sector_size)


@dataclass
class _LateWrite:
    offset: int
    data: bytes
    go: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


class ThroughReadAndWrite:
    """A test double's composite I/Os made of its own ``read`` and ``write`` (mix in first).

    ``read_sparse`` is one read, kept sparse as the real storage keeps it;
    ``write_then_read_sparse`` is a write, then a read: so a double that
    fails, gates or counts reads and writes does so for these too, and a
    ballot phase is two operations, as it was before the real storage
    learnt to run both in one I/O job.
    """

    async def read_sparse(self: Storage, offset: int, length: int, head: int, unit: int, timeout: float) -> SparseRead:
        return sparse_read(await self.read(offset, length, timeout), length, head, unit)

    async def write_then_read_sparse(
        self: Storage, write_offset: int, data: bytes, offset: int, length: int, head: int, unit: int, timeout: float
    ) -> SparseRead:
        return await write_then_read_sparse(self, write_offset, data, offset, length, head, unit, timeout)


class FaultyStorage(ThroughReadAndWrite):
    """:class:`~leased.storage.Storage` over a real file, with faults at chosen operations.

    ``nursery`` runs late writes; it must outlive every I/O of this handle
    (use pytest-trio's ``nursery`` fixture).  ``at_op`` maps an operation
    number to a coroutine function run just before that operation starts,
    which lets a test interleave events with this handle's I/O without
    sleeping.
    """

    def __init__(
        self,
        path: str,
        disk: Disk,
        nursery: trio.Nursery,
        faults: tuple[Fault, ...] = (),
        at_op: dict[int, Callable[[], Awaitable[object]]] | None = None,
    ) -> None:
        self._inner = FileStorage(path)
        assert self._inner.direct, "lease tests need O_DIRECT storage"
        self._disk = disk
        self._nursery = nursery
        self._faults = {fault.op: fault for fault in faults}
        self._at_op = dict(at_op or {})
        self._late: list[_LateWrite] = []
        self.ops: list[Op] = []
        self.hit: list[tuple[Fault, Op]] = []

    @property
    def path(self) -> str:
        return self._inner.path

    def _begin(self, write: bool, offset: int, length: int) -> tuple[Op, Fault | None]:
        op = Op(len(self.ops), write, offset, length)
        self.ops.append(op)
        return op, self._faults.get(op.index)

    async def _hook(self, op: Op) -> None:
        hook = self._at_op.pop(op.index, None)
        if hook is not None:
            await hook()

    async def read(self, offset: int, length: int, timeout: float) -> bytes:
        op, fault = self._begin(False, offset, length)
        await self._hook(op)
        if fault is None:
            return await self._inner.read(offset, length, timeout)
        self.hit.append((fault, op))
        if fault.kind in (Kind.EIO, Kind.TORN):
            raise LeaseError(ResultCode.EIO, f"injected EIO on read {op}")
        await self._stall(timeout)
        raise LeaseError(ResultCode.AIO_TIMEOUT, f"injected stall: read {op} timed out after {timeout}s")

    async def write(self, offset: int, data: bytes, timeout: float) -> None:
        op, fault = self._begin(True, offset, len(data))
        await self._hook(op)
        if fault is None:
            await self._inner.write(offset, data, timeout)
            self._disk.wrote(offset, len(data))
            return
        self.hit.append((fault, op))
        if fault.kind is Kind.EIO:
            raise LeaseError(ResultCode.EIO, f"injected EIO on write {op}")
        if fault.kind is Kind.TORN:
            old = await self._inner.read(offset, len(data), timeout)
            await self._inner.write(offset, data[: fault.tear_at] + old[fault.tear_at :], timeout)
            self._disk.tore(offset, fault.tear_at, len(data))
            raise LeaseError(ResultCode.EIO, f"injected torn write {op}: only {fault.tear_at} bytes landed")
        await self._stall(timeout)
        if fault.kind is Kind.LATE:
            late = _LateWrite(offset, bytes(data))
            self._late.append(late)
            self._nursery.start_soon(self._land, late)
        raise LeaseError(ResultCode.AIO_TIMEOUT, f"injected stall: write {op} timed out after {timeout}s")

    @staticmethod
    async def _stall(timeout: float) -> None:
        """A device that does not answer: the caller's deadline passes."""
        with trio.move_on_after(timeout):
            await trio.sleep_forever()

    async def _land(self, late: _LateWrite) -> None:
        try:
            await late.go.wait()
            await self._inner.write(late.offset, late.data, LAND_TIMEOUT)
            self._disk.wrote(late.offset, len(late.data))
        finally:
            late.done.set()

    @property
    def late_pending(self) -> int:
        return len(self._late)

    async def land_late_writes(self) -> int:
        """Let every abandoned write land now; return when they are on disk."""
        pending, self._late = self._late, []
        for late in pending:
            late.go.set()
        for late in pending:
            await late.done.wait()
        return len(pending)

    def close(self) -> None:
        self._inner.close()
