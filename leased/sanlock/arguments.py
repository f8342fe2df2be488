"""The binding's argument rules: what its C parser accepts, converts and refuses, and with which message.

Names must be ``bytes`` (``TypeError: Argument type is not bytes``) and are
cut as ``strncpy`` into 48 bytes cuts them; paths go through the file-system
encoding as ``PyUnicode_FSConverter`` does; disks are a ``list`` of
``(path, offset)`` tuples (``ValueError: Invalid disk ...``); align and
sector are one of the values python3-sanlock knows; unsigned fields are
masked as the ``k``/``K``/``I`` formats mask them.  Pure functions, no I/O.
"""

from __future__ import annotations

import errno as _errno
import operator
import os
from typing import Final, SupportsIndex

from leased.protocol import NAME_LEN, PATH_LEN, Disk
from leased.sanlock.results import _error

SECTOR_SIZE: Final = (512, 4096)


ALIGN_SIZE: Final = (1048576, 2097152, 4194304, 8388608)


_U64: Final = (1 << 64) - 1


_U32: Final = (1 << 32) - 1


_HELPER_LEN: Final = 128
"""``SANLK_HELPER_PATH_LEN`` and ``SANLK_HELPER_ARGS_LEN``: killpath program and arguments, NUL included."""


def _bytes_arg(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"Argument type is not bytes: {value!r}")
    return value


def _name(value: object) -> bytes:
    """A lockspace or resource name as ``strncpy`` into 48 bytes leaves it."""
    return _bytes_arg(value).split(b"\0", 1)[0][:NAME_LEN]


def _path_bytes(value: object) -> bytes:
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"expected str, bytes or os.PathLike object, not {type(value).__name__}")
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    return raw


def _path(value: object) -> str:
    """A path as ``strncpy`` into the 1024-byte field leaves it (at most 1023 bytes)."""
    return os.fsdecode(_path_bytes(value)[: PATH_LEN - 1])


def _checked_path(value: object) -> str:
    raw = _path_bytes(value)
    if len(raw) > PATH_LEN - 1:
        raise ValueError(f"Path is too long: {raw!r}")
    return os.fsdecode(raw)


def _int(value: object) -> int:
    """An integer argument: an int, or anything with ``__index__`` (as the C parser takes them)."""
    if isinstance(value, SupportsIndex):
        return operator.index(value)
    raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")


def _list(value: object, position: int) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"argument {position} must be list, not {type(value).__name__}")
    return value


def _disks(value: object) -> list[Disk]:
    """``[(path, offset), ...]``; anything else is "Invalid disk"."""
    disks = []
    for disk in _list(value, 3):
        if not isinstance(disk, tuple) or len(disk) != 2:
            raise ValueError(f"Invalid disk {disk!r}")
        try:
            raw = _path_bytes(disk[0])
            offset = _int(disk[1]) & _U64
        except (TypeError, ValueError):
            raise ValueError(f"Invalid disk {disk!r}") from None
        if len(raw) > PATH_LEN - 1:
            raise ValueError(f"Path is too long: {raw!r}")
        disks.append(Disk(os.fsdecode(raw), offset))
    return disks


def _geometry(align: object, sector: object) -> tuple[int, int]:
    align_value, sector_value = _int(align), _int(sector)
    if align_value not in ALIGN_SIZE:
        raise ValueError(f"Invalid align value: {align_value}")
    if sector_value not in SECTOR_SIZE:
        raise ValueError(f"Invalid sector value: {sector_value}")
    return align_value, sector_value


def _version(value: object) -> int | None:
    """``version=``: None, or a lease version; what the binding cannot convert is EINVAL."""
    if value is None:
        return None
    try:
        lver = _int(value) & _U64
    except TypeError:
        lver = _U64
    if lver == _U64:
        raise _error(_errno.EINVAL, "Unable to convert the version value")
    return lver
