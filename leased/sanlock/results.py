"""What leased.sanlock returns and raises, shaped as python3-sanlock 3.8.5 shapes it.

``SanlockException(errno, message, strerror)`` and the rule that builds it
from a result code (:func:`_error`: -200 < rc < 0 becomes the positive errno
with ``os.strerror``'s text, anything else stays with libsanlock's
``sanlock_strerror`` text), and the dicts the functions return, as
``TypedDict``s whose keys are in the binding's order.  Plain values, no I/O.
"""

from __future__ import annotations

import os
from typing import Final, TypeAlias, TypedDict

_SANLOCK_STRERROR: Final = {
    -201: "General error",
    -202: "IO timeout",
    -203: "Watchdog device error",
    -210: "Lease read error in dblock",
    -211: "Lease write error in dblock",
    -212: "Lease was acquired by another host in new ballot",
    -213: "Lease was acquired by another host in current ballot",
    -214: "Lease checksum error in dblock",
    -220: "Lease read error in leader",
    -221: "Lease write error in leader",
    -222: "Lease read inconsistent",
    -223: "Lease does not exist on storage",
    -224: "Lease format version on storage is not recognized",
    -225: "Lease sector size is inconsistent",
    -226: "Lease lockspace name is incorrect",
    -227: "Lease resource name is incorrect",
    -228: "Lease num_hosts is incorrect",
    -229: "Lease checksum error in leader",
    -241: "Lease lockspace is not found",
    -242: "Lease lockspace disk cannot be opened",
    -243: "Lease is held by another host",
    -244: "Lease was acquired by another host in other ballot",
    -245: "Lease was acquired by another host in local commit",
    -246: "Lease is held by another host for shared acquire",
    -247: "Lease is owned by another host",
    -250: "Lease release version is incorrect",
    -251: "Lease release owner is incorrect",
    -260: "Lease renew owner is incorrect",
    -261: "Lease renew data has changed",
    -262: "Lease host ID is being used by another host",
    -270: "Lease request block has invalid data",
    -271: "Lease request block has invalid version",
    -272: "Lease request has newer lease version",
    -273: "Lease request block has newer version",
}
"""libsanlock's ``sanlock_strerror``; every other value is "Unknown error" (-240 and positive ones included)."""


PathArgument: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
"""A path as the binding takes it: a disk's, a device's, a killpath program's or argument."""

Disks: TypeAlias = (
    list[tuple[str, int]]
    | list[tuple[bytes, int]]
    | list[tuple[os.PathLike[str], int]]
    | list[tuple[PathArgument, int]]
)
"""The ``disks`` argument: a list (the binding refuses a tuple) of ``(path, offset)``.  A union of
lists, because ``list`` is invariant: an application's ``list[tuple[str, int]]`` must type-check."""


class LockspaceInfo(TypedDict):
    """``read_lockspace``: the lockspace name on disk and the io_timeout in its host records."""

    lockspace: bytes
    iotimeout: int


class ResourceInfo(TypedDict):
    """``read_resource``: the names and lease version on disk."""

    lockspace: bytes
    resource: bytes
    version: int


class JoinedLockspace(TypedDict):
    """One entry of ``get_lockspaces`` (``flags``: 0 joined, LSFLAG_ADD, LSFLAG_REM)."""

    lockspace: bytes
    host_id: int
    path: str
    offset: int
    flags: int


class HostStatus(TypedDict):
    """One host of ``get_hosts`` or ``read_resource_owners`` (``flags``: HOST_* state)."""

    host_id: int
    generation: int
    timestamp: int
    io_timeout: int
    flags: int


class HeldResource(TypedDict):
    """One lease of ``inquire``: ``flags`` RES_LVER (``version`` = lver) or RES_SHARED (``version`` 0)."""

    lockspace: bytes
    resource: bytes
    flags: int
    version: int
    disks: list[tuple[str, int]]


class LockspaceEvent(TypedDict):
    """One event of ``get_event``."""

    from_host_id: int
    from_generation: int
    host_id: int
    generation: int
    event: int
    data: int


class SanlockException(Exception):
    """A failed call: ``args`` is ``(errno, message, strerror)``, ``errno`` is ``args[0]``.

    ``errno`` is positive for the system's error numbers (a daemon result of
    -2 is 2, ENOENT) and negative for sanlock's own codes (-243: the lease is
    held by another host), as the C binding reports them.
    """

    @property
    def errno(self) -> int:
        """exception errno"""
        value: int = self.args[0]
        return value


def _error(rc: int, message: str) -> SanlockException:
    if -200 < rc < 0:
        return SanlockException(-rc, message, os.strerror(-rc))
    return SanlockException(rc, message, _SANLOCK_STRERROR.get(rc, "Unknown error"))
