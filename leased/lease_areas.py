"""Lease areas a client writes and reads through the daemon, with no lockspace joined.

WRITE_LOCKSPACE, READ_LOCKSPACE, WRITE_RESOURCE, READ_RESOURCE and
READ_RESOURCE_OWNERS (``sanlock client init``, ``read``, ...) are the
daemon's counterparts of the direct-mode operations: one storage handle
opened through the ``open_storage`` seam for the request and closed after
it (:func:`leased.storage.lease_storage`), one delta or paxos lease step,
and what it found as the wire's typed views (:class:`~leased.protocol.Lockspace`,
:class:`~leased.protocol.Resource`, :class:`~leased.protocol.Host`).  The
rules sanlock keeps for them are here too: the geometry a request that names
none gets, the io_timeout a leader can store, and which owners a resource
area reports.

They take plain arguments and raise :class:`~leased.errors.LeaseError` with
the result code; :mod:`leased.commands` decodes the request, calls one and
encodes the reply.  Unlike :mod:`leased.direct` (blocking storage, the
command line's output) they run on trio, inside the daemon.
"""

from __future__ import annotations

from leased import delta_lease, paxos_lease
from leased.clock import DEFAULT_CLOCK, Clock, disk_timestamp
from leased.constants import MiB
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry, request_flags, request_geometry
from leased.protocol import RES_SHARED, Host, Lockspace, Resource
from leased.storage import OpenStorage, lease_storage

MAX_LEADER_IO_TIMEOUT = 0xFFFF
"""A delta lease leader stores io_timeout in 16 bits; WRITE_LOCKSPACE's data2 is 32 (sanlock truncates it)."""

DEFAULT_GEOMETRY = Geometry(512, MiB)
"""What WRITE_LOCKSPACE and WRITE_RESOURCE write when the request's flags name no sector or align size."""


async def write_lockspace(open_storage: OpenStorage, ls: Lockspace, io_timeout: int) -> None:
    """WRITE_LOCKSPACE: a fresh delta lease area for ``ls`` storing ``io_timeout`` (at most 16 bits: -EINVAL)."""
    geometry = request_geometry(ls.flags) or DEFAULT_GEOMETRY
    with lease_storage(open_storage, ls.disk.path) as storage:
        if io_timeout > MAX_LEADER_IO_TIMEOUT:
            raise LeaseError(ResultCode.EINVAL, f"io_timeout {io_timeout} does not fit the leader's 16-bit field")
        await delta_lease.init_lockspace(storage, ls.disk.offset, ls.name, geometry, io_timeout)


async def read_lockspace(open_storage: OpenStorage, ls: Lockspace, host_id: int, timeout: int) -> tuple[Lockspace, int]:
    """READ_LOCKSPACE: the lockspace as host ``host_id``'s record names it, with its geometry, and its io_timeout."""
    with lease_storage(open_storage, ls.disk.path) as storage:
        leader, geometry = await delta_lease.read_host_record(
            storage, ls.disk.offset, host_id, ls.name, request_geometry(ls.flags), timeout
        )
    found = Lockspace(leader.space_name.split(b"\0", 1)[0], host_id, request_flags(geometry), ls.disk)
    return found, leader.io_timeout


async def write_resource(
    open_storage: OpenStorage, resource: Resource, *, num_hosts: int, clear: bool, clock: Clock = DEFAULT_CLOCK
) -> None:
    """WRITE_RESOURCE: a fresh paxos lease area for ``resource`` on its first disk (a missing file: -ENOENT)."""
    geometry = request_geometry(resource.flags) or DEFAULT_GEOMETRY
    disk = resource.disks[0]
    with lease_storage(open_storage, disk.path, ResultCode.ENOENT) as storage:
        await paxos_lease.init_resource(
            storage,
            disk.offset,
            resource.lockspace,
            resource.name,
            geometry,
            num_hosts=num_hosts,
            clear=clear,
            now=disk_timestamp(clock),
        )


async def read_resource(open_storage: OpenStorage, resource: Resource, timeout: int) -> Resource:
    """READ_RESOURCE: the names, lver and geometry flags of the resource leader on ``resource``'s first disk."""
    disk = resource.disks[0]
    with lease_storage(open_storage, disk.path, ResultCode.ENOENT) as storage:
        leader, geometry = await paxos_lease.read_resource_leader(
            storage,
            disk.offset,
            resource.lockspace,
            resource.name,
            request_geometry(resource.flags),
            timeout,
            geometry_first=False,
        )
    space, name = leader.space_name.split(b"\0", 1)[0], leader.resource_name.split(b"\0", 1)[0]
    return Resource(space, name, lver=leader.lver, flags=request_flags(geometry))


async def read_resource_owners(
    open_storage: OpenStorage, resource: Resource, timeout: int
) -> tuple[Resource, list[Host]]:
    """READ_RESOURCE_OWNERS: ``resource`` with its lver and flags (RES_SHARED if held shared), and its owners.

    The owners are the leader's owner (when it has a timestamp), then every
    host with a shared mode block, in host id order.
    """
    disk = resource.disks[0]
    with lease_storage(open_storage, disk.path, ResultCode.ENOENT) as storage:
        wanted = request_geometry(resource.flags)
        leader, geometry = await paxos_lease.read_resource_leader(
            storage, disk.offset, resource.lockspace, resource.name, wanted, timeout, geometry_first=True
        )
        shared = await paxos_lease.read_shared_modes(storage, disk.offset, leader, geometry, timeout)
    hosts = [Host(leader.owner_id, leader.owner_generation, leader.timestamp)] if leader.timestamp else []
    hosts += [Host(host_id, generation, 0) for host_id, generation in shared]
    flags = (resource.flags or request_flags(geometry)) | (RES_SHARED if shared else 0)
    return Resource(resource.lockspace, resource.name, lver=leader.lver, flags=flags), hosts
