"""Linux io_uring, as much of it as lease I/O needs: reads and writes of one buffer, completions via an eventfd.

Why: a lease I/O handed to a worker thread costs the daemon more than the
device time.  Measured under many local clients, each I/O waited ~0.8 ms for
its thread to start, ~1 ms for the GIL inside it and ~1.7 ms for the event
loop to take the answer, around 0.35-0.8 ms of device time, because the
thread and the event loop take turns on one interpreter lock.  With io_uring
the kernel queues the I/O (on its own workers when the file cannot take it
without blocking, a FUSE file for one) and posts the completion to a ring the
event loop reads when an eventfd becomes readable: no thread of ours, no GIL
hand-off.

This module is the kernel interface alone (no trio): :class:`Ring` sets up
the rings with ``io_uring_setup``, maps them, queues submissions and reads
completions.  It is written for x86-64 only, whose total store order makes a
store to the submission tail visible after the entry written before it and
the loads of a completion after the tail read before it, which is what the
ring protocol needs; :func:`unavailable` says why a ring cannot be used here
(another architecture, an old kernel, io_uring disabled), so the caller can
keep to threads.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
from contextlib import suppress
from typing import Final

SYS_IO_URING_SETUP: Final = 425
SYS_IO_URING_ENTER: Final = 426
SYS_IO_URING_REGISTER: Final = 427
"""System call numbers, the same on every architecture since Linux 5.1 (x86-64's are the generic ones)."""

IORING_OFF_SQ_RING: Final = 0
IORING_OFF_CQ_RING: Final = 0x8000000
IORING_OFF_SQES: Final = 0x10000000
IORING_FEAT_SINGLE_MMAP: Final = 1 << 0
IORING_FEAT_NODROP: Final = 1 << 1
IORING_FEAT_RW_CUR_POS: Final = 1 << 3
"""Came with Linux 5.6, as did ``IORING_OP_READ``/``IORING_OP_WRITE``: a kernel without it would fail every I/O."""
IORING_REGISTER_EVENTFD: Final = 4

IOSQE_IO_LINK: Final = 1 << 2

OP_READ: Final = 22
OP_WRITE: Final = 23
"""``IORING_OP_READ``/``IORING_OP_WRITE`` (Linux 5.6): one buffer, at an offset."""

_PARAMS: Final = struct.Struct("<10I" + "8IQ" + "8IQ")
"""``struct io_uring_params`` (120 bytes): sizes, flags, features, the SQ and CQ ring offsets."""
_SQE: Final = struct.Struct("<BBHiQQIIQHHiQQ")
"""``struct io_uring_sqe`` (64 bytes): opcode, flags, ioprio, fd, off, addr, len, rw_flags, user_data, ..."""
_CQE: Final = struct.Struct("<QiI")
"""``struct io_uring_cqe`` (16 bytes): user_data, res, flags."""
_U32: Final = struct.Struct("<I")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _check(result: int, call: str) -> int:
    """``result`` of a system call, or OSError whose text names the call."""
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call} failed: {os.strerror(code)}")
    return result


def buffer_address(buf: mmap.mmap) -> int:
    """Where an mmap's memory starts, without keeping an export on it (it stays closable)."""
    cell = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(cell)
    finally:
        del cell


def unavailable() -> str | None:
    """Why :class:`Ring` cannot be used on this machine, or None when it can."""
    try:
        Ring(2).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class Ring:
    """One io_uring with an eventfd that becomes readable when completions are posted.

    Submissions are queued with :meth:`queue` and handed to the kernel with
    :meth:`submit`; completions are taken with :meth:`completions` after the
    eventfd (``event_fd``) was seen readable.  The caller bounds what is in
    flight to ``entries`` (the completion ring holds twice that, so it never
    overflows).  Not thread-safe: one event loop owns a ring.
    """

    def __init__(self, entries: int = 256) -> None:
        """OSError, its text saying why, where io_uring cannot be used (see the module's docstring)."""
        if platform.machine() not in ("x86_64", "AMD64"):
            raise OSError(errno.ENOSYS, f"io_uring is used on x86-64 only (this is {platform.machine()})")
        params = bytearray(_PARAMS.size)
        params_buf = (ctypes.c_char * len(params)).from_buffer(params)
        self.fd: int = _check(_syscall(SYS_IO_URING_SETUP, ctypes.c_uint(entries), params_buf), "io_uring_setup")
        del params_buf
        self._maps: list[mmap.mmap] = []
        self.event_fd = -1
        try:
            fields = _PARAMS.unpack(params)
            sq_entries, cq_entries, _flags, _cpu, _idle, features = fields[:6]
            sq_off = fields[10:19]
            cq_off = fields[19:28]
            if not features & IORING_FEAT_NODROP or not features & IORING_FEAT_RW_CUR_POS:
                raise OSError(errno.ENOSYS, "kernel older than Linux 5.6: no IORING_OP_READ")
            sq_size = sq_off[6] + sq_entries * 4
            cq_size = cq_off[5] + cq_entries * _CQE.size
            if features & IORING_FEAT_SINGLE_MMAP:
                sq_size = cq_size = max(sq_size, cq_size)
            self._sq = self._map(sq_size, IORING_OFF_SQ_RING)
            self._cq = self._sq if features & IORING_FEAT_SINGLE_MMAP else self._map(cq_size, IORING_OFF_CQ_RING)
            self._sqes = self._map(sq_entries * _SQE.size, IORING_OFF_SQES)
            self.entries: int = sq_entries
            self._sq_head, self._sq_tail, self._sq_mask = sq_off[0], sq_off[1], sq_off[2]
            self._cq_head, self._cq_tail, self._cq_mask = cq_off[0], cq_off[1], cq_off[2]
            self._cqes = cq_off[5]
            self._sq_mask_value = _U32.unpack_from(self._sq, self._sq_mask)[0]
            self._cq_mask_value = _U32.unpack_from(self._cq, self._cq_mask)[0]
            array = sq_off[6]
            for index in range(sq_entries):  # slot i always names entry i: the array is never touched again
                _U32.pack_into(self._sq, array + 4 * index, index)
            self._tail = _U32.unpack_from(self._sq, self._sq_tail)[0]
            self.event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            event_fd = ctypes.c_int(self.event_fd)
            _check(
                _syscall(SYS_IO_URING_REGISTER, self.fd, IORING_REGISTER_EVENTFD, ctypes.byref(event_fd), 1),
                "io_uring_register",
            )
        except BaseException:
            self.close()
            raise

    def _map(self, size: int, offset: int) -> mmap.mmap:
        ring = mmap.mmap(self.fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE, offset=offset)
        self._maps.append(ring)
        return ring

    def unsubmitted(self) -> int:
        """Entries queued but not yet taken by the kernel."""
        head: int = _U32.unpack_from(self._sq, self._sq_head)[0]
        pending: int = (self._tail - head) & 0xFFFFFFFF
        return pending

    def queue(
        self, opcode: int, fd: int, address: int, length: int, offset: int, user_data: int, *, link: bool = False
    ) -> None:
        """Queue one read or write; :meth:`submit` hands it to the kernel.  OSError(EBUSY) when the ring is full.

        ``link``: the next entry queued starts only once this one completed
        in full; if this one fails or is short, the next completes with
        ``-ECANCELED`` without being done.  Queue and submit a chain in one
        go: a submission ends it.
        """
        if self.unsubmitted() >= self.entries:
            raise OSError(errno.EBUSY, "io_uring submission queue full")
        index = self._tail & self._sq_mask_value
        flags = IOSQE_IO_LINK if link else 0
        _SQE.pack_into(
            self._sqes, index * _SQE.size, opcode, flags, 0, fd, offset, address, length, 0, user_data, 0, 0, 0, 0, 0
        )
        self._tail = (self._tail + 1) & 0xFFFFFFFF
        _U32.pack_into(self._sq, self._sq_tail, self._tail)  # after the entry: x86-64 keeps stores in order

    def submit(self) -> int:
        """Hand every queued entry to the kernel; how many it took.  OSError as ``io_uring_enter`` fails.

        An entry the kernel did not take stays queued and goes with the
        next call.
        """
        pending = self.unsubmitted()
        while pending:
            result: int = _syscall(SYS_IO_URING_ENTER, self.fd, pending, 0, 0, None, 0)
            if result >= 0:
                return result
            code = ctypes.get_errno()
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))
        return 0

    def completions(self) -> list[tuple[int, int]]:
        """``(user_data, res)`` of every completion posted so far; the eventfd's count is cleared first."""
        with suppress(BlockingIOError):
            os.eventfd_read(self.event_fd)
        cq = self._cq
        head = _U32.unpack_from(cq, self._cq_head)[0]
        tail = _U32.unpack_from(cq, self._cq_tail)[0]  # before the entries: x86-64 keeps loads in order
        done: list[tuple[int, int]] = []
        while head != tail:
            user_data, res, _flags = _CQE.unpack_from(cq, self._cqes + (head & self._cq_mask_value) * _CQE.size)
            done.append((user_data, res))
            head = (head + 1) & 0xFFFFFFFF
        _U32.pack_into(cq, self._cq_head, head)
        return done

    def close(self) -> None:
        """Unmap and close; the kernel finishes or cancels what is in flight (the pages it uses stay pinned)."""
        for ring in self._maps:
            ring.close()
        self._maps.clear()
        if self.event_fd >= 0:
            os.close(self.event_fd)
            self.event_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
