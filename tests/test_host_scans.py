"""The scans that run on the event loop for every renewal and every ballot read.

``HostStatusTable.observe`` skips unchanged runs of sectors with in-place
comparisons instead of decoding every sector, and a ballot's read reaches
``used_host_sectors`` kept sparse (``leased.sparse``): only its used sectors.
These tests hold them to the plain definition: the same answers as decoding
every sector, for snapshots with used sectors anywhere (inside, at the edges
of and across the runs the scans skip) and across several scans.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from leased.constants import DELTA_DISK_MAGIC, LEADER_RECORD_SIZE
from leased.delta_lease import new_lockspace_leader
from leased.geometry import Geometry
from leased.host_status import ZERO_RUN_SECTORS, HostRecord, HostState, HostStatusTable
from leased.ondisk import (
    Dblock,
    Leader,
    ModeBlock,
    decode_host_sector,
    host_sector,
    leader_sector,
    names_equal,
    used_host_sectors,
)
from leased.sparse import sparse_read

SPACE = b"LS".ljust(48, b"\0")
GEOMETRY = Geometry(512, 1 << 20)
SECTOR = GEOMETRY.sector_size
HOSTS = 3 * ZERO_RUN_SECTORS + 5
"""Enough host sectors for three whole runs and a partial one."""


def reference_observe(hosts: dict[int, HostRecord], area: bytes, now: float) -> list[int]:
    """The definition: decode every non-zero leader and compare it with its record."""
    changed = []
    for index in range(min(GEOMETRY.max_hosts, len(area) // SECTOR)):
        host_id = index + 1
        raw = area[index * SECTOR : index * SECTOR + LEADER_RECORD_SIZE]
        record = hosts.setdefault(host_id, HostRecord(first_check=now))
        record.last_check = now
        if not any(raw):
            continue
        leader = Leader.decode(raw)
        if (leader.owner_id, leader.owner_generation, leader.timestamp) == (
            record.owner_id,
            record.owner_generation,
            record.timestamp,
        ):
            continue
        record.last_live = now
        record.timestamp = leader.timestamp
        record.io_timeout = leader.io_timeout
        if leader.magic == DELTA_DISK_MAGIC and names_equal(leader.space_name, SPACE):
            record.owner_id = leader.owner_id
            record.owner_generation = leader.owner_generation
            record.owner_name = leader.resource_name
        record.bitmap = area[index * SECTOR + 256 : index * SECTOR + 512]
        record.write_id = leader.write_id
        record.write_generation = leader.write_generation
        record.write_timestamp = leader.write_timestamp
        changed.append(host_id)
    return changed


FRESH = new_lockspace_leader(SPACE, GEOMETRY, 10)

sector_images = st.one_of(
    st.just(bytes(SECTOR)),
    st.just(leader_sector(FRESH, SECTOR)),
    st.builds(
        lambda owner, generation, timestamp, bitmap: leader_sector(
            replace(FRESH, owner_id=owner, owner_generation=generation, timestamp=timestamp).sealed(),
            SECTOR,
            bitmap,
        ),
        st.integers(0, 3),
        st.integers(0, 2),
        st.integers(0, 3),
        st.sampled_from([b"", b"\x01", b"\x00\x80"]),
    ),
    st.builds(lambda bitmap: bytes(256) + bitmap.ljust(256, b"\0"), st.binary(min_size=1, max_size=4)),
)
"""Zeros, a fresh ``init -s`` sector, a few owners and timestamps, bitmaps, a bitmap alone."""

changes = st.lists(st.tuples(st.integers(0, HOSTS - 1), sector_images), max_size=12)


def apply(area: bytes, change: list[tuple[int, bytes]]) -> bytes:
    image = bytearray(area)
    for index, sector in change:
        image[index * SECTOR : (index + 1) * SECTOR] = sector
    return bytes(image)


Scans = list[list[tuple[int, bytes]]]


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(changes, min_size=1, max_size=5))
def test_observe_finds_what_decoding_every_sector_finds(initialised: bool, scans: Scans) -> None:
    table = HostStatusTable(SPACE, GEOMETRY, 1, 10, 60)
    hosts: dict[int, HostRecord] = {}
    area = leader_sector(FRESH, SECTOR) * HOSTS if initialised else bytes(SECTOR * HOSTS)
    for step, change in enumerate(scans):
        area = apply(area, change)
        now = 1000.0 + step
        assert table.observe(area, now) == reference_observe(hosts, area, now)
        assert table.hosts == hosts


def test_a_host_that_renews_is_live_and_one_that_stops_fails() -> None:
    """The scan skips unchanged runs, yet every record's last check moves on."""
    table = HostStatusTable(SPACE, GEOMETRY, 1, 10, 60)
    area = leader_sector(FRESH, SECTOR) * HOSTS
    far = 2 * ZERO_RUN_SECTORS + 3  # a host id in the third run
    renewed = apply(area, [(far - 1, leader_sector(replace(FRESH, owner_id=far, timestamp=5).sealed(), SECTOR))])
    assert table.observe(area, 1000.0) == []
    assert table.observe(renewed, 1002.0) == [far]
    assert table.observe(renewed, 1004.0) == []
    assert table.hosts[HOSTS].last_check == 1004.0
    assert table.state(far, 1004.0) == HostState.LIVE
    assert table.state(far, 1002.0 + 8 * 10 + 1) == HostState.FAIL
    assert table.state(HOSTS, 1004.0) == HostState.FREE


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([512, 4096]),
    st.integers(1, 3 * ZERO_RUN_SECTORS + 7),
    st.lists(st.integers(0, 3 * ZERO_RUN_SECTORS + 6), max_size=10),
)
def test_used_host_sectors_finds_every_used_sector(sector: int, count: int, slots: list[int]) -> None:
    first = 2 * sector
    image = bytearray(first + (count + 3) * sector)
    image[:LEADER_RECORD_SIZE] = b"\xff" * LEADER_RECORD_SIZE  # the head is kept whatever it holds
    for slot in slots:
        dblock = Dblock(mbal=slot + 1, bal=slot + 1, inp=slot + 1, lver=1).sealed()
        image[first + slot * sector : first + (slot + 1) * sector] = host_sector(dblock, ModeBlock(), sector)
    data = bytes(image)
    expected = [
        (slot, *decode_host_sector(data, first + slot * sector))
        for slot in range(count)
        if any(data[first + slot * sector : first + (slot + 1) * sector])
    ]
    area = sparse_read(data, len(data), first, sector)
    assert area.head == data[:first]
    assert area.whole() == data
    assert used_host_sectors(area, count) == expected
    assert [slot for slot, _, _ in expected] == sorted({s for s in slots if s < count})
