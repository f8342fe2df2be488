"""``leased direct cluster``: who holds what, read from the disk alone.

The analysis (:func:`leased.cluster.cluster_view`) is driven here with area
images built from records, one case per rule it applies; then the command
reads a real lease file where a leased daemon and a real sanlock daemon hold
leases for their processes, and must name each holder's host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TypedDict

import pytest
from clitools import leased
from daemons import Daemon, LeaseFile, init_lease_file_direct, wait_for
from leased_daemons import leased_and_sanlock

from leased.client import Registration
from leased.cluster import AreaImage, ClusterView, Scan, cluster_view, format_text
from leased.constants import DBLOCK_FL_RELEASED, MBLOCK_SHARED, REQ_DISK_MAGIC, REQ_DISK_VERSION, MiB
from leased.delta_lease import acquire_record, new_lockspace_leader
from leased.geometry import Geometry
from leased.ondisk import Dblock, ModeBlock, RequestRecord, host_sector, leader_sector
from leased.paxos_steps import new_resource_leader

GEOMETRY = Geometry(512, MiB)
SECTOR = GEOMETRY.sector_size
PATH = "/dev/leases"


def lockspace_image(hosts: dict[int, tuple[str, int, int]], name: str = "LS", io_timeout: int = 10) -> AreaImage:
    """A lockspace area; ``hosts`` maps host_id -> (host name, generation, timestamp)."""
    area = bytearray(GEOMETRY.align_size)
    base = new_lockspace_leader(name, GEOMETRY, io_timeout)
    for host_id in range(1, 5):
        area[(host_id - 1) * SECTOR : host_id * SECTOR] = leader_sector(base, SECTOR)
    for host_id, (host_name, generation, timestamp) in hosts.items():
        record = acquire_record(
            replace(base, owner_generation=generation - 1).sealed(), host_id, host_name.encode(), io_timeout, 1
        )
        record = replace(record, timestamp=timestamp).sealed()
        area[(host_id - 1) * SECTOR : host_id * SECTOR] = leader_sector(record, SECTOR)
    return AreaImage(PATH, 0, bytes(area))


def resource_image(
    name: str,
    offset: int,
    *,
    owner: tuple[int, int] | None = None,
    lver: int = 1,
    shared: dict[int, int] | None = None,
    released_by_owner: bool = False,
    request: tuple[int, int] = (0, 0),
    space: str = "LS",
) -> AreaImage:
    """A resource area: EX ``owner`` (host_id, generation) or none, SH holders host_id -> generation."""
    area = bytearray(GEOMETRY.align_size)
    leader = new_resource_leader(space, name, GEOMETRY)
    if owner is not None:
        leader = replace(
            leader, owner_id=owner[0], owner_generation=owner[1], lver=lver, timestamp=100, write_id=owner[0]
        ).sealed()
    else:
        leader = replace(leader, lver=lver).sealed()
    area[:SECTOR] = leader_sector(leader, SECTOR)
    record = RequestRecord(REQ_DISK_MAGIC, REQ_DISK_VERSION, request[0], request[1])
    area[SECTOR : SECTOR + len(record.encode())] = record.encode()
    if owner is not None:
        flags = DBLOCK_FL_RELEASED if released_by_owner else 0
        block = replace(Dblock(mbal=1, bal=1, inp=owner[0], inp2=owner[1], inp3=100, lver=lver), flags=flags).sealed()
        start = (2 + owner[0] - 1) * SECTOR
        area[start : start + SECTOR] = host_sector(block, ModeBlock(), SECTOR)
    for host_id, generation in (shared or {}).items():
        block = replace(Dblock(mbal=1, bal=1, inp=host_id, lver=lver), flags=DBLOCK_FL_RELEASED).sealed()
        start = (2 + host_id - 1) * SECTOR
        area[start : start + SECTOR] = host_sector(block, ModeBlock(MBLOCK_SHARED, generation), SECTOR)
    return AreaImage(PATH, offset, bytes(area))


def one_scan(*areas: AreaImage) -> ClusterView:
    return cluster_view([Scan(1000.0, areas)])


def test_exclusive_owner_is_named_from_the_lockspace() -> None:
    view = one_scan(
        lockspace_image({1: ("alpha", 1, 50), 2: ("beta", 3, 70)}),
        resource_image("R1", MiB, owner=(2, 3), lver=7),
    )
    (ls,) = view.lockspaces
    assert [(h.host_id, h.name, h.generation, h.timestamp) for h in ls.hosts] == [
        (1, "alpha", 1, 50),
        (2, "beta", 3, 70),
    ]
    (r1,) = ls.resources
    assert (r1.name, r1.mode, r1.lver, r1.offset) == ("R1", "EX", 7, MiB)
    assert [(h.host_id, h.generation, h.name, h.note) for h in r1.holders] == [(2, 3, "beta", "")]


def test_shared_holders_come_from_mode_blocks() -> None:
    view = one_scan(
        lockspace_image({1: ("alpha", 1, 50), 3: ("gamma", 2, 90)}),
        resource_image("R2", MiB, shared={1: 1, 3: 2}, lver=4),
    )
    (r2,) = view.lockspaces[0].resources
    assert r2.mode == "SH"
    assert [(h.host_id, h.generation, h.name) for h in r2.holders] == [(1, 1, "alpha"), (3, 2, "gamma")]


def test_released_and_never_used_leases_are_free() -> None:
    view = one_scan(
        lockspace_image({1: ("alpha", 1, 50)}),
        resource_image("R1", MiB, owner=(1, 1), released_by_owner=True),
        resource_image("R2", 2 * MiB),
    )
    assert [(r.name, r.mode, r.holders) for r in view.lockspaces[0].resources] == [
        ("R1", "free", ()),
        ("R2", "free", ()),
    ]


def test_an_owner_whose_host_id_moved_on_is_flagged() -> None:
    view = one_scan(
        lockspace_image({1: ("alpha", 4, 50), 2: ("beta", 1, 0)}),
        resource_image("R1", MiB, owner=(1, 3)),
        resource_image("R2", 2 * MiB, shared={2: 1}),
    )
    r1, r2 = view.lockspaces[0].resources
    assert r1.mode == "EX" and "generation 4" in r1.holders[0].note
    assert r2.mode == "SH" and "released" in r2.holders[0].note


def test_liveness_needs_two_scans() -> None:
    first = lockspace_image({1: ("alpha", 1, 50), 2: ("beta", 1, 60), 3: ("gone", 1, 0)}, io_timeout=1)
    single = cluster_view([Scan(0.0, [first])])
    assert [h.state for h in single.lockspaces[0].hosts] == ["UNKNOWN", "UNKNOWN", "FREE"]

    renewed = lockspace_image({1: ("alpha", 1, 52), 2: ("beta", 1, 60), 3: ("gone", 1, 0)}, io_timeout=1)
    soon = cluster_view([Scan(0.0, [first]), Scan(3.0, [renewed])])
    assert [h.state for h in soon.lockspaces[0].hosts] == ["LIVE", "UNKNOWN", "FREE"]
    # io_timeout 1: a record unchanged for more than 8 s has failed, for more than 8 + 60 s is dead.
    later = cluster_view([Scan(0.0, [first]), Scan(9.0, [renewed])])
    assert [h.state for h in later.lockspaces[0].hosts][:2] == ["LIVE", "FAIL"]
    dead = cluster_view([Scan(0.0, [first]), Scan(69.0, [renewed])])
    assert dead.lockspaces[0].hosts[1].state == "DEAD"
    assert dead.lockspaces[0].hosts[1].unchanged_seconds == 69.0


def test_request_records_and_foreign_lockspaces_are_reported() -> None:
    view = one_scan(
        lockspace_image({1: ("alpha", 1, 50)}),
        resource_image("R1", MiB, owner=(1, 1), lver=3, request=(4, 1)),
        resource_image("X1", 2 * MiB, owner=(5, 1), space="OTHER"),
    )
    (r1,) = view.lockspaces[0].resources
    assert (r1.request_lver, r1.request_force_mode) == (4, 1)
    (x1,) = view.unmatched_resources
    assert (x1.lockspace, x1.mode, x1.holders[0].host_id, x1.holders[0].name) == ("OTHER", "EX", 5, "")
    text = "\n".join(format_text(view))
    assert "request lver 4 mode 1" in text and "OTHER" in text


def test_damaged_records_become_problems_not_exceptions() -> None:
    ls = bytearray(lockspace_image({1: ("alpha", 1, 50), 2: ("beta", 1, 60)}).data)
    ls[SECTOR + 100] ^= 0xFF  # host 2's record: checksum no longer matches
    res = bytearray(resource_image("R1", MiB, owner=(1, 1)).data)
    res[80] ^= 0xFF  # leader checksum
    view = one_scan(AreaImage(PATH, 0, bytes(ls)), AreaImage(PATH, MiB, bytes(res)))
    (lockspace,) = view.lockspaces
    assert [h.host_id for h in lockspace.hosts] == [1]
    assert "[2]" in lockspace.problem
    assert "checksum" in lockspace.resources[0].problem
    assert cluster_view([]).problems


# ---------------------------------------------------------------------------
# The command, on a file shared by a leased host and a real sanlock host


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[tuple[LeaseFile, dict[str, Daemon]]]:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1", b"R2", b"R3"], io_timeout=1)
    with leased_and_sanlock(tmp_path, lease_file) as daemons:
        yield lease_file, daemons


class HostJson(TypedDict):
    host_id: int
    name: str
    state: str


class HolderJson(TypedDict):
    host_id: int
    name: str


class ResourceJson(TypedDict):
    name: str
    mode: str
    holders: list[HolderJson]


class LockspaceJson(TypedDict):
    hosts: list[HostJson]
    resources: list[ResourceJson]


class ClusterJson(TypedDict):
    """The fields of ``leased direct cluster --json`` (ClusterView.to_json) these tests read."""

    lockspaces: list[LockspaceJson]


def cluster_json(lease_file: LeaseFile, *extra: str) -> ClusterJson:
    result = leased("direct", "cluster", str(lease_file.path), *extra, "--json")
    assert result.returncode == 0, result.stderr
    document: ClusterJson = json.loads(result.stdout)
    return document


def hosts_live(lease_file: LeaseFile) -> ClusterJson | None:
    """A two-read view in which both hosts were seen renewing, or None to try again."""
    document = cluster_json(lease_file, "--interval", "3")
    (ls,) = document["lockspaces"]
    states = {h["host_id"]: h["state"] for h in ls["hosts"]}
    return document if states == {1: "LIVE", 2: "LIVE"} else None


@pytest.mark.sanlock
@pytest.mark.slow
def test_cluster_names_holders_on_leased_and_sanlock_hosts(mixed: tuple[LeaseFile, dict[str, Daemon]]) -> None:
    lease_file, daemons = mixed
    with ExitStack() as stack:
        on_leased: Registration = stack.enter_context(daemons["leased"].client().register())
        on_sanlock: Registration = stack.enter_context(daemons["sanlock"].client().register())
        on_leased.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        on_sanlock.acquire(b"LS", b"R2", lease_file.disks(b"R2"), shared=True)
        on_leased.acquire(b"LS", b"R2", lease_file.disks(b"R2"), shared=True)

        document = wait_for(lambda: hosts_live(lease_file), 60, "both hosts seen renewing on disk")
        (ls,) = document["lockspaces"]
        names = {h["host_id"]: h["name"] for h in ls["hosts"]}
        assert names == {1: "leased-host", 2: "sanlock-host"}
        resources = {r["name"]: r for r in ls["resources"]}
        assert resources["R1"]["mode"] == "EX"
        assert [(h["host_id"], h["name"]) for h in resources["R1"]["holders"]] == [(1, "leased-host")]
        assert resources["R2"]["mode"] == "SH"
        assert [(h["host_id"], h["name"]) for h in resources["R2"]["holders"]] == [
            (1, "leased-host"),
            (2, "sanlock-host"),
        ]
        assert resources["R3"]["mode"] == "free"

        # The text form says the same for people.
        text = leased("direct", "cluster", f"{lease_file.path}:0:{4 * MiB}")
        assert text.returncode == 0, text.stderr
        r1_line = next(line for line in text.stdout.splitlines() if line.split()[:1] == ["R1"])
        assert "EX" in r1_line and "1/" in r1_line and "leased-host" in r1_line

        on_leased.release(b"LS", b"R1")
        after = {r["name"]: r for r in cluster_json(lease_file)["lockspaces"][0]["resources"]}
        assert after["R1"]["mode"] == "free"


def test_cluster_usage_errors_are_one_line(tmp_path: Path) -> None:
    missing = leased("direct", "cluster", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    with empty.open("wb") as f:
        f.truncate(MiB)
    none_found = leased("direct", "cluster", str(empty))
    assert none_found.returncode == 1 and "no lockspace" in none_found.stderr
    bad = leased("direct", "cluster", str(empty), "--interval", "soon")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert os.path.exists(empty)
