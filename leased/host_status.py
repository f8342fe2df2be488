"""What one host knows about the others in a lockspace (on-disk spec §5.4).

Timestamps written by other hosts are on *their* monotonic clocks and cannot
be compared with ours.  A host is judged only by whether its record
**changes**, measured on our own clock.  This module keeps that bookkeeping
from lockspace-area snapshots and turns it into the FREE / LIVE / UNKNOWN /
FAIL / DEAD states of the spec.  It is pure: callers feed it buffers and
times.  The states' numbers are a fact of the wire, so :class:`HostState`
is defined in :mod:`leased.protocol` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from leased.constants import DELTA_DISK_MAGIC, LEADER_RECORD_SIZE
from leased.geometry import Geometry
from leased.ondisk import Leader, names_equal
from leased.protocol import HostState as HostState
from leased.sparse import zero_bytes
from leased.timeouts import host_dead_seconds, id_renewal_fail_seconds

ZERO_RUN_SECTORS = 64
"""Sectors of a lockspace area compared with the previous scan (or zeros) at once before looking closer."""


@dataclass
class HostRecord:
    """Our memory of one host_id's delta lease.  Times are our monotonic seconds."""

    first_check: float = 0.0
    last_check: float = 0.0
    last_live: float = 0.0
    owner_id: int = 0
    owner_generation: int = 0
    timestamp: int = 0
    io_timeout: int = 0
    owner_name: bytes = b""
    bitmap: bytes = b""
    write_id: int = 0
    write_generation: int = 0
    write_timestamp: int = 0


class HostStatusTable:
    """Liveness bookkeeping for every host_id of one lockspace."""

    def __init__(
        self, space_name: bytes, geometry: Geometry, our_host_id: int, our_io_timeout: int, watchdog_fire_timeout: int
    ) -> None:
        self.space_name = space_name
        self.geometry = geometry
        self.our_host_id = our_host_id
        self.our_io_timeout = our_io_timeout
        self.watchdog_fire_timeout = watchdog_fire_timeout
        self.hosts: dict[int, HostRecord] = {}
        self._records: list[HostRecord] = []
        """``hosts`` in host_id order (index host_id - 1), for the scan."""
        self._previous = b""
        """The last snapshot scanned: what each record was last taken from."""

    def observe(self, area: bytes, now: float) -> list[int]:
        """Scan a whole-area snapshot read at ``now``; return host_ids that changed.

        Every renewal scans up to 2000 host sectors on the event loop, and
        ``init -s`` writes a leader into each of them, so decoding them all
        would cost the daemon tens of milliseconds a renewal.  Instead the
        snapshot is compared with the previous one in runs of
        ``ZERO_RUN_SECTORS`` sectors, then sector by sector inside a run that
        differs (``bytes.startswith`` at an offset: a memcmp in place), and
        only a leader whose bytes changed is decoded.  The first scan compares
        against zeros instead.  A leader whose bytes did not change would
        decode to what its record already holds, so the result is the same as
        decoding every sector.
        """
        changed: list[int] = []
        sector = self.geometry.sector_size
        count = min(self.geometry.max_hosts, len(area) // sector)
        if len(self._records) < count:
            for host_id in range(len(self._records) + 1, count + 1):
                record = self.hosts.get(host_id)
                if record is None:
                    record = self.hosts[host_id] = HostRecord(first_check=now)
                self._records.append(record)
        previous = self._previous if len(self._previous) == len(area) else None
        zero_leader = zero_bytes(LEADER_RECORD_SIZE)
        for start in range(0, count, ZERO_RUN_SECTORS):
            stop = min(start + ZERO_RUN_SECTORS, count)
            records = self._records[start:stop]
            for record in records:
                record.last_check = now
            begin, end = start * sector, stop * sector
            same = previous[begin:end] if previous is not None else zero_bytes(end - begin)
            if area.startswith(same, begin):
                continue
            for index, record in enumerate(records, start):
                offset = index * sector
                if previous is not None and area.startswith(previous[offset : offset + LEADER_RECORD_SIZE], offset):
                    continue
                if area.startswith(zero_leader, offset):
                    continue
                if self._changed(record, area, offset, now):
                    changed.append(index + 1)
        self._previous = area
        return changed

    def _changed(self, record: HostRecord, area: bytes, start: int, now: float) -> bool:
        """Take a used sector's leader into ``record``; whether it changed since the last scan."""
        leader = Leader.decode(area[start : start + LEADER_RECORD_SIZE])
        if (leader.owner_id, leader.owner_generation, leader.timestamp) == (
            record.owner_id,
            record.owner_generation,
            record.timestamp,
        ):
            return False
        record.last_live = now
        record.timestamp = leader.timestamp
        record.io_timeout = leader.io_timeout
        if leader.magic == DELTA_DISK_MAGIC and names_equal(leader.space_name, self.space_name):
            record.owner_id = leader.owner_id
            record.owner_generation = leader.owner_generation
            record.owner_name = leader.resource_name
        record.bitmap = bytes(area[start + 256 : start + 512])
        record.write_id = leader.write_id
        record.write_generation = leader.write_generation
        record.write_timestamp = leader.write_timestamp
        return True

    def io_timeout_of(self, host_id: int) -> int:
        record = self.hosts.get(host_id)
        return (record.io_timeout if record else 0) or self.our_io_timeout

    def state(self, host_id: int, now: float) -> HostState:
        """The spec's state table, evaluated in its order."""
        record = self.hosts.get(host_id)
        if record is None or record.last_check == 0:
            return HostState.UNKNOWN
        return host_state(
            record, now, host_id == self.our_host_id, self.io_timeout_of(host_id), self.watchdog_fire_timeout
        )

    def is_live_for_shared(self, host_id: int, generation: int, now: float) -> bool:
        """Whether a SHARED holder ``host_id`` with mode-block ``generation`` may still hold (§7.8)."""
        record = self.hosts.get(host_id)
        if record is None or record.last_check == 0:
            return True
        if record.timestamp == 0:
            return False
        if record.owner_generation > generation:
            return False
        dead = host_dead_seconds(self.io_timeout_of(host_id), self.watchdog_fire_timeout)
        if not record.last_live:
            return not (now - record.first_check > dead)
        return not (now - record.last_live > dead)


def host_state(record: HostRecord, now: float, is_us: bool, io_timeout: int, watchdog_fire_timeout: int) -> HostState:
    """Pure state function of one host record (§5.4 table)."""
    if record.timestamp == 0:
        return HostState.FREE
    if is_us:
        return HostState.LIVE
    last = record.last_live or record.first_check
    fail_after = id_renewal_fail_seconds(io_timeout)
    if now - last <= fail_after and record.first_check == record.last_live:
        return HostState.UNKNOWN
    if now - last <= fail_after:
        return HostState.LIVE
    if now - last > host_dead_seconds(io_timeout, watchdog_fire_timeout):
        return HostState.DEAD
    return HostState.FAIL
