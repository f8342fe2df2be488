"""Host-id (delta) leases: join, renew and leave a lockspace (on-disk spec §4, §5).

A lockspace area holds one sector per host_id.  A host owns its host_id by
writing its name and a fresh timestamp there, waiting, and reading back the
same bytes; it keeps the host_id by rewriting the timestamp every 2N seconds.
Other hosts never compare our timestamps with their clocks, only watch them
change (:mod:`leased.host_status`).

Decisions are pure functions of records (``acquire_record``,
``check_renewal``, ``renewal_record``); the async drivers below only read,
wait and write through a :class:`~leased.storage.Storage`.  A failed driver
raises :class:`~leased.errors.LeaseError` and leaves the
:class:`HostIdLease` it was given in a state that says what is known: in
particular ``last_write_ok`` goes false when a renewal write may or may not
have landed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from leased.areas import LockspaceArea
from leased.clock import DEFAULT_CLOCK, Clock, disk_timestamp
from leased.constants import (
    DELTA_DISK_MAGIC,
    DELTA_DISK_VERSION,
    HOST_BITMAP_SIZE,
    LEADER_RECORD_SIZE,
)
from leased.errors import LeaseError, ResultCode
from leased.geometry import DISCOVERY_READ_SIZE, Geometry, geometry_from_leader
from leased.ondisk import (
    Leader,
    encode_name,
    leader_sector,
    names_equal,
    overwrite_name,
    verify_delta_leader,
)
from leased.storage import Storage
from leased.timeouts import (
    DEFAULT_WATCHDOG_FIRE_TIMEOUT,
    WRITE_INIT_IO_TIMEOUT,
    delta_short_delay,
    delta_takeover_delay,
    host_dead_seconds,
)

log = logging.getLogger(__name__)


def new_lockspace_leader(
    space_name: str | bytes, geometry: Geometry, io_timeout: int, magic: int = DELTA_DISK_MAGIC
) -> Leader:
    """The record ``init -s`` writes into every host sector (§4.1)."""
    return Leader(
        magic=magic,
        version=DELTA_DISK_VERSION,
        flags=geometry.align_flag,
        sector_size=geometry.sector_size,
        num_hosts=0,
        max_hosts=1,
        owner_id=0,
        owner_generation=0,
        lver=0,
        space_name=encode_name(space_name),
        resource_name=bytes(48),
        timestamp=0,
        unused1=0,
        checksum=0,
        unused2=0,
        io_timeout=io_timeout,
        write_id=0,
        write_generation=0,
        write_timestamp=0,
    ).sealed()


async def init_lockspace(
    storage: Storage,
    offset: int,
    space_name: str | bytes,
    geometry: Geometry,
    io_timeout: int,
    max_hosts: int | None = None,
) -> None:
    """Write a fresh lockspace area, with sector 0 written last as the commit point.

    The whole area is first written with host 1's record carrying magic 0, so a
    half-written area fails the magic check at host_id 1 (the sector that
    geometry discovery reads); then sector 0 is rewritten with the real magic.
    """
    hosts = geometry.max_hosts if not max_hosts else min(max_hosts, geometry.max_hosts)
    record = new_lockspace_leader(space_name, geometry, io_timeout)
    uncommitted = new_lockspace_leader(space_name, geometry, io_timeout, magic=0)
    sector = geometry.sector_size
    image = bytearray(geometry.align_size)
    encoded = record.encode()
    for index in range(hosts):
        image[index * sector : index * sector + LEADER_RECORD_SIZE] = encoded
    image[:LEADER_RECORD_SIZE] = uncommitted.encode()
    await storage.write(offset, bytes(image), WRITE_INIT_IO_TIMEOUT)
    await storage.write(offset, leader_sector(record, sector), WRITE_INIT_IO_TIMEOUT)


async def read_host_record(
    storage: Storage,
    offset: int,
    host_id: int,
    space_name: bytes,
    geometry: Geometry | None,
    timeout: float,
    *,
    read_timeout: float = 10,
) -> tuple[Leader, Geometry]:
    """One host's delta lease record, verified, and the area's geometry (READ_LOCKSPACE).

    ``geometry`` None: discovered from the leader at ``offset`` (read with
    ``timeout``); the record itself is read with ``read_timeout``.  An empty
    ``space_name`` accepts the name on disk.
    """
    if geometry is None:
        first = Leader.decode(await storage.read(offset, DISCOVERY_READ_SIZE, timeout))
        geometry = geometry_from_leader(first.sector_size, first.flags)
    raw = await storage.read(offset + (host_id - 1) * geometry.sector_size, geometry.sector_size, read_timeout)
    leader = Leader.decode(raw)
    name = encode_name(space_name) if space_name else leader.space_name
    verify_delta_leader(leader, name, f"{storage.path}:{offset}")
    return leader, geometry


async def discover_lockspace(storage: Storage, offset: int, space_name: str | bytes, timeout: float) -> LockspaceArea:
    """Find a lockspace's geometry from its host_id 1 record (§1.2)."""
    name = encode_name(space_name)
    data = await storage.read(offset, DISCOVERY_READ_SIZE, timeout)
    leader = Leader.decode(data)
    where = f"delta lease 1 at {storage.path}:{offset}"
    verify_delta_leader(leader, name, where)
    geometry = geometry_from_leader(leader.sector_size, leader.flags)
    return LockspaceArea(storage, offset, name, geometry)


@dataclass
class HostIdLease:
    """A host_id we hold: what we last wrote and when it last succeeded.

    ``last_success`` is the timestamp of the last write that completed (our
    clock, whole seconds).  ``last_write_ok`` is false after a failed or
    timed-out write, whose effect on disk is unknown.
    """

    area: LockspaceArea
    host_id: int
    host_name: bytes
    io_timeout: int
    record: Leader
    last_success: int
    last_write_ok: bool = True
    bitmap: bytearray = field(default_factory=lambda: bytearray(HOST_BITMAP_SIZE))
    event: tuple[int, int, int] = (0, 0, 0)

    @property
    def generation(self) -> int:
        return self.record.owner_generation


# ---------------------------------------------------------------------------
# Pure decisions


def needs_takeover_wait(current: Leader, host_name: bytes) -> bool:
    """Whether an acquire must wait out the previous holder (§5.1 steps 4-6)."""
    return current.timestamp != 0 and not names_equal(current.resource_name, host_name)


def acquire_record(base: Leader, host_id: int, host_name: bytes, io_timeout: int, now: int) -> Leader:
    """The record an acquire writes over ``base`` (§5.1 step 7)."""
    return replace(
        base,
        timestamp=now,
        io_timeout=io_timeout & 0xFF,
        owner_id=host_id,
        owner_generation=base.owner_generation + 1,
        resource_name=overwrite_name(base.resource_name, host_name),
    ).sealed()


def check_renewal(on_disk: Leader, lease: HostIdLease) -> None:
    """Ownership checks a renewal makes on what it read (§5.2 steps 3-4)."""
    ours = lease.record
    where = lease.area.where(lease.host_id)
    if (
        on_disk.owner_id != ours.owner_id
        or on_disk.owner_generation != ours.owner_generation
        or not names_equal(on_disk.resource_name, ours.resource_name)
    ):
        raise LeaseError(
            ResultCode.RENEW_OWNER,
            f"{where}: owner is now {on_disk.owner_id}/{on_disk.owner_generation} {on_disk.resource!r}, "
            f"we are {ours.owner_id}/{ours.owner_generation} {ours.resource!r}",
        )
    if lease.last_write_ok and on_disk.encode() != ours.encode():
        raise LeaseError(ResultCode.RENEW_DIFF, f"{where}: record differs from what we last wrote")


def renewal_record(on_disk: Leader, io_timeout: int, now: int, event: tuple[int, int, int]) -> Leader:
    """The record a renewal writes (§5.2 steps 5-7)."""
    generation, value, data = event
    return replace(
        on_disk,
        io_timeout=io_timeout & 0xFF if on_disk.io_timeout != io_timeout else on_disk.io_timeout,
        timestamp=now,
        write_id=generation,
        write_generation=value,
        write_timestamp=data,
    ).sealed()


# ---------------------------------------------------------------------------
# Drivers


async def acquire_host_id(
    area: LockspaceArea,
    host_id: int,
    host_name: str | bytes,
    io_timeout: int,
    *,
    clock: Clock = DEFAULT_CLOCK,
    watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT,
) -> HostIdLease:
    """Acquire ``host_id`` (§5.1).  Takes 2N when free, 8N+W+2N when abandoned by another host.

    Raises ``HOSTID_BUSY`` when another host wrote the sector while we waited.
    """
    area.check_host_id(host_id)
    name = host_name.encode() if isinstance(host_name, str) else host_name
    current = await area.read_host(host_id, io_timeout)
    other_io_timeout = current.io_timeout or io_timeout
    if needs_takeover_wait(current, name):
        delay = delta_takeover_delay(other_io_timeout, watchdog_fire_timeout)
        log.info(
            "delta acquire waits for previous holder host_id=%d holder=%r delay=%d", host_id, current.resource, delay
        )
        await _sleep_seconds(clock, delay)
        again = await area.read_host(host_id, io_timeout)
        if again.encode() != current.encode() and again.timestamp != 0:
            raise LeaseError(ResultCode.HOSTID_BUSY, f"{area.where(host_id)}: held by live host {again.resource!r}")
        current = again
    record = acquire_record(current, host_id, name, io_timeout, disk_timestamp(clock))
    await area.storage.write(area.host_offset(host_id), leader_sector(record, area.geometry.sector_size), io_timeout)
    log.debug("delta acquire write host_id=%d generation=%d ts=%d", host_id, record.owner_generation, record.timestamp)
    await _sleep_seconds(clock, delta_short_delay(other_io_timeout))
    check = await area.read_host(host_id, io_timeout)
    if check.encode() != record.encode():
        raise LeaseError(
            ResultCode.HOSTID_BUSY, f"{area.where(host_id)}: overwritten by {check.resource!r} during acquire"
        )
    return HostIdLease(area, host_id, name, io_timeout, record, last_success=record.timestamp)


async def renew_host_id(
    lease: HostIdLease,
    *,
    clock: Clock = DEFAULT_CLOCK,
    watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT,
    snapshot: bytes | None = None,
) -> bytes:
    """Renew once (§5.2) and return the whole-area snapshot read for it.

    ``snapshot`` is an area read made since our last write (a timed-out read
    that finished late, §5.2 step 1); without it the area is read now.  On
    success ``lease.record`` and ``lease.last_success`` advance.  A write
    that fails or times out leaves ``last_write_ok`` false so the next
    renewal skips the "identical to what we wrote" check.
    """
    area = lease.area
    if snapshot is None:
        snapshot = await area.read_area(lease.io_timeout)
    offset = (lease.host_id - 1) * area.geometry.sector_size
    on_disk = Leader.decode(snapshot, offset)
    verify_delta_leader(on_disk, area.space_name, area.where(lease.host_id))
    check_renewal(on_disk, lease)
    record = renewal_record(on_disk, lease.io_timeout, disk_timestamp(clock), lease.event)
    sector = leader_sector(record, area.geometry.sector_size, bytes(lease.bitmap))
    try:
        await area.storage.write(
            area.host_offset(lease.host_id), sector, host_dead_seconds(lease.io_timeout, watchdog_fire_timeout)
        )
    except LeaseError:
        lease.last_write_ok = False
        raise
    lease.record = record
    lease.last_success = record.timestamp
    lease.last_write_ok = True
    return snapshot


async def release_host_id(lease: HostIdLease) -> None:
    """Leave the lockspace cleanly: rewrite our record with timestamp 0 (§5.3)."""
    record = replace(lease.record, timestamp=0).sealed()
    await lease.area.storage.write(
        lease.area.host_offset(lease.host_id), leader_sector(record, lease.area.geometry.sector_size), lease.io_timeout
    )
    lease.record = record


async def _sleep_seconds(clock: Clock, seconds: float) -> None:
    """Sleep in 1-second steps, as sanlock does, so cancellation lands promptly."""
    deadline = clock.now() + seconds
    while (left := deadline - clock.now()) > 0:
        await clock.sleep(min(1.0, left))
