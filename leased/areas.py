"""Where a lease lives on disk: the area types both lease algorithms share.

A lockspace area (:class:`LockspaceArea`, one sector per host id, on-disk
spec §4) and a resource area (:class:`ResourceArea`, leader, request,
one sector per host and the LVB, §6) are each an open
:class:`~leased.storage.Storage`, a byte offset, the names the leaders must
carry and the :class:`~leased.geometry.Geometry` they are cut by.  They say
where each record sits and how to name the area in an error; reading and
writing the records is the lease algorithms' (:mod:`leased.delta_lease`,
:mod:`leased.paxos_lease`).

Why a module of its own: the paxos lease judges another owner through its
delta lease (a :class:`~leased.paxos_lease.LockspaceView` names a lockspace
area), so both algorithms need the lockspace area type.  Here they import
it from below instead of one lease algorithm importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from leased.constants import LVB_SECTOR_INDEX
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry
from leased.ondisk import Leader, name_text, verify_delta_leader
from leased.storage import Storage


@dataclass(frozen=True)
class LockspaceArea:
    """Where a lockspace lives: storage, byte offset, name and geometry."""

    storage: Storage
    offset: int
    space_name: bytes
    geometry: Geometry

    def host_offset(self, host_id: int) -> int:
        return self.offset + (host_id - 1) * self.geometry.sector_size

    def where(self, host_id: int | None = None) -> str:
        if host_id is None:
            return f"lockspace {name_text(self.space_name)} at {self.storage.path}:{self.offset}"
        return f"delta lease {host_id} at {self.storage.path}:{self.host_offset(host_id)}"

    def check_host_id(self, host_id: int) -> None:
        if not 1 <= host_id <= self.geometry.max_hosts:
            raise LeaseError(
                ResultCode.ADDLS_INVALID_HOSTID,
                f"host_id {host_id} outside 1..{self.geometry.max_hosts} of {self.where()}",
            )

    async def read_host(self, host_id: int, timeout: float) -> Leader:
        """Read and verify one host's delta lease."""
        data = await self.storage.read(self.host_offset(host_id), self.geometry.sector_size, timeout)
        leader = Leader.decode(data)
        verify_delta_leader(leader, self.space_name, self.where(host_id))
        return leader

    async def read_area(self, timeout: float) -> bytes:
        """The whole area in one I/O, as every renewal reads it."""
        return await self.storage.read(self.offset, self.geometry.align_size, timeout)


@dataclass(frozen=True)
class ResourceArea:
    """Where a resource lease lives: storage, offset, names and geometry."""

    storage: Storage
    offset: int
    space_name: bytes
    resource_name: bytes
    geometry: Geometry

    @property
    def sector_size(self) -> int:
        return self.geometry.sector_size

    def host_offset(self, host_id: int) -> int:
        return self.offset + (1 + host_id) * self.sector_size

    @property
    def request_offset(self) -> int:
        return self.offset + self.sector_size

    @property
    def lvb_offset(self) -> int:
        return self.offset + LVB_SECTOR_INDEX * self.sector_size

    def where(self) -> str:
        names = f"{name_text(self.space_name)}:{name_text(self.resource_name)}"
        return f"resource {names} at {self.storage.path}:{self.offset}"

    def with_geometry(self, geometry: Geometry) -> ResourceArea:
        return replace(self, geometry=geometry)
