"""Who holds what, cluster-wide, judged from lease areas as read from disk.

``leased direct cluster`` reads lockspace and resource areas (no daemon is
asked, so it works on any host that sees the storage, and shows leased and
sanlock hosts alike) and hands the bytes to :func:`cluster_view`.  This
module is that analysis; it is pure: images of areas and the times they
were read go in, a :class:`ClusterView` comes out.

What the disk can and cannot tell:

* a host's delta lease (on-disk spec §3, §5) carries its host id,
  generation, the name the host put there when it joined, and a timestamp
  on *that host's* monotonic clock.  One read shows whether the host id is
  held (timestamp non-zero) but not whether its owner is alive; only a
  change between two reads proves a renewal.  Liveness therefore uses
  sanlock's own table (§5.4) over the span between the first and the last
  scan: changed means LIVE; unchanged means UNKNOWN up to 8N, FAIL after
  that, DEAD after 8N + W (N the host's io_timeout);
* a resource's leader names its exclusive owner (host id and generation)
  while its timestamp is non-zero, unless the owner's ballot block says it
  released that version (§7.4, §7.9); shared holders are the host sectors
  whose mode block has the SHARED flag (§6.3, §7.8);
* an owner whose host id has since been re-acquired with a higher
  generation, or released, is an earlier incarnation: its lease is stale and
  another host may take it.  That is reported next to the owner.

Nothing here trusts the bytes: bad magics, checksums and geometries become
``problem`` strings on the affected area, never exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from leased.constants import (
    DBLOCK_FL_RELEASED,
    DELTA_DISK_MAGIC,
    LEADER_RECORD_SIZE,
    MBLOCK_SHARED,
    PAXOS_DISK_CLEAR,
    PAXOS_DISK_MAGIC,
    REQ_DISK_MAGIC,
)
from leased.errors import LeaseError
from leased.geometry import Geometry, geometry_from_leader
from leased.ondisk import Leader, RequestRecord, decode_host_sector, name_text
from leased.timeouts import (
    DEFAULT_IO_TIMEOUT,
    DEFAULT_WATCHDOG_FIRE_TIMEOUT,
    host_dead_seconds,
    id_renewal_fail_seconds,
)


@dataclass(frozen=True)
class AreaImage:
    """One lease area's bytes as read from ``path`` at ``offset`` (at least its first sector)."""

    path: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class Scan:
    """Every area read in one pass, and our monotonic time when the pass was made."""

    time: float
    areas: Sequence[AreaImage]


@dataclass(frozen=True)
class HostView:
    host_id: int
    generation: int
    timestamp: int
    name: str
    io_timeout: int
    state: str
    """FREE, UNKNOWN, LIVE, FAIL or DEAD (sanlock's words, §5.4), judged over the scans' span."""
    unchanged_seconds: float | None
    """How long our scans saw the record unchanged (None: only one scan, or it changed)."""


@dataclass(frozen=True)
class Holder:
    host_id: int
    generation: int
    name: str
    note: str = ""


@dataclass(frozen=True)
class ResourceView:
    lockspace: str
    name: str
    path: str
    offset: int
    lver: int
    mode: str
    """EX, SH, free, or cleared."""
    holders: tuple[Holder, ...]
    """The EX owner, or every SH holder; empty when free."""
    request_lver: int = 0
    request_force_mode: int = 0
    problem: str = ""


@dataclass(frozen=True)
class ClusterLockspace:
    """One lockspace of a :class:`ClusterView`: its hosts, and the resources read under its name.

    A report of what the disk says, not :class:`leased.paxos_lease.LockspaceView` (what a paxos
    acquire judges another owner by)."""

    name: str
    path: str
    offset: int
    geometry: str
    hosts: tuple[HostView, ...]
    resources: tuple[ResourceView, ...]
    problem: str = ""


@dataclass(frozen=True)
class ClusterView:
    lockspaces: tuple[ClusterLockspace, ...]
    unmatched_resources: tuple[ResourceView, ...] = ()
    """Resources whose lockspace was not among the areas read (their owners' names are unknown)."""
    problems: tuple[str, ...] = ()
    scans: int = 1
    span_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Delta:
    """A lockspace area from one scan: its records by host id."""

    image: AreaImage
    name: bytes
    geometry: Geometry
    records: dict[int, Leader] = field(default_factory=dict)
    problem: str = ""


def area_kind(data: bytes) -> str | None:
    """``delta``, ``paxos`` (including a cleared lease) or None for what the first bytes say."""
    magic = int.from_bytes(data[:4], "little")
    if magic == DELTA_DISK_MAGIC:
        return "delta"
    if magic in (PAXOS_DISK_MAGIC, PAXOS_DISK_CLEAR):
        return "paxos"
    return None


def area_geometry(data: bytes) -> Geometry | None:
    """The geometry the area's first leader records, or None when it records none valid."""
    if len(data) < LEADER_RECORD_SIZE:
        return None
    leader = Leader.decode(data)
    try:
        return geometry_from_leader(leader.sector_size, leader.flags)
    except LeaseError:
        return None


def _where(image: AreaImage) -> str:
    return f"{image.path}:{image.offset}"


def _parse_delta(image: AreaImage) -> _Delta | None:
    geometry = area_geometry(image.data)
    if geometry is None:
        return None
    first = Leader.decode(image.data)
    delta = _Delta(image, first.space_name, geometry)
    sector = geometry.sector_size
    bad = []
    for index in range(min(geometry.max_hosts, len(image.data) // sector)):
        raw = image.data[index * sector : index * sector + LEADER_RECORD_SIZE]
        if not any(raw[32:48]) and not any(raw[152:160]):
            continue  # never acquired: owner_id, owner_generation and timestamp all zero
        leader = Leader.decode(raw)
        if leader.magic != DELTA_DISK_MAGIC or leader.checksum != leader.compute_checksum():
            bad.append(index + 1)
            continue
        if leader.owner_id or leader.owner_generation:
            delta.records[index + 1] = leader
    if bad:
        delta.problem = f"delta leases of host ids {bad} have a bad magic or checksum"
    return delta


def _host_state(changed: bool, timestamp: int, span: float, scans: int, io_timeout: int, w: int) -> str:
    if timestamp == 0:
        return "FREE"
    if changed:
        return "LIVE"
    if scans < 2 or span <= id_renewal_fail_seconds(io_timeout):
        return "UNKNOWN"
    if span > host_dead_seconds(io_timeout, w):
        return "DEAD"
    return "FAIL"


def _hosts(history: list[tuple[float, _Delta]], w: int) -> tuple[HostView, ...]:
    first_time, first = history[0]
    last_time, last = history[-1]
    span = last_time - first_time
    views = []
    for host_id in sorted(set(last.records) | set(first.records)):
        now = last.records.get(host_id)
        if now is None:
            continue
        seen = [delta.records.get(host_id) for _, delta in history]
        keys = {(r.owner_id, r.owner_generation, r.timestamp) if r else None for r in seen}
        changed = len(keys) > 1
        io_timeout = now.io_timeout or DEFAULT_IO_TIMEOUT
        views.append(
            HostView(
                host_id=host_id,
                generation=now.owner_generation,
                timestamp=now.timestamp,
                name=name_text(now.resource_name),
                io_timeout=now.io_timeout,
                state=_host_state(changed, now.timestamp, span, len(history), io_timeout, w),
                unchanged_seconds=None if changed or len(history) < 2 else span,
            )
        )
    return tuple(views)


def _note(host: HostView | None, generation: int) -> str:
    """Why a recorded holder may no longer really hold: its host id moved on or was released."""
    if host is None:
        return "host id never joined"
    if host.timestamp == 0:
        return "host id released: holder gone"
    if host.generation > generation:
        return f"host id now generation {host.generation}: holder gone"
    if host.state in ("FAIL", "DEAD"):
        return f"host {host.state}"
    return ""


def _parse_resource(image: AreaImage, hosts: dict[int, HostView]) -> ResourceView:
    leader = Leader.decode(image.data)
    base = ResourceView(
        name_text(leader.space_name), name_text(leader.resource_name), image.path, image.offset, leader.lver, "free", ()
    )
    if leader.magic == PAXOS_DISK_CLEAR:
        return replace(base, mode="cleared")
    geometry = area_geometry(image.data)
    if geometry is None:
        return replace(base, problem=f"no valid geometry at {_where(image)}")
    if leader.checksum != leader.compute_checksum():
        return replace(base, problem=f"leader checksum bad at {_where(image)}")
    sector = geometry.sector_size
    if len(image.data) >= 2 * sector:
        request = RequestRecord.decode(image.data, sector)
        if request.magic == REQ_DISK_MAGIC:
            base = replace(base, request_lver=request.lver, request_force_mode=request.force_mode)
    slots = min(leader.num_hosts, geometry.sectors - 2, max(0, len(image.data) // sector - 2))
    blocks = {slot + 1: decode_host_sector(image.data, (2 + slot) * sector) for slot in range(slots)}
    shared = [(host_id, mode.generation) for host_id, (_, mode) in sorted(blocks.items()) if mode.flags & MBLOCK_SHARED]
    owner_block = blocks.get(leader.owner_id)
    released = (
        owner_block is not None
        and bool(owner_block[0].flags & DBLOCK_FL_RELEASED)
        and owner_block[0].lver >= leader.lver
    )

    def holder(host_id: int, generation: int) -> Holder:
        host = hosts.get(host_id)
        return Holder(host_id, generation, host.name if host else "", _note(host, generation) if hosts else "")

    if leader.timestamp and leader.owner_id and not released:
        return replace(base, mode="EX", holders=(holder(leader.owner_id, leader.owner_generation),))
    if shared:
        return replace(base, mode="SH", holders=tuple(holder(h, g) for h, g in shared))
    return base


def cluster_view(scans: Sequence[Scan], watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT) -> ClusterView:
    """Analyse one or more scans of the same areas; resources are judged from the last scan.

    Lockspace areas are matched across scans by ``(path, offset)``; a
    resource belongs to the lockspace whose name its leader carries (the
    first such lockspace read, if several share a name).
    """
    if not scans:
        return ClusterView(lockspaces=(), problems=("nothing was read",), scans=0)
    problems: list[str] = []
    histories: dict[tuple[str, int], list[tuple[float, _Delta]]] = {}
    for scan in scans:
        for image in scan.areas:
            if area_kind(image.data) != "delta":
                continue
            delta = _parse_delta(image)
            if delta is None:
                if scan is scans[-1]:
                    problems.append(f"lockspace area at {_where(image)} records no valid geometry")
                continue
            histories.setdefault((image.path, image.offset), []).append((scan.time, delta))
    lockspaces: list[tuple[_Delta, tuple[HostView, ...]]] = []
    for history in histories.values():
        lockspaces.append((history[-1][1], _hosts(history, watchdog_fire_timeout)))
    by_name: dict[bytes, tuple[_Delta, tuple[HostView, ...]]] = {}
    for delta, hosts in lockspaces:
        by_name.setdefault(delta.name.split(b"\0", 1)[0], (delta, hosts))
    resources: dict[bytes, list[ResourceView]] = {}
    unmatched: list[ResourceView] = []
    for image in scans[-1].areas:
        if area_kind(image.data) != "paxos":
            continue
        space = Leader.decode(image.data).space_name.split(b"\0", 1)[0]
        found = by_name.get(space)
        host_map = {h.host_id: h for h in found[1]} if found else {}
        view = _parse_resource(image, host_map)
        (resources.setdefault(space, []) if found else unmatched).append(view)
    views = []
    for delta, hosts in lockspaces:
        space = delta.name.split(b"\0", 1)[0]
        own = resources.get(space, []) if by_name.get(space, (None,))[0] is delta else []
        views.append(
            ClusterLockspace(
                name=name_text(delta.name),
                path=delta.image.path,
                offset=delta.image.offset,
                geometry=str(delta.geometry),
                hosts=hosts,
                resources=tuple(own),
                problem=delta.problem,
            )
        )
    return ClusterView(
        lockspaces=tuple(views),
        unmatched_resources=tuple(unmatched),
        problems=tuple(problems),
        scans=len(scans),
        span_seconds=scans[-1].time - scans[0].time,
    )


# ---------------------------------------------------------------------------
# Text rendering


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _holders_text(resource: ResourceView) -> str:
    parts = []
    for holder in resource.holders:
        text = f"{holder.host_id}/{holder.generation}"
        if holder.name:
            text += f" {holder.name}"
        if holder.note:
            text += f" ({holder.note})"
        parts.append(text)
    return ", ".join(parts)


def _resource_rows(resources: Sequence[ResourceView], with_lockspace: bool) -> list[list[str]]:
    head = ["resource", "path:offset", "lver", "mode", "holders (host_id/generation name)"]
    rows = [head if not with_lockspace else ["lockspace", *head]]
    for res in resources:
        mode = res.mode
        if res.request_force_mode:
            mode += f" (request lver {res.request_lver} mode {res.request_force_mode})"
        if res.problem:
            mode += f" ({res.problem})"
        row = [res.name, f"{res.path}:{res.offset}", str(res.lver), mode, _holders_text(res)]
        rows.append([res.lockspace, *row] if with_lockspace else row)
    return rows


def format_text(view: ClusterView) -> list[str]:
    """Human-readable lines: per lockspace its hosts, then its resources."""
    lines: list[str] = []
    if view.scans > 1:
        lines.append(f"{view.scans} scans over {view.span_seconds:.1f} s")
    else:
        lines.append("one scan: a held host id shows UNKNOWN; give --interval SEC (> 2 * io_timeout) to see renewals")
    for problem in view.problems:
        lines.append(f"problem: {problem}")
    for ls in view.lockspaces:
        lines.append(f"lockspace {ls.name} at {ls.path}:{ls.offset} ({ls.geometry})")
        if ls.problem:
            lines.append(f"  problem: {ls.problem}")
        if ls.hosts:
            rows = [["host_id", "generation", "timestamp", "io_timeout", "state", "name"]]
            for host in ls.hosts:
                state = host.state
                if host.unchanged_seconds is not None and host.state != "FREE":
                    state += f" (unchanged {host.unchanged_seconds:.0f} s)"
                numbers = [str(n) for n in (host.host_id, host.generation, host.timestamp, host.io_timeout)]
                rows.append([*numbers, state, host.name])
            lines.extend(_table(rows))
        else:
            lines.append("  no host has joined")
        if ls.resources:
            lines.extend(_table(_resource_rows(ls.resources, False)))
    if view.unmatched_resources:
        lines.append("resources of lockspaces not read")
        lines.extend(_table(_resource_rows(view.unmatched_resources, True)))
    return lines
