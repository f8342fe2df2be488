"""Large reads that are mostly zeros, kept small: the leading bytes and the non-zero units.

Every ballot reads a resource area whole (1 MiB with 512-byte sectors, up
to 8 MiB), and only the sectors of hosts that ever took part hold anything:
a handful of 2000.  Copying each such read into a ``bytes`` and scanning it
on the event loop was a third of the daemon's GIL time under many local
clients.  :func:`sparse_read` looks at the buffer where it lies (the I/O
thread calls it before the buffer goes back to its pool) and copies out
only the head and the units that hold anything.

The scan halves ranges: a range of units that compares equal to zeros is
skipped whole, any other is split until single units remain.  Each
comparison is one ``memcmp`` (``bytes.startswith`` with a buffer argument
compares in place, no copy), and ``memcmp`` stops at the first difference,
so a zero byte is compared about once and a used unit costs a few short
comparisons: about one pass over the buffer, in C, whatever the layout.
"""

from __future__ import annotations

import functools
import mmap
from dataclasses import dataclass
from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
"""What the scans take: a read result, or the I/O buffer it was read into."""


@dataclass(frozen=True, slots=True)
class SparseRead:
    """A read of ``length`` bytes: its first bytes (``head``), then ``unit``-sized pieces of which only
    the non-zero ones are kept, as ``(index, bytes)`` in index order (index 0 starts right after the head).

    Everything not kept is zeros, so the read is fully known (:meth:`whole` rebuilds it).
    """

    length: int
    head: bytes
    unit: int
    units: tuple[tuple[int, bytes], ...]

    def whole(self) -> bytes:
        """The read as it came from the disk (tests and rare paths; it makes the copy this class avoids)."""
        image = bytearray(self.length)
        image[: len(self.head)] = self.head
        for index, data in self.units:
            start = len(self.head) + index * self.unit
            image[start : start + len(data)] = data
        return bytes(image)


@functools.cache
def zero_bytes(length: int) -> bytes:
    """``length`` zero bytes, one object per length (a few sector, run and area sizes)."""
    return bytes(length)


def nonzero_units(data: Buffer, start: int, unit: int, count: int) -> list[int]:
    """The indexes ``i < count`` whose ``unit`` bytes at ``start + i * unit`` are not all zeros, ascending.

    ``data`` must hold ``start + count * unit`` bytes; it is compared in place.
    """
    view = memoryview(data).cast("B")
    if start < 0 or unit <= 0 or count < 0 or start + count * unit > len(view):
        raise ValueError(f"{count} units of {unit} bytes at {start} do not fit in {len(view)} bytes")
    zeros = zero_bytes(count * unit)
    found: list[int] = []
    ranges = [(0, count)]
    while ranges:
        low, high = ranges.pop()
        if low == high or zeros.startswith(view[start + low * unit : start + high * unit]):
            continue
        if high - low == 1:
            found.append(low)
            continue
        middle = (low + high) // 2
        ranges.append((middle, high))
        ranges.append((low, middle))  # popped first: indexes come out ascending
    return found


def sparse_read(data: Buffer, length: int, head: int, unit: int) -> SparseRead:
    """The :class:`SparseRead` of the first ``length`` bytes of ``data``: ``head`` bytes, then units.

    A last unit cut short by ``length`` is kept as far as it goes.
    """
    view = memoryview(data).cast("B")
    if not 0 <= head <= length <= len(view) or unit <= 0:
        raise ValueError(f"head {head}, unit {unit} and length {length} do not fit a read of {len(view)} bytes")
    whole_units, rest = divmod(length - head, unit)
    units = [
        (index, bytes(view[head + index * unit : head + (index + 1) * unit]))
        for index in nonzero_units(view, head, unit, whole_units)
    ]
    if rest and not zero_bytes(rest).startswith(view[length - rest : length]):
        units.append((whole_units, bytes(view[length - rest : length])))
    return SparseRead(length, bytes(view[:head]), unit, tuple(units))
