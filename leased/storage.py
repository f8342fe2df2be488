"""The only module that touches disks: aligned, direct, deadline-bound I/O.

Lease storage is shared with other hosts, so every read must reach the device
and every write must be on it before we act on it: files and block devices
are opened with ``O_DIRECT | O_SYNC`` (page cache bypassed, as sanlock does;
essential on NFS).  ``O_DIRECT`` needs aligned buffers, so each I/O goes
through an anonymous ``mmap`` (page aligned) and ``preadv``/``pwritev``.

Each I/O runs in a worker thread and is bounded by a deadline (normally the
lockspace's ``io_timeout``).  When the deadline passes the caller gets
``SANLK_AIO_TIMEOUT`` at once, but the thread is abandoned, not killed: the
kernel may still complete the I/O later.  Two rules follow:

* the thread owns its own buffer, so a late completion touches nothing the
  caller still uses;
* the file descriptor is not closed while any thread may still use it
  (``close()`` defers the real close until the last in-flight I/O returns),
  so a late I/O can never land on a descriptor number that was reused for
  another file.

Everything above this module talks to the :class:`Storage` protocol, so tests
can wrap a real :class:`FileStorage` to fail, stall or tear I/O.

Two shells share the same thread-side code: :class:`FileStorage` awaits the
worker thread through trio (the daemon), :class:`BlockingFileStorage` joins a
plain thread and never suspends (the daemon-less CLI, which then needs no
event loop).  trio is imported only when the trio shell is used: it is half
of a ``leased direct`` command's start-up time.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from leased.errors import LeaseError, ResultCode, rc_from_oserror
from leased.sparse import SparseRead, sparse_read

if TYPE_CHECKING:
    import trio
    from outcome import Outcome

    from leased.uring import Ring

log = logging.getLogger(__name__)

T = TypeVar("T")

_BLKSSZGET = 0x1268  # logical block size ioctl (linux/fs.h)


class _BufferPool:
    """Page-aligned I/O buffers, reused: faulting in a fresh 1 MiB mapping costs more than the read.

    A buffer goes back to the pool only when the thread that used it is done
    with it, so an abandoned (timed-out) I/O keeps its buffer until it
    completes and nobody else can be handed memory the kernel may still
    write into.
    """

    def __init__(self, keep_per_size: int = 8) -> None:
        self._lock = threading.Lock()
        self._free: dict[int, list[mmap.mmap]] = {}
        self._keep = keep_per_size

    def take(self, length: int) -> mmap.mmap:
        size = max(mmap.PAGESIZE, -(-length // mmap.PAGESIZE) * mmap.PAGESIZE)
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
        return mmap.mmap(-1, size)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            free = self._free.setdefault(len(buf), [])
            if len(free) < self._keep:
                free.append(buf)
                return
        buf.close()


_BUFFERS = _BufferPool()

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
KEEP_MMAP_THRESHOLD: Final = 16 << 20
"""Blocks below this come from the heap: above the largest read (an 8 MiB-aligned area)."""
KEEP_TRIM_THRESHOLD: Final = 64 << 20
"""Free heap memory kept rather than given back to the kernel."""


def keep_freed_memory() -> bool:
    """Ask glibc to keep the memory a read result frees for the next one; False without glibc's mallopt.

    Every ballot and renewal read returns a fresh 1 MiB ``bytes``.  By
    default glibc serves a block that size with a mapping of its own, or
    gives it back to the kernel when it is freed, so each read faulted
    256 fresh pages in: measured on one client's acquire+release loop,
    2.2 ms of the daemon's 7 ms CPU per pair was that system time.  With the
    thresholds raised, freed blocks stay in the heap and are reused; what is
    kept is bounded by the daemon's peak use, a few such blocks per thread.
    Process-wide, so the daemon calls it once at start.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    )


class Storage(Protocol):
    """Aligned lease I/O on one file or block device.

    ``read`` and ``write`` raise :class:`LeaseError` with ``AIO_TIMEOUT`` when
    the deadline passes and with ``-errno`` when the device fails.
    """

    @property
    def path(self) -> str: ...

    async def read(self, offset: int, length: int, timeout: float) -> bytes: ...

    async def read_sparse(self, offset: int, length: int, head: int, unit: int, timeout: float) -> SparseRead:
        """Read like :meth:`read`, kept as a :class:`~leased.sparse.SparseRead`: ``head`` bytes, then
        only the ``unit``-sized pieces that are not all zeros (a ballot's read of a whole area)."""
        ...

    async def write(self, offset: int, data: bytes, timeout: float) -> None: ...

    async def write_then_read_sparse(
        self, write_offset: int, data: bytes, offset: int, length: int, head: int, unit: int, timeout: float
    ) -> SparseRead:
        """:meth:`write`, then once it is on disk :meth:`read_sparse` (a phase of a ballot).

        Each I/O has ``timeout`` and fails as it would alone; a failure
        raises :class:`StepFailed` naming the I/O (no read after a failed
        write).  A storage may run both in one hand-off to its I/O thread.
        """
        ...

    def close(self) -> None: ...


class StepFailed(LeaseError):
    """One I/O of :meth:`Storage.write_then_read_sparse` failed: ``step`` says which ("write" or "read")."""

    def __init__(self, step: str, cause: LeaseError) -> None:
        super().__init__(cause.rc, cause.detail)
        self.step = step


OpenStorage = Callable[[str], Storage]
"""The daemon's ``open_storage`` seam: a lease file's path to an open storage handle."""


def open_lease_storage(open_storage: OpenStorage, path: str, missing_rc: int = ResultCode.ENODEV) -> Storage:
    """Open lease storage through the seam; a missing file is ``missing_rc`` (commands differ on it)."""
    if not path:
        raise LeaseError(missing_rc, "empty path")
    try:
        return open_storage(path)
    except LeaseError as exc:
        raise LeaseError(missing_rc if exc.rc == ResultCode.ENOENT else exc.rc, exc.detail) from exc


async def write_then_read_sparse(
    storage: Storage, write_offset: int, data: bytes, offset: int, length: int, head: int, unit: int, timeout: float
) -> SparseRead:
    """:meth:`Storage.write_then_read_sparse` as two separate I/Os, for a storage that has no faster way."""
    try:
        await storage.write(write_offset, data, timeout)
    except LeaseError as exc:
        raise StepFailed("write", exc) from exc
    try:
        return await storage.read_sparse(offset, length, head, unit, timeout)
    except LeaseError as exc:
        raise StepFailed("read", exc) from exc


@contextmanager
def lease_storage(open_storage: OpenStorage, path: str, missing_rc: int = ResultCode.ENODEV) -> Iterator[Storage]:
    """:func:`open_lease_storage` for the I/O of one command: closed when the block ends, however it ends."""
    storage = open_lease_storage(open_storage, path, missing_rc)
    try:
        yield storage
    finally:
        storage.close()


MAX_OFFSET: Final = (1 << 63) - 1
"""The largest byte offset the kernel takes (``off_t`` is signed); wire and disk fields are u64."""


def _sparse_taker(length: int, head: int, unit: int) -> Callable[[memoryview], SparseRead]:
    """What keeps a read buffer sparse (:func:`~leased.sparse.sparse_read`); EINVAL for an impossible head or unit."""
    if not 0 <= head <= length or unit <= 0:
        raise LeaseError(ResultCode.EINVAL, f"sparse read of {length} bytes: head {head}, unit {unit}")
    return partial(sparse_read, length=length, head=head, unit=unit)


def _check_range(path: str, offset: int, length: int) -> None:
    """EINVAL for a range ``pread``/``pwrite`` cannot address, instead of OverflowError from ``os``."""
    if offset < 0 or length < 0 or offset + length > MAX_OFFSET:
        raise LeaseError(ResultCode.EINVAL, f"{path}: offset {offset} length {length} outside 0..{MAX_OFFSET}")


class _AnswerBatch:
    """I/O threads' answers handed to the event loop in batches: one wake-up for all that arrive meanwhile.

    Each ``run_sync_soon`` writes a byte to trio's wake-up socket and the
    event loop reads it back; under many clients, answers arrive faster than
    the loop runs them, and those system calls (each a GIL hand-off) were
    a tenth of the daemon's GIL time.  The first answer of a batch schedules
    the batch; the others join it until the loop runs it.
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._pending: list[Callable[[], object]] = []
        self._scheduled = False

    def post(self, answer: Callable[[], object]) -> None:
        """In a worker thread: run ``answer`` in the event loop soon; RunFinishedError when it has stopped."""
        with self._lock:
            self._pending.append(answer)
            if self._scheduled:
                return
            self._scheduled = True
        self._token.run_sync_soon(self._run)

    def _run(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for answer in batch:
            answer()


_ANSWERS: list[trio.lowlevel.RunVar[_AnswerBatch | None]] = []
"""The event loop's answer batch (a ``RunVar``, made on first use: trio is imported only by the trio shell)."""


def _run_answers(token: trio.lowlevel.TrioToken) -> _AnswerBatch:
    """This trio run's :class:`_AnswerBatch`."""
    import trio

    if not _ANSWERS:
        _ANSWERS.append(trio.lowlevel.RunVar("leased.storage answers", default=None))
    answers = _ANSWERS[0].get()
    if answers is None:
        answers = _AnswerBatch(token)
        _ANSWERS[0].set(answers)
    return answers


IO_ENGINES: Final = ("auto", "threads")
"""How lease I/O reaches the kernel: ``auto`` is io_uring where it works (:mod:`leased.uring`), else threads."""

_io_engine = ["auto"]

RING_ENTRIES = 256
"""I/Os a run's ring holds at once, abandoned ones included; past it they go to threads."""


def use_io_engine(name: str) -> None:
    """Choose the I/O engine of the trio shell for this process (the daemon's ``io_engine`` setting)."""
    if name not in IO_ENGINES:
        raise ValueError(f"io engine {name!r}: one of {', '.join(IO_ENGINES)}")
    _io_engine[0] = name


_NEVER_FREED: list[mmap.mmap] = []
"""Buffers of I/Os still in flight when their ring closed (a trio run's end): kept mapped for good."""


class _RingOp:
    """I/Os in the ring for one task (one, or a linked write then read): who waits, what to release when done."""

    __slots__ = ("buffers", "on_complete", "pending", "results", "scope", "step_timeout", "task", "waiting")

    def __init__(
        self, task: trio.lowlevel.Task, buffers: tuple[mmap.mmap, ...], on_complete: Callable[[], None]
    ) -> None:
        self.task = task
        self.buffers = buffers
        self.on_complete = on_complete
        self.results: list[int | None] = [None] * len(buffers)
        self.pending = len(buffers)
        self.waiting = True  # False once answered or abandoned
        self.scope: trio.CancelScope | None = None
        self.step_timeout = 0.0


class _RingService:
    """A trio run's io_uring: submissions from tasks, completions taken by one system task.

    The task that submitted I/O is rescheduled with the results; I/O whose
    task stopped waiting (its deadline passed) is abandoned: its buffers go
    back to the pool and its storage's in-flight count drops only when the
    kernel completes it, so the kernel never writes into memory somebody
    else was given, and a closed storage's descriptor is closed only after
    its last I/O.

    What is in flight, abandoned I/Os included, is bounded by the ring's
    size.  When that is reached (a stalled device collecting abandoned
    I/Os) new I/Os go to threads, as without io_uring, instead of waiting:
    one stalled storage must not hold back the renewals of healthy ones.
    """

    def __init__(self, ring: Ring) -> None:
        self._ring = ring
        self._ios: dict[int, tuple[_RingOp, int]] = {}
        self._next = 0

    def room(self, count: int = 1) -> bool:
        """Whether ``count`` more I/Os fit in the ring."""
        return len(self._ios) + count <= self._ring.entries

    def submit(
        self, ios: Sequence[tuple[int, int, mmap.mmap, int, int]], on_complete: Callable[[], None], *, linked: bool
    ) -> _RingOp:
        """Queue ``(opcode, fd, buffer, length, offset)`` I/Os and hand them to the kernel, for :meth:`wait`.

        Only when :meth:`room` says they fit.  ``linked``: each starts when
        the one before completed in full, else completes with -ECANCELED.
        I/Os that cannot all be queued are not queued at all: LeaseError,
        the buffers given back and ``on_complete`` called.
        """
        import trio

        from leased.uring import buffer_address

        op = _RingOp(trio.lowlevel.current_task(), tuple(buf for _, _, buf, _, _ in ios), on_complete)
        try:  # all of them queued or none
            if self._ring.unsubmitted() + len(ios) > self._ring.entries:  # room() rules this out
                raise LeaseError(ResultCode.EBUSY, "io_uring submission queue full")
            addresses = [buffer_address(buffer) for buffer in op.buffers]
        except BaseException:
            for buffer in op.buffers:
                _BUFFERS.give(buffer)
            on_complete()
            raise
        last = len(ios) - 1
        for index, ((opcode, fd, _, length, offset), address) in enumerate(zip(ios, addresses, strict=True)):
            self._next += 1
            self._ring.queue(opcode, fd, address, length, offset, self._next, link=linked and index < last)
            self._ios[self._next] = (op, index)
        try:
            self._ring.submit()
        except OSError as exc:  # still queued: the next submission hands it over
            log.warning("io_uring submission deferred: %s", exc.strerror)
        return op

    async def wait(self, op: _RingOp) -> list[int]:
        """The results (bytes moved, or -errno) of ``op``'s I/Os; the caller then owns its buffers and calls
        ``on_complete``.  A cancellation abandons them: buffers and ``on_complete`` are seen to here, later."""
        import trio

        def abandon(_: object) -> trio.lowlevel.Abort:
            op.waiting = False
            return trio.lowlevel.Abort.SUCCEEDED

        results: list[int] = await trio.lowlevel.wait_task_rescheduled(abandon)
        return results

    def _complete(self) -> None:
        import trio
        from outcome import Value

        for user_data, result in self._ring.completions():
            found = self._ios.pop(user_data, None)
            if found is None:
                log.error("io_uring completion for no I/O: user_data %d res %d", user_data, result)
                continue
            op, index = found
            op.results[index] = result
            op.pending -= 1
            if op.pending:
                if op.scope is not None and result >= 0:  # the next I/O of a chain starts now: its own deadline
                    op.scope.deadline = trio.current_time() + op.step_timeout
                continue
            if op.waiting:
                op.waiting = False
                trio.lowlevel.reschedule(op.task, Value(op.results))
            else:
                for buffer in op.buffers:
                    _BUFFERS.give(buffer)
                op.on_complete()
        if self._ring.unsubmitted():
            try:
                self._ring.submit()
            except OSError as exc:
                log.warning("io_uring submission deferred: %s", exc.strerror)

    async def reap(self) -> None:
        """The system task: take completions whenever the ring's eventfd says there are some."""
        import trio

        try:
            while True:
                await trio.lowlevel.wait_readable(self._ring.event_fd)
                self._complete()
        finally:
            # The run ends with I/Os in flight (abandoned on a stalled device): the kernel may still
            # write into their buffers, unpinned yet if it queued them on its own workers, so they
            # are never unmapped and their addresses never handed to another mapping.
            _NEVER_FREED.extend(buffer for op, _ in self._ios.values() for buffer in op.buffers)
            self._ring.close()


def io_engine_in_use() -> str:
    """In a trio run: "io_uring" or "threads", what this run's lease I/O uses (a ring is set up now if it will be)."""
    return "threads" if _ring_service() is None else "io_uring"


_RINGS: list[trio.lowlevel.RunVar[_RingService | bool | None]] = []
"""The trio run's ring service; False once the ring could not be set up (threads then)."""


def _ring_with_room(count: int = 1) -> _RingService | None:
    """This run's ring if it takes ``count`` more I/Os now; None: the I/O goes to a thread."""
    service = _ring_service()
    return service if service is not None and service.room(count) else None


def _ring_service() -> _RingService | None:
    """This trio run's :class:`_RingService`, made on first use; None when the engine is threads."""
    if _io_engine[0] == "threads":
        return None
    import trio

    if not _RINGS:
        _RINGS.append(trio.lowlevel.RunVar("leased.storage ring", default=None))
    service = _RINGS[0].get()
    if isinstance(service, _RingService):
        return service
    if service is False:
        return None
    from leased.uring import Ring

    try:
        ring = Ring(RING_ENTRIES)
    except OSError as exc:  # not x86-64, too old a kernel, io_uring disabled, no memory or descriptor
        log.warning("io_uring not used, lease I/O runs in threads: %s", exc.strerror or exc)
        _RINGS[0].set(False)
        return None
    service = _RingService(ring)
    _RINGS[0].set(service)
    trio.lowlevel.spawn_system_task(service.reap, name="leased.storage io_uring completions")
    return service


class FileStorage:
    """:class:`Storage` on a real file or block device, opened for direct I/O."""

    def __init__(self, path: str | os.PathLike[str], *, writable: bool = True, direct: bool = True) -> None:
        path = os.fspath(path)  # os.open takes either; ``path`` and the messages keep a str
        self._path = path
        flags = (os.O_RDWR | os.O_SYNC) if writable else os.O_RDONLY
        self.direct = False
        try:
            if direct:
                try:
                    self._fd = os.open(path, flags | os.O_DIRECT)
                    self.direct = True
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # tmpfs and a few others refuse O_DIRECT; they are not shared storage.
                    log.warning("O_DIRECT not supported, using buffered I/O path=%s", path)
                    self._fd = os.open(path, flags)
            else:
                self._fd = os.open(path, flags)
        except OSError as exc:
            raise LeaseError(rc_from_oserror(exc), f"cannot open {path}: {exc.strerror}") from exc
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._limiter: trio.CapacityLimiter | None = None

    @property
    def path(self) -> str:
        return self._path

    def is_block_device(self) -> bool:
        return stat.S_ISBLK(os.fstat(self._fd).st_mode)

    def logical_sector_size(self) -> int:
        """The device's logical sector size; 512 for a regular file (spec §1.2)."""
        if not self.is_block_device():
            return 512
        buf = fcntl.ioctl(self._fd, _BLKSSZGET, struct.pack("i", 0))
        size: int = struct.unpack("i", buf)[0]
        return size

    def size(self) -> int:
        """Bytes in the file or device."""
        return os.lseek(self._fd, 0, os.SEEK_END)

    # -- thread side ------------------------------------------------------

    def _enter(self) -> int:
        with self._lock:
            if self._closed:
                raise LeaseError(ResultCode.EBADF, f"{self._path}: storage is closed")
            self._in_flight += 1
            return self._fd

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._closed and self._in_flight == 0:
                os.close(self._fd)

    def read_sync(self, offset: int, length: int) -> bytes:
        """Blocking read; the part past the end of a file reads as zeros, any other short read is EIO."""
        return self._read_into_pool(offset, length, bytes)

    def read_sparse_sync(self, offset: int, length: int, head: int, unit: int) -> SparseRead:
        """Blocking :meth:`read_sparse`: scanned in the pool buffer, only what holds anything copied out."""
        return self._read_into_pool(offset, length, _sparse_taker(length, head, unit))

    def write_then_read_sparse_sync(
        self,
        write_offset: int,
        data: bytes,
        offset: int,
        length: int,
        head: int,
        unit: int,
        timeout: float,
        step: list[str],
    ) -> SparseRead:
        """Blocking :meth:`write_then_read_sparse`; ``step`` gets "read" appended when the write is done.

        An I/O that completes but took longer than ``timeout`` fails with
        AIO_TIMEOUT, as the caller would have seen it alone (a write that
        lands after its deadline, as an abandoned one may).
        """
        began = time.monotonic()
        try:
            self.write_sync(write_offset, data)
        except LeaseError as exc:
            raise StepFailed("write", exc) from exc
        self._in_time("write", write_offset, began, timeout)
        step.append("read")
        began = time.monotonic()
        try:
            result = self.read_sparse_sync(offset, length, head, unit)
        except LeaseError as exc:
            raise StepFailed("read", exc) from exc
        self._in_time("read", offset, began, timeout)
        return result

    def _in_time(self, step: str, offset: int, began: float, timeout: float) -> None:
        """StepFailed (AIO_TIMEOUT) for an I/O of a pair that completed after its deadline."""
        if time.monotonic() - began > timeout:
            raise StepFailed(step, self._timed_out(step, offset, timeout))

    def _timed_out(self, what: str, offset: int, timeout: float) -> LeaseError:
        """The AIO_TIMEOUT of a ``what`` ("read" or "write") at ``offset``."""
        return LeaseError(ResultCode.AIO_TIMEOUT, f"{what} {self._path} offset {offset} timed out after {timeout}s")

    def _read_into_pool(self, offset: int, length: int, take: Callable[[memoryview], T]) -> T:
        """Read into a pool buffer and hand ``take`` a view of the ``length`` bytes before the buffer goes back.

        The part past the end of a file reads as zeros (as a fresh area
        would); any other short read is EIO.  ``take`` must not keep the view.
        """
        _check_range(self._path, offset, length)
        fd = self._enter()
        try:
            buf = _BUFFERS.take(length)
            try:
                with memoryview(buf) as whole, whole[:length] as view:
                    try:
                        done = os.preadv(fd, [view], offset) if length else 0
                    except OSError as exc:
                        raise self._read_failed(offset, length, exc) from exc
                    return self._taken(fd, view, offset, done, take)
            finally:
                _BUFFERS.give(buf)
        finally:
            self._leave()

    def _read_failed(self, offset: int, length: int, exc: OSError) -> LeaseError:
        return LeaseError(rc_from_oserror(exc), f"read {self._path} offset {offset} length {length}: {exc.strerror}")

    def _taken(self, fd: int, view: memoryview, offset: int, done: int, take: Callable[[memoryview], T]) -> T:
        """``take`` of a read that moved ``done`` bytes: zeros past the end of a file, short before it EIO."""
        length = len(view)
        if done < length:
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
            except OSError as exc:
                raise self._read_failed(offset, length, exc) from exc
            if offset + done < end:
                # Short of the end of the file or device: part of the transfer failed.
                raise LeaseError(ResultCode.EIO, f"short read {self._path} offset {offset}: {done} of {length}")
            view[done:] = bytes(length - done)  # the buffer's last user left its bytes there
        return take(view)

    def write_sync(self, offset: int, data: bytes) -> None:
        _check_range(self._path, offset, len(data))
        fd = self._enter()
        try:
            buf = _BUFFERS.take(len(data))
            try:
                buf[: len(data)] = data
                with memoryview(buf) as whole, whole[: len(data)] as view:
                    done = os.pwritev(fd, [view], offset)
            except OSError as exc:
                raise self._write_failed(offset, len(data), exc) from exc
            finally:
                _BUFFERS.give(buf)
            self._written(offset, len(data), done)
        finally:
            self._leave()

    def _write_failed(self, offset: int, length: int, exc: OSError) -> LeaseError:
        return LeaseError(rc_from_oserror(exc), f"write {self._path} offset {offset} length {length}: {exc.strerror}")

    def _written(self, offset: int, length: int, done: int) -> None:
        if done != length:
            raise LeaseError(ResultCode.EIO, f"short write {self._path} offset {offset}: {done} of {length}")

    # -- trio side --------------------------------------------------------

    def _trio_limiter(self) -> trio.CapacityLimiter:
        """Threads this storage may occupy, abandoned ones included (bounded under stalls)."""
        import trio

        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(16)
        return self._limiter

    async def _in_worker(self, job: Callable[[], T]) -> T:
        """Run ``job`` in a worker thread; a cancellation abandons it (it finishes unobserved).

        What ``trio.to_thread.run_sync(..., abandon_on_cancel=True,
        limiter=...)`` does, without what a lease I/O does not need and
        pays for on every read and write: naming the OS thread (two prctl
        calls), a copied context, a checkpoint to take a free limiter slot;
        and the answer comes back in a batch with the others that arrive
        meanwhile (:class:`_AnswerBatch`).  The slot is held until the
        thread returns, abandoned or not, so a stalled device occupies at
        most the limiter's threads.
        """
        import trio

        limiter = self._trio_limiter()
        slot = object()
        try:
            limiter.acquire_on_behalf_of_nowait(slot)
        except trio.WouldBlock:
            await limiter.acquire_on_behalf_of(slot)
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        waiting = True  # the task waits for this answer: False once answered or abandoned

        def answer(result: Outcome[T]) -> None:  # in trio's thread
            nonlocal waiting
            limiter.release_on_behalf_of(slot)
            if waiting:
                waiting = False
                trio.lowlevel.reschedule(task, result)

        answers = _run_answers(token)

        def deliver(result: Outcome[T]) -> None:  # in the worker thread
            with suppress(trio.RunFinishedError):  # the daemon stopped: nobody waits any more
                answers.post(partial(answer, result))

        def abandon(_: object) -> trio.lowlevel.Abort:
            nonlocal waiting
            waiting = False
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            trio.lowlevel.start_thread_soon(job, deliver)
        except BaseException:
            limiter.release_on_behalf_of(slot)
            raise
        result: T = await trio.lowlevel.wait_task_rescheduled(abandon)
        return result

    async def read(self, offset: int, length: int, timeout: float) -> bytes:
        import trio

        service = _ring_with_room()
        with trio.move_on_after(timeout):
            if service is not None:
                return await self._ring_read(service, offset, length, bytes)
            return await self._in_worker(partial(self.read_sync, offset, length))
        raise self._timed_out("read", offset, timeout)

    async def read_sparse(self, offset: int, length: int, head: int, unit: int, timeout: float) -> SparseRead:
        import trio

        service = _ring_with_room()
        with trio.move_on_after(timeout):
            if service is not None:
                return await self._ring_read(service, offset, length, _sparse_taker(length, head, unit))
            return await self._in_worker(partial(self.read_sparse_sync, offset, length, head, unit))
        raise self._timed_out("read", offset, timeout)

    async def write(self, offset: int, data: bytes, timeout: float) -> None:
        import trio

        service = _ring_with_room()
        with trio.move_on_after(timeout):
            if service is not None:
                await self._ring_write(service, offset, data)
            else:
                await self._in_worker(partial(self.write_sync, offset, data))
            return
        raise self._timed_out("write", offset, timeout)

    async def write_then_read_sparse(
        self, write_offset: int, data: bytes, offset: int, length: int, head: int, unit: int, timeout: float
    ) -> SparseRead:
        """Through io_uring, a linked pair; in threads, one job for both.

        A hand-off to a thread costs the daemon's one core more than the
        I/O, so the threads engine runs the pair in one.  In the thread, an
        I/O that took longer than ``timeout`` fails; the caller stops
        waiting at twice ``timeout`` (a stalled write is seen then, not at
        ``timeout`` as alone).  io_uring hands off nothing: each I/O has its
        own deadline.
        """
        import trio

        service = _ring_with_room(2)
        if service is not None:
            return await self._ring_write_then_read_sparse(
                service, write_offset, data, offset, length, head, unit, timeout
            )
        if _ring_service() is not None:  # a ring full of abandoned I/Os: each I/O as it can go
            return await write_then_read_sparse(self, write_offset, data, offset, length, head, unit, timeout)
        step = ["write"]
        job = partial(self.write_then_read_sparse_sync, write_offset, data, offset, length, head, unit, timeout, step)
        with trio.move_on_after(2 * timeout):
            return await self._in_worker(job)
        where = write_offset if step[-1] == "write" else offset
        raise StepFailed(step[-1], self._timed_out(step[-1], where, timeout))

    async def _ring_read(self, service: _RingService, offset: int, length: int, take: Callable[[memoryview], T]) -> T:
        from leased.uring import OP_READ

        _check_range(self._path, offset, length)
        fd = self._enter()
        buf = self._buffer(length)
        [done] = await service.wait(service.submit([(OP_READ, fd, buf, length, offset)], self._leave, linked=False))
        try:
            return self._read_result(fd, buf, offset, length, done, take)
        finally:
            _BUFFERS.give(buf)
            self._leave()

    def _buffer(self, length: int) -> mmap.mmap:
        """A pool buffer for an I/O already counted in flight (:meth:`_enter`): uncounted if none can be had."""
        try:
            return _BUFFERS.take(length)
        except BaseException:
            self._leave()
            raise

    def _read_result(
        self, fd: int, buf: mmap.mmap, offset: int, length: int, done: int, take: Callable[[memoryview], T]
    ) -> T:
        """``take`` of a completed read of ``done`` bytes (-errno when it failed) into ``buf``."""
        if done < 0:
            raise self._read_failed(offset, length, OSError(-done, os.strerror(-done)))
        with memoryview(buf) as whole, whole[:length] as view:
            return self._taken(fd, view, offset, done, take)

    async def _ring_write(self, service: _RingService, offset: int, data: bytes) -> None:
        from leased.uring import OP_WRITE

        _check_range(self._path, offset, len(data))
        fd = self._enter()
        buf = self._buffer(len(data))
        buf[: len(data)] = data
        [done] = await service.wait(service.submit([(OP_WRITE, fd, buf, len(data), offset)], self._leave, linked=False))
        _BUFFERS.give(buf)
        self._leave()
        self._write_result(offset, len(data), done)

    def _write_result(self, offset: int, length: int, done: int) -> None:
        if done < 0:
            raise self._write_failed(offset, length, OSError(-done, os.strerror(-done)))
        self._written(offset, length, done)

    async def _ring_write_then_read_sparse(
        self,
        service: _RingService,
        write_offset: int,
        data: bytes,
        offset: int,
        length: int,
        head: int,
        unit: int,
        timeout: float,
    ) -> SparseRead:
        """The ballot phase as a linked pair: the kernel starts the read as soon as the write is done, without
        waiting for the event loop; each I/O has its own deadline (the read's from the write's completion)."""
        import trio

        from leased.uring import OP_READ, OP_WRITE

        _check_range(self._path, write_offset, len(data))
        _check_range(self._path, offset, length)
        take = _sparse_taker(length, head, unit)
        fd = self._enter()
        write_buf = self._buffer(len(data))
        write_buf[: len(data)] = data
        try:
            read_buf = _BUFFERS.take(length)
        except BaseException:
            _BUFFERS.give(write_buf)
            self._leave()
            raise
        ios = [(OP_WRITE, fd, write_buf, len(data), write_offset), (OP_READ, fd, read_buf, length, offset)]
        op = service.submit(ios, self._leave, linked=True)
        op.step_timeout = timeout
        with trio.CancelScope(deadline=trio.current_time() + timeout) as op.scope:
            written, done = await service.wait(op)
            try:
                try:
                    self._write_result(write_offset, len(data), written)
                except LeaseError as exc:
                    raise StepFailed("write", exc) from exc
                try:
                    return self._read_result(fd, read_buf, offset, length, done, take)
                except LeaseError as exc:
                    raise StepFailed("read", exc) from exc
            finally:
                _BUFFERS.give(write_buf)
                _BUFFERS.give(read_buf)
                self._leave()
        step, where = ("write", write_offset) if op.results[0] is None else ("read", offset)
        raise StepFailed(step, self._timed_out(step, where, timeout))

    def close(self) -> None:
        """Close now, or as soon as the last abandoned I/O thread returns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._in_flight == 0:
                os.close(self._fd)

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockingFileStorage(FileStorage):
    """:class:`FileStorage` whose async methods complete without suspending.

    Each I/O still runs in a worker thread bounded by its timeout; the caller
    blocks on ``join`` instead of an event loop.  Coroutines using it can be
    driven by :func:`leased.clock.run_blocking`.
    """

    def _in_thread(self, what: str, fn: Callable[[], T], timeout: float) -> T:
        outcome: list[T] = []
        failure: list[BaseException] = []

        def work() -> None:
            try:
                outcome.append(fn())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)

        worker = threading.Thread(target=work, name=f"leased-io {what}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise LeaseError(ResultCode.AIO_TIMEOUT, f"{what} timed out after {timeout}s")
        if failure:
            raise failure[0]
        return outcome[0]

    async def read(self, offset: int, length: int, timeout: float) -> bytes:
        return self._in_thread(f"read {self._path} offset {offset}", lambda: self.read_sync(offset, length), timeout)

    async def read_sparse(self, offset: int, length: int, head: int, unit: int, timeout: float) -> SparseRead:
        return self._in_thread(
            f"read {self._path} offset {offset}", lambda: self.read_sparse_sync(offset, length, head, unit), timeout
        )

    async def write_then_read_sparse(
        self, write_offset: int, data: bytes, offset: int, length: int, head: int, unit: int, timeout: float
    ) -> SparseRead:
        return await write_then_read_sparse(self, write_offset, data, offset, length, head, unit, timeout)

    async def write(self, offset: int, data: bytes, timeout: float) -> None:
        self._in_thread(f"write {self._path} offset {offset}", lambda: self.write_sync(offset, data), timeout)
