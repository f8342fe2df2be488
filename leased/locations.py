"""Where a lockspace, a resource or an area lives, as a command line names it.

``leased direct`` and ``leased client`` take the same three kinds of
argument: a lockspace with its host id and disk location, a resource with its
lockspace and disk location (and optionally an lver or ``:SH``), and a span
of disk to dump.  The values are plain, immutable and pure, so the command
lines (:mod:`leased.cli.specs` reads their text) and the direct operations
(:mod:`leased.direct` takes them) share one definition without either one
importing the other: ``leased client`` never loads the lease algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LockspaceArg:
    """``-s NAME:HOST_ID:PATH:OFFSET``."""

    name: str
    host_id: int
    path: str
    offset: int


@dataclass(frozen=True)
class ResourceArg:
    """``-r LOCKSPACE:RESOURCE:PATH:OFFSET[:LVER|:SH]``."""

    lockspace: str
    name: str
    path: str
    offset: int
    lver: int = 0
    shared: bool = False


@dataclass(frozen=True)
class DumpTarget:
    """``PATH[:OFFSET[:SIZE]]`` of ``direct dump``: a span of disk to walk, in bytes."""

    path: str
    offset: int
    size: int
