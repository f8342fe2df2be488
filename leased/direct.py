"""Lease operations straight on storage, with no daemon: ``leased direct``.

This is the counterpart of ``sanlock direct``.  It drives the same library
functions the daemon uses (delta and paxos leases), and prints what sanlock
3.8.5 prints, line for line, so scripts that parse ``sanlock direct`` output
work unchanged: results as ``<action> done <rc>`` on stdout, ``read_leader``
field lines, and ``dump`` tables with sanlock's column widths.

Where sanlock's direct mode has a defect, leased does the useful thing and
docs/compatibility.md says so: ``release`` really releases (sanlock's is a
no-op on disk), ``acquire`` honours ``:SH``, host_id 0 is refused instead of
overwriting the request record, and ``dump`` never reads host blocks beyond
the area.

Actions are coroutines over blocking storage and :data:`BLOCKING_CLOCK`, so
the CLI runs them with :func:`leased.clock.run_blocking` and never starts an
event loop.  Printing and exit codes belong to the CLI (:mod:`leased.cli.direct`),
and so does reading the arguments' text (:mod:`leased.cli.specs`).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator

from leased import cluster, delta_lease, paxos_lease
from leased.areas import LockspaceArea, ResourceArea
from leased.clock import BLOCKING_CLOCK, Clock, disk_timestamp
from leased.constants import (
    DELTA_DISK_MAGIC,
    LEADER_RECORD_SIZE,
    MBLOCK_SHARED,
    NAME_ID_SIZE,
    PAXOS_DISK_MAGIC,
    RINDEX_DISK_MAGIC,
    MiB,
)
from leased.errors import LeaseError, ResultCode
from leased.geometry import Geometry, geometry_from_leader, legacy_geometry
from leased.locations import DumpTarget, LockspaceArg, ResourceArg
from leased.ondisk import (
    Leader,
    RequestRecord,
    bitmap_hosts,
    decode_host_sector,
    encode_name,
    verify_delta_leader,
    verify_paxos_leader,
)
from leased.storage import BlockingFileStorage, FileStorage, Storage
from leased.timeouts import DEFAULT_IO_TIMEOUT, DEFAULT_WATCHDOG_FIRE_TIMEOUT

log = logging.getLogger(__name__)

DISCOVERY_FAILED = -1
"""sanlock's rc when no leader of the expected kind is found at the offset."""

DUMP_PROBES = 1024


def default_host_name() -> str:
    """sanlock's default: ``<uuid4>.<nodename>``, kept to 47 bytes."""
    return f"{uuid.uuid4()}.{socket.gethostname()}"[: NAME_ID_SIZE - 1]


def choose_geometry(storage: FileStorage, sector_size: int, align_size: int) -> Geometry:
    """The geometry for init: ``-Z/-A`` when given, else the device's legacy default (§1.2)."""
    if align_size:
        return Geometry(sector_size, align_size)
    if sector_size:
        raise LeaseError(DISCOVERY_FAILED, f"-Z {sector_size} needs -A 1M|2M|4M|8M")
    return legacy_geometry(storage.logical_sector_size())


def _open(path: str, writable: bool, missing_rc: int) -> BlockingFileStorage:
    try:
        return BlockingFileStorage(path, writable=writable)
    except LeaseError as exc:
        if exc.rc == ResultCode.ENOENT:
            raise LeaseError(missing_rc, exc.detail) from exc
        raise


# ---------------------------------------------------------------------------
# init


async def init_lockspace(arg: LockspaceArg, sector_size: int, align_size: int, io_timeout: int) -> None:
    storage = _open(arg.path, True, -19)
    try:
        geometry = choose_geometry(storage, sector_size, align_size)
        await delta_lease.init_lockspace(storage, arg.offset, arg.name, geometry, io_timeout or DEFAULT_IO_TIMEOUT)
    finally:
        storage.close()


async def init_resource(arg: ResourceArg, sector_size: int, align_size: int, num_hosts: int, clear: bool) -> None:
    storage = _open(arg.path, True, -19)
    try:
        geometry = choose_geometry(storage, sector_size, align_size)
        now = disk_timestamp(BLOCKING_CLOCK)
        await paxos_lease.init_resource(storage, arg.offset, arg.lockspace, arg.name, geometry, num_hosts, clear, now)
    finally:
        storage.close()


# ---------------------------------------------------------------------------
# read_leader


def _zero_leader() -> Leader:
    return Leader.decode(bytes(LEADER_RECORD_SIZE))


async def _probe_leader(storage: Storage, offset: int, magic: int) -> Leader:
    """Read the first 4 KiB at ``offset``; discovery fails unless the magic is ``magic``."""
    leader = Leader.decode(await storage.read(offset, 4096, DEFAULT_IO_TIMEOUT))
    if leader.magic != magic:
        raise LeaseError(
            DISCOVERY_FAILED,
            f"no {'delta' if magic == DELTA_DISK_MAGIC else 'paxos'} leader at {storage.path}:{offset}",
        )
    return leader


async def read_lockspace_leader(arg: LockspaceArg) -> tuple[int, Leader, str]:
    """(rc, record as read, error detail) for ``read_leader -s``."""
    if arg.host_id < 1:
        return ResultCode.EINVAL, _zero_leader(), "host_id must be 1 or more"
    try:
        storage = _open(arg.path, False, -19)
    except LeaseError as exc:
        return exc.rc, _zero_leader(), exc.detail
    leader = _zero_leader()
    try:
        first = await _probe_leader(storage, arg.offset, DELTA_DISK_MAGIC)
        geometry = geometry_from_leader(first.sector_size, first.flags)
        offset = arg.offset + (arg.host_id - 1) * geometry.sector_size
        leader = Leader.decode(await storage.read(offset, geometry.sector_size, DEFAULT_IO_TIMEOUT))
        verify_delta_leader(leader, encode_name(arg.name), f"delta lease {arg.host_id} at {arg.path}:{offset}")
        return 0, leader, ""
    except LeaseError as exc:
        return exc.rc, leader, exc.detail
    finally:
        storage.close()


async def read_resource_leader(arg: ResourceArg) -> tuple[int, Leader, str]:
    """(rc, record as read, error detail) for ``read_leader -r``."""
    try:
        storage = _open(arg.path, False, -19)
    except LeaseError as exc:
        return exc.rc, _zero_leader(), exc.detail
    leader = _zero_leader()
    try:
        leader = Leader.decode(await storage.read(arg.offset, 4096, DEFAULT_IO_TIMEOUT))
        where = f"leader of {arg.lockspace}:{arg.name} at {arg.path}:{arg.offset}"
        verify_paxos_leader(leader, encode_name(arg.lockspace), encode_name(arg.name), 0, where)
        return 0, leader, ""
    except LeaseError as exc:
        return exc.rc, leader, exc.detail
    finally:
        storage.close()


def format_leader(leader: Leader, resource: bool) -> list[str]:
    """The 17 field lines ``read_leader`` prints after its result line."""
    tail = ("write_id", "write_generation", "write_timestamp") if resource else ("extra1", "extra2", "extra3")
    return [
        f"magic 0x{leader.magic:x}",
        f"version 0x{leader.version:x}",
        f"flags 0x{leader.flags:x}",
        f"sector_size {leader.sector_size}",
        f"num_hosts {leader.num_hosts}",
        f"max_hosts {leader.max_hosts}",
        f"owner_id {leader.owner_id}",
        f"owner_generation {leader.owner_generation}",
        f"lver {leader.lver}",
        f"space_name {_text(leader.space_name)}",
        f"resource_name {_text(leader.resource_name)}",
        f"timestamp {leader.timestamp}",
        f"checksum 0x{leader.checksum:x}",
        f"io_timeout {leader.io_timeout}",
        f"{tail[0]} {leader.write_id}",
        f"{tail[1]} {leader.write_generation}",
        f"{tail[2]} {leader.write_timestamp}",
    ]


def _text(field: bytes) -> str:
    return field[:NAME_ID_SIZE].split(b"\0", 1)[0].decode("latin-1")


# ---------------------------------------------------------------------------
# dump

DUMP_HEADER = "{:>8} {:>36} {:>48} {:>10} {:>4} {:>4} {}".format(
    "offset", "lockspace", "resource", "timestamp", "own", "gen", "lver"
)


async def dump(target: DumpTarget, force_level: int, sector_size: int, align_size: int) -> tuple[int, list[str]]:
    """Walk lease areas from an offset and list them as sanlock's ``direct dump`` does."""
    lines: list[str] = []
    if target.offset % MiB:
        lines.append(f"WARNING: dump offset should be a multiple of {MiB} bytes.")
    try:
        storage = BlockingFileStorage(target.path, writable=False)
    except LeaseError:
        lines.append(f"Device {target.path} not found.")
        return 1, lines
    try:
        geometry = await _dump_geometry(storage, target, sector_size, align_size)
        if geometry is None:
            lines.append("Cannot find sector_size and align_size, set with -A and -Z.")
            return 1, lines
        lines.append(DUMP_HEADER + ("/req/mode" if force_level else ""))
        end_sector = target.size // geometry.sector_size
        sector_nr = 0
        while True:
            chunk = await storage.read(
                target.offset + sector_nr * geometry.sector_size, geometry.align_size, DEFAULT_IO_TIMEOUT
            )
            chunk_offset = target.offset + sector_nr * geometry.sector_size
            known = True
            magic = int.from_bytes(chunk[:4], "little")
            if magic == DELTA_DISK_MAGIC:
                lines.extend(_dump_delta(chunk, chunk_offset, geometry, force_level))
            elif magic == PAXOS_DISK_MAGIC:
                lines.extend(_dump_paxos(chunk, chunk_offset, geometry, force_level))
            elif magic == RINDEX_DISK_MAGIC:
                lines.append(_dump_rindex(chunk, chunk_offset))
            else:
                known = False
            sector_nr += geometry.sectors
            if end_sector == 0 and not known:
                break
            if end_sector and sector_nr >= end_sector:
                break
            if end_sector == 0 and chunk_offset + geometry.align_size >= max(storage.size(), 1):
                break
        return 0, lines
    finally:
        storage.close()


async def _dump_geometry(
    storage: FileStorage, target: DumpTarget, sector_size: int, align_size: int
) -> Geometry | None:
    if sector_size and align_size:
        return Geometry(sector_size, align_size)
    for probe in range(DUMP_PROBES):
        offset = target.offset + probe * MiB
        if target.size and offset >= target.offset + target.size and probe:
            break
        leader = Leader.decode(await storage.read(offset, 4096, DEFAULT_IO_TIMEOUT))
        if leader.magic in (DELTA_DISK_MAGIC, PAXOS_DISK_MAGIC):
            try:
                return geometry_from_leader(leader.sector_size, leader.flags)
            except LeaseError:
                return None
        if offset >= storage.size():
            break
    return None


_NEVER_OWNED = bytes(16)
"""owner_id and owner_generation (leader bytes 32..47) of a record no host has acquired."""


def _dump_delta(chunk: bytes, chunk_offset: int, geometry: Geometry, force_level: int) -> Iterator[str]:
    sector = geometry.sector_size
    for index in range(geometry.sectors):
        raw = chunk[index * sector : index * sector + LEADER_RECORD_SIZE]
        if raw[:4] == b"\0\0\0\0" or raw[32:48] == _NEVER_OWNED:
            continue  # a never-acquired record: no line, and no need to decode it
        leader = Leader.decode(raw)
        if not (leader.owner_id or leader.owner_generation):
            continue
        line = (
            f"{chunk_offset + index * sector:08d} {_text(leader.space_name):>36} {_text(leader.resource_name):>48} "
            f"{leader.timestamp:010d} {leader.owner_id:04d} {leader.owner_generation:04d}"
        )
        if force_level:
            bitmap = chunk[index * sector + 256 : index * sector + 512]
            line += "".join(f" {host}" for host in bitmap_hosts(bitmap) if host <= geometry.max_hosts)
        yield line


def _dump_paxos(chunk: bytes, chunk_offset: int, geometry: Geometry, force_level: int) -> Iterator[str]:
    leader = Leader.decode(chunk)
    line = (
        f"{chunk_offset:08d} {_text(leader.space_name):>36} {_text(leader.resource_name):>48} "
        f"{leader.timestamp:010d} {leader.owner_id:04d} {leader.owner_generation:04d} {leader.lver}"
    )
    sector = geometry.sector_size
    if force_level:
        request = RequestRecord.decode(chunk, sector)
        line += f"/{request.lver}/{request.force_mode}"
    yield line
    # Only host sectors inside this chunk: sanlock 3.8.5 reads past its buffer here.
    for slot in range(min(leader.num_hosts, geometry.sectors - 2)):
        block, mode = decode_host_sector(chunk, (2 + slot) * sector)
        if force_level >= 2 and (block.mbal or block.inp or block.lver):
            yield (
                f"dblock[{slot:04d}] mbal {block.mbal} bal {block.bal} inp {block.inp} inp2 {block.inp2} "
                f"inp3 {block.inp3} lver {block.lver} sum {block.checksum:x}"
            )
        if mode.flags & MBLOCK_SHARED:
            yield " " * 106 + f"{slot + 1:04d} {mode.generation:04d} SH"


def _dump_rindex(chunk: bytes, chunk_offset: int) -> str:
    flags = int.from_bytes(chunk[8:12], "little")
    sector_size = int.from_bytes(chunk[12:16], "little")
    max_resources = int.from_bytes(chunk[16:20], "little")
    rx_offset = int.from_bytes(chunk[24:32], "little")
    name = _text(chunk[32:80])
    return f"{chunk_offset:08d} {name:>36} rindex_header 0x{flags:x} {sector_size} {max_resources} {rx_offset}"


# ---------------------------------------------------------------------------
# host ids


async def _lockspace_area(arg: LockspaceArg, missing_rc: int) -> LockspaceArea:
    if arg.host_id < 1:
        raise LeaseError(ResultCode.EINVAL, "host_id must be 1 or more")
    storage = _open(arg.path, True, missing_rc)
    try:
        first = await _probe_leader(storage, arg.offset, DELTA_DISK_MAGIC)
        geometry = geometry_from_leader(first.sector_size, first.flags)
    except LeaseError:
        storage.close()
        raise
    return LockspaceArea(storage, arg.offset, encode_name(arg.name), geometry)


async def acquire_id(arg: LockspaceArg, host_name: str, io_timeout: int) -> delta_lease.HostIdLease:
    area = await _lockspace_area(arg, -19)
    try:
        if arg.host_id > area.geometry.max_hosts:
            # sanlock reads the (zero) sector past the records and reports its magic
            raise LeaseError(ResultCode.LEADER_MAGIC, f"host_id {arg.host_id} beyond {area.geometry.max_hosts} records")
        return await delta_lease.acquire_host_id(
            area,
            arg.host_id,
            host_name,
            io_timeout,
            clock=BLOCKING_CLOCK,
            watchdog_fire_timeout=DEFAULT_WATCHDOG_FIRE_TIMEOUT,
        )
    finally:
        area.storage.close()


async def _held_host_id(area: LockspaceArea, host_id: int, io_timeout: int) -> delta_lease.HostIdLease:
    """A host id this host holds on disk, rebuilt from the record (direct mode keeps no state)."""
    record = await area.read_host(host_id, io_timeout)
    if record.owner_id != host_id:
        raise LeaseError(ResultCode.EINVAL, f"{area.where(host_id)} was never acquired")
    return delta_lease.HostIdLease(
        area, host_id, record.resource_name, io_timeout, record, record.timestamp, last_write_ok=False
    )


async def renew_id(arg: LockspaceArg, io_timeout: int) -> None:
    area = await _lockspace_area(arg, -19)
    try:
        lease = await _held_host_id(area, arg.host_id, io_timeout)
        await delta_lease.renew_host_id(lease, clock=BLOCKING_CLOCK)
    finally:
        area.storage.close()


async def release_id(arg: LockspaceArg, io_timeout: int) -> None:
    area = await _lockspace_area(arg, -19)
    try:
        lease = await _held_host_id(area, arg.host_id, io_timeout)
        await delta_lease.release_host_id(lease)
    finally:
        area.storage.close()


# ---------------------------------------------------------------------------
# resource leases


async def _resource_area(arg: ResourceArg) -> ResourceArea:
    storage = _open(arg.path, True, ResultCode.ENOENT)
    try:
        first = await _probe_leader(storage, arg.offset, PAXOS_DISK_MAGIC)
        geometry = geometry_from_leader(first.sector_size, first.flags)
    except LeaseError:
        storage.close()
        raise
    return ResourceArea(storage, arg.offset, encode_name(arg.lockspace), encode_name(arg.name), geometry)


async def acquire(arg: ResourceArg, host_id: int, generation: int, io_timeout: int) -> paxos_lease.PaxosLease:
    """Acquire a free (or our own) lease; one held by another host gives -241, as in sanlock."""
    if host_id < 1:
        raise LeaseError(ResultCode.EINVAL, "acquire needs -i HOST_ID (1 or more)")
    area = await _resource_area(arg)
    try:
        return await paxos_lease.acquire(
            area, host_id, generation, shared=arg.shared, lver=arg.lver, io_timeout=io_timeout, clock=BLOCKING_CLOCK
        )
    finally:
        area.storage.close()


async def release(arg: ResourceArg, host_id: int, generation: int, io_timeout: int) -> None:
    """Release a lease this host holds on disk.

    Direct mode keeps no token, so the lease is rebuilt from disk: our block
    and the leader.  Unlike sanlock 3.8.5 (whose direct release writes
    nothing), this frees the lease for other hosts.
    """
    area = await _resource_area(arg)
    try:
        leader = await paxos_lease.read_leader(area, host_id, io_timeout)
        block, mode = await paxos_lease.read_host_block(area, host_id, io_timeout)
        shared = bool(mode.flags & MBLOCK_SHARED)
        if not shared and (leader.timestamp == 0 or leader.owner_id != host_id):
            raise LeaseError(ResultCode.RELEASE_OWNER, f"{area.where()} is not held by host {host_id}")
        lease = paxos_lease.PaxosLease(
            area, host_id, generation or leader.owner_generation, leader, block, shared, io_timeout
        )
        await paxos_lease.release(lease, clock=BLOCKING_CLOCK)
    finally:
        area.storage.close()


# ---------------------------------------------------------------------------
# cluster: who holds what, from the disk


async def scan_areas(targets: list[DumpTarget]) -> list[cluster.AreaImage]:
    """Read every lease area found from each target's offset, whole.

    Like ``dump``, a walk without a size stops at the first offset that
    holds no leader; with a size it covers the whole range in 1 MiB steps
    (the smallest alignment), skipping what holds no leader.  Each area is
    read in one I/O, so an area's records are one consistent snapshot.
    """
    images: list[cluster.AreaImage] = []
    for target in targets:
        storage = BlockingFileStorage(target.path, writable=False)
        try:
            end = storage.size() if not target.size else min(storage.size(), target.offset + target.size)
            offset = target.offset
            while offset < end:
                head = await storage.read(offset, 4096, DEFAULT_IO_TIMEOUT)
                kind = cluster.area_kind(head)
                if kind is None:
                    if not target.size:
                        break
                    offset += MiB
                    continue
                geometry = cluster.area_geometry(head)
                data = await storage.read(offset, geometry.align_size, DEFAULT_IO_TIMEOUT) if geometry else head
                images.append(cluster.AreaImage(target.path, offset, data))
                offset += geometry.align_size if geometry else MiB
        finally:
            storage.close()
    return images


async def cluster_scans(
    targets: list[DumpTarget], interval: float, clock: Clock = BLOCKING_CLOCK
) -> list[cluster.Scan]:
    """One scan, or two ``interval`` seconds apart so that renewals show as changes."""
    scans = [cluster.Scan(clock.now(), await scan_areas(targets))]
    if interval > 0:
        await clock.sleep(interval)
        scans.append(cluster.Scan(clock.now(), await scan_areas(targets)))
    return scans
