"""Lease area geometry: sector size, align size and the host limit they imply.

A lockspace or resource area is exactly one *align size* long and is cut into
sectors of the geometry's sector size (on-disk spec §1).  Only five pairs are
valid; the pair in use is recorded in every leader (``sector_size`` plus one
``LFL_ALIGN_*`` flag), which is how readers discover it; a client's request
names it with the wire's ALIGN/SECTOR flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from leased.constants import (
    DEFAULT_MAX_HOSTS,
    LFL_ALIGN_1M,
    LFL_ALIGN_2M,
    LFL_ALIGN_4M,
    LFL_ALIGN_8M,
    LFL_ALIGN_MASK,
    MiB,
)
from leased.errors import LeaseError, ResultCode
from leased.protocol import (
    RES_ALIGN1M,
    RES_ALIGN2M,
    RES_ALIGN4M,
    RES_ALIGN8M,
    RES_ALIGN_MASK,
    RES_SECTOR4K,
    RES_SECTOR512,
    RES_SECTOR_MASK,
)


@dataclass(frozen=True)
class Geometry:
    """One of the valid (sector_size, align_size) pairs of spec §1.1."""

    sector_size: int
    align_size: int

    def __post_init__(self) -> None:
        if (self.sector_size, self.align_size) not in _ALIGN_FLAGS:
            raise LeaseError(
                ResultCode.ADDLS_SIZES,
                f"invalid geometry sector_size={self.sector_size} align_size={self.align_size}",
            )

    @property
    def max_hosts(self) -> int:
        """Host slots the area holds: 2000/250/500/1000/2000 (observed, spec §1.1).

        Not align/sector: sanlock keeps a few sectors spare (250 of 256 for
        4096/1M) and caps 512/1M at 2000 of 2048.
        """
        return _MAX_HOSTS[(self.sector_size, self.align_size)]

    @property
    def align_flag(self) -> int:
        return _ALIGN_FLAGS[(self.sector_size, self.align_size)]

    @property
    def sectors(self) -> int:
        return self.align_size // self.sector_size

    def __str__(self) -> str:
        return f"{self.sector_size}/{self.align_size // MiB}M"


_ALIGN_FLAGS = {
    (512, 1 * MiB): LFL_ALIGN_1M,
    (4096, 1 * MiB): LFL_ALIGN_1M,
    (4096, 2 * MiB): LFL_ALIGN_2M,
    (4096, 4 * MiB): LFL_ALIGN_4M,
    (4096, 8 * MiB): LFL_ALIGN_8M,
}

_MAX_HOSTS = {
    (512, 1 * MiB): DEFAULT_MAX_HOSTS,
    (4096, 1 * MiB): 250,
    (4096, 2 * MiB): 500,
    (4096, 4 * MiB): 1000,
    (4096, 8 * MiB): DEFAULT_MAX_HOSTS,
}

_ALIGN_SIZE_OF_FLAG = {
    LFL_ALIGN_1M: 1 * MiB,
    LFL_ALIGN_2M: 2 * MiB,
    LFL_ALIGN_4M: 4 * MiB,
    LFL_ALIGN_8M: 8 * MiB,
}

ALL_GEOMETRIES = tuple(Geometry(s, a) for s, a in _ALIGN_FLAGS)

DISCOVERY_READ_SIZE = 4096
"""Geometry discovery reads this much at an area's start: the leader's first sector, for both sector sizes."""


def legacy_geometry(sector_size: int) -> Geometry:
    """The geometry sanlock assumes when no align was given or recorded.

    512-byte sectors mean 1 MiB areas and 4096-byte sectors 8 MiB (spec §1.2).
    """
    if sector_size == 512:
        return Geometry(512, 1 * MiB)
    if sector_size == 4096:
        return Geometry(4096, 8 * MiB)
    raise LeaseError(ResultCode.LEADER_SECTORSIZE, f"invalid sector_size {sector_size}")


def geometry_from_leader(sector_size: int, flags: int) -> Geometry:
    """The geometry a leader records; leaders older than 3.7 carry no align flag."""
    align_bits = flags & LFL_ALIGN_MASK
    if sector_size not in (512, 4096):
        raise LeaseError(ResultCode.LEADER_SECTORSIZE, f"invalid sector_size {sector_size}")
    if align_bits == 0:
        return legacy_geometry(sector_size)
    align_size = _ALIGN_SIZE_OF_FLAG.get(align_bits)
    if align_size is None:
        raise LeaseError(ResultCode.ADDLS_SIZES, f"invalid align flags 0x{flags:x}")
    return Geometry(sector_size, align_size)


def request_flags(geometry: Geometry) -> int:
    """The wire's ALIGN/SECTOR flags naming ``geometry`` (the reverse of :func:`request_geometry`)."""
    align = {1: RES_ALIGN1M, 2: RES_ALIGN2M, 4: RES_ALIGN4M, 8: RES_ALIGN8M}[geometry.align_size // MiB]
    return align | (RES_SECTOR512 if geometry.sector_size == 512 else RES_SECTOR4K)


def request_geometry(flags: int) -> Geometry | None:
    """ALIGN/SECTOR bits of a resource or lockspace request (the wire's ``RES_*`` flags); None when absent."""
    align = {RES_ALIGN1M: 1, RES_ALIGN2M: 2, RES_ALIGN4M: 4, RES_ALIGN8M: 8}.get(flags & RES_ALIGN_MASK)
    sector = {RES_SECTOR512: 512, RES_SECTOR4K: 4096}.get(flags & RES_SECTOR_MASK)
    if align is None and sector is None:
        return None
    if align is None or sector is None:
        raise LeaseError(ResultCode.EINVAL, f"flags 0x{flags:x} need both ALIGN and SECTOR bits")
    return Geometry(sector, align * MiB)


def parse_align(text: str) -> int:
    """Parse a ``-A`` value: ``1M``, ``2M``, ``4M``, ``8M`` (or bytes)."""
    value = text.strip().upper()
    if value.endswith("M"):
        return int(value[:-1]) * MiB
    if value.endswith("K"):
        return int(value[:-1]) * 1024
    return int(value)
