"""What the daemon says about itself: STATUS records and the metrics families.

A few commands report the daemon's state rather than change it: sanlock's
STATUS (``sanlock client status``), GET_LOCKSPACES, GET_HOSTS, HOST_STATUS
and RENEWAL, and leased's private METRICS.  This module owns what they report;
:mod:`leased.commands` reads the clock, calls in here and frames the reply.

* :func:`status_records` builds the STATUS records: one for the daemon, then
  one per client, per lockspace and per resource lease, each a
  :class:`~leased.protocol.StateRecord` whose ``key=value`` text uses sanlock
  3.8.5's field names and order, so tools that parse sanlock's status read
  leased's the same way (``tests/test_status_json.py`` runs both daemons).
  Fields leased has no counterpart for (the helper process, max_sectors_kb,
  aio) carry fixed values.
* :func:`lockspace_list` builds what GET_LOCKSPACES reports: every
  lockspace and whether it is joining or leaving.
* :func:`host_list`, :func:`host_status_records` and :func:`renewal_records`
  build what GET_HOSTS, HOST_STATUS and RENEWAL report of one lockspace:
  its host table as the daemon judges it, and its own renewal history.
* :func:`metrics_families` builds the :class:`~leased.metrics.Family` values
  that :func:`leased.metrics.render` turns into Prometheus text.  Metric and
  label names are fixed here; label values come from lockspace names and the
  renderer escapes them.

Rules: everything here is a pure function of the :class:`DaemonState` and a
monotonic ``now`` passed in: no clock, no trio, no sockets, no logging, and
no change to the state it reads.  The caller picks ``now``, so a report is
reproducible from a state a test builds.

Why a module of its own: the command handlers move leases and talk to disks;
reporting does neither and changes for other reasons (a new metric, a field
sanlock added).  Apart, the handlers stay about commands, and the reports sit
below them in the import order (state, lockspace, resource, protocol,
metrics) with nothing above them needed to build one.
"""

from __future__ import annotations

from collections.abc import Callable

from leased.constants import MiB
from leased.geometry import Geometry
from leased.host_status import HostState, HostStatusTable
from leased.lockspace import JoinedLockspace, LockspaceState
from leased.metrics import Family, LatencyHistogram, Sample
from leased.protocol import (
    LSF_ADD,
    LSF_REM,
    SM_PROTO,
    VERSION_NUM,
    VERSION_STR,
    Disk,
    Host,
    Lockspace,
    Resource,
    StateRecord,
    StateType,
)
from leased.resource import Token
from leased.state import ClientState, DaemonState
from leased.timeouts import id_renewal_fail_seconds

# ---------------------------------------------------------------------------
# STATUS


def _daemon_text(state: DaemonState, now: float) -> str:
    config = state.config
    return (
        f"our_host_name={config.our_host_name} use_watchdog={int(config.use_watchdog)} "
        f"high_priority={config.high_priority} mlock_level={config.mlock_level} quiet_fail={int(config.quiet_fail)} "
        f"debug_renew={int(config.debug_renew)} debug_clients=0 debug_cmds=0x0 "
        f"renewal_history_size={config.renewal_history_size} gid={config.gid} uid={config.uid} sh_retries=8 "
        f"max_sectors_kb_ignore=0 max_sectors_kb_align=0 max_sectors_kb_num=0 "
        f"max_worker_threads={config.max_worker_threads} write_init_io_timeout=60 use_aio=1 "
        f"kill_grace_seconds={config.kill_grace_seconds if config.kill_grace_seconds is not None else 40} "
        f"helper_pid=0 helper_kill_fd=-1 helper_full_count=0 helper_last_status=0 "
        f"monotime={int(now)} version_str={VERSION_STR} version_num={VERSION_STR} "
        f"version_hex={VERSION_NUM:08x} smproto_hex={SM_PROTO:08x}"
    )


def _client_record(client: ClientState) -> bytes:
    text = (
        f"ci={client.ci} fd={client.fd} pid={client.pid} flags=0 restricted={client.restrict:x} "
        f"cmd_active={client.cmd_active} cmd_last={client.cmd_last} pid_dead={int(client.dead)} "
        f"kill_count={client.kill_count} kill_last={client.kill_last} suspend=0 need_free=0"
    )
    return StateRecord(StateType.CLIENT, client.pid, 0, client.name[:48], text).encode()


def _lockspace_record(lockspace: JoinedLockspace) -> bytes:
    """The record and, after it, the lockspace struct (name, host id, disk) sanlock appends."""
    geometry = lockspace.lease.area.geometry if lockspace.lease else Geometry(512, MiB)
    listed = {LockspaceState.JOINED: "spaces", LockspaceState.ADDING: "add"}.get(lockspace.state, "rem")
    text = (
        f"list={listed} space_id={lockspace.space_id} io_timeout={lockspace.io_timeout} "
        f"sector_size={geometry.sector_size} align_size={geometry.align_size} "
        f"host_generation={lockspace.host_generation} renew_fail={int(lockspace.renewal_fail)} "
        f"space_dead={int(lockspace.state is LockspaceState.FAILED)} killing_pids=0 used_retries=0 "
        f"external_used=0 used_by_orphans=0 renewal_read_extend_sec={lockspace.io_timeout} set_max_sectors_kb=0 "
        f"corrupt_result={lockspace.corrupt_result} acquire_last_result={lockspace.add_result} "
        f"renewal_last_result=0 "
        f"acquire_last_attempt=0 acquire_last_success=0 renewal_last_attempt=0 "
        f"renewal_last_success={lockspace.lease.last_success if lockspace.lease else 0}"
    )
    ls = Lockspace(lockspace.name, lockspace.host_id, 0, Disk(lockspace.key.path, lockspace.key.offset))
    return StateRecord(StateType.LOCKSPACE, 0, lockspace.host_id, lockspace.name, text).encode() + ls.encode()


def _resource_record(token: Token, holder: ClientState | None) -> bytes:
    """The record and, after it, the resource struct; an orphan (no live holder) reports pid -1."""
    area = token.lease.area
    listed = "orphan" if token.orphan else "held"
    text = (
        f"list={listed} flags={token.resource.flags:x} sector_size={area.sector_size} "
        f"align_size={area.geometry.align_size} lver={token.lver} reused=0 "
        f"res_id={token.token_id} token_id={token.token_id}"
    )
    lver = 0 if token.shared else token.lver
    record = StateRecord(StateType.RESOURCE, holder.pid if holder else -1, lver, token.resource.name, text)
    res = Resource(
        token.resource.lockspace,
        token.resource.name,
        flags=token.resource.flags,
        num_disks=1,
        disks=token.resource.disks,
    )
    return record.encode() + res.encode()


def status_records(state: DaemonState, detail: int, now: float) -> list[bytes]:
    """The encoded STATUS records, in sanlock's order, at monotonic time ``now``.

    ``detail`` is the request's ``data`` field: 1 stops after the daemon
    record, 2 after the clients, 3 after the lockspaces; any other value
    reports resource leases too.
    """
    records = [
        StateRecord(StateType.DAEMON, 0, 0, state.config.our_host_name.encode()[:48], _daemon_text(state, now)).encode()
    ]
    if detail == 1:
        return records
    records.extend(_client_record(client) for client in sorted(state.clients.values(), key=lambda c: c.ci))
    if detail == 2:
        return records
    records.extend(_lockspace_record(lockspace) for lockspace in state.lockspaces)
    if detail == 3:
        return records
    records.extend(_resource_record(token, state.clients.get(token.client_id)) for token in state.leases.tokens())
    return records


# ---------------------------------------------------------------------------
# METRICS (leased extension)


def lockspace_list(state: DaemonState) -> list[Lockspace]:
    """GET_LOCKSPACES: the joined lockspaces, then those leaving (LSF_REM), then those joining (LSF_ADD)."""
    order = [(LockspaceState.JOINED, 0), (LockspaceState.REMOVING, LSF_REM), (LockspaceState.ADDING, LSF_ADD)]
    return [
        Lockspace(x.name, x.host_id, flags, Disk(x.key.path, x.key.offset))
        for wanted, flags in order
        for x in state.lockspaces
        if x.state is wanted
    ]


def host_list(table: HostStatusTable, now: float, host_id: int) -> list[Host]:
    """GET_HOSTS: host ``host_id`` (FREE if never seen), or with 0 every host that has written a timestamp."""
    hosts = []
    wanted = [host_id] if host_id else sorted(table.hosts)
    for one in wanted:
        record = table.hosts.get(one)
        if record is None:
            hosts.append(Host(one, flags=HostState.FREE))
            continue
        if not host_id and record.timestamp == 0:
            continue
        hosts.append(Host(one, record.owner_generation, record.timestamp, record.io_timeout, table.state(one, now)))
    return hosts


def host_status_records(table: HostStatusTable) -> list[bytes]:
    """HOST_STATUS: one HOST record per host seen live or owned, in sanlock's ``key=value`` text."""
    records = []
    for host_id, record in sorted(table.hosts.items()):
        if not (record.last_live or record.owner_id):
            continue
        owner_name = record.owner_name.split(b"\0", 1)[0].decode(errors="replace")
        text = (
            f"last_check={int(record.last_check)} last_live={int(record.last_live)} last_req=0 "
            f"owner_id={record.owner_id} owner_generation={record.owner_generation} timestamp={record.timestamp} "
            f"io_timeout={record.io_timeout} owner_name={owner_name}"
        )
        records.append(StateRecord(StateType.HOST, host_id, record.timestamp, b"", text).encode())
    return records


def renewal_records(lockspace: JoinedLockspace) -> list[bytes]:
    """RENEWAL: one record per renewal the lockspace remembers, oldest first."""
    return [
        StateRecord(
            StateType.RENEWAL,
            0,
            entry.timestamp,
            b"",
            f"timestamp={entry.timestamp} read_ms={entry.read_ms} write_ms={entry.write_ms} "
            f"next_timeouts={entry.next_timeouts} next_errors={entry.next_errors}",
        ).encode()
        for entry in lockspace.history
    ]


def _label(name: bytes) -> str:
    """A lockspace name as a label value: names come from clients and disks, so undecodable bytes are replaced."""
    return name.decode(errors="replace")


def metrics_families(state: DaemonState, now: float) -> list[Family]:
    """The daemon's numbers as metric families, at monotonic time ``now``.

    Per-lockspace series are labelled by lockspace name; when a failed
    lockspace and its re-added successor share a name, the newer one wins
    (two series with one label set would make the exposition invalid).
    """
    by_name: dict[str, JoinedLockspace] = {}
    for lockspace in state.lockspaces:
        by_name[_label(lockspace.name)] = lockspace
    spaces = sorted(by_name.items())

    def per_space(value: Callable[[JoinedLockspace], float | None]) -> list[Sample]:
        samples = []
        for name, lockspace in spaces:
            number = value(lockspace)
            if number is not None:
                samples.append(Sample({"lockspace": name}, number))
        return samples

    def age(lockspace: JoinedLockspace) -> float | None:
        return None if lockspace.lease is None else max(0.0, now - lockspace.lease.last_success)

    def expiry(lockspace: JoinedLockspace) -> float | None:
        if lockspace.lease is None or lockspace.state is not LockspaceState.JOINED:
            return None if lockspace.lease is None else 0.0
        deadline = lockspace.lease.last_success + id_renewal_fail_seconds(lockspace.io_timeout)
        return max(0.0, deadline - now)

    held: dict[tuple[str, str], int] = {}
    orphans: dict[tuple[str, str], int] = {}
    for name, _ in spaces:
        for mode in ("exclusive", "shared"):
            held[(name, mode)] = orphans[(name, mode)] = 0
    for token in state.leases.tokens():
        key = (_label(token.key[0]), "shared" if token.shared else "exclusive")
        table = orphans if token.orphan else held
        table[key] = table.get(key, 0) + 1

    hosts: list[Sample] = []
    for name, lockspace in spaces:
        if lockspace.table is None:
            continue
        counts = dict.fromkeys(HostState, 0)
        for host_id, record in lockspace.table.hosts.items():
            if record.timestamp or record.last_live:
                counts[lockspace.table.state(host_id, now)] += 1
        hosts.extend(Sample({"lockspace": name, "state": s.name.lower()}, n) for s, n in counts.items())

    clients = [c for c in state.clients.values() if not c.dead]
    histograms: list[tuple[dict[str, str], LatencyHistogram]] = [
        ({"lockspace": name}, lockspace.renewal_latency) for name, lockspace in spaces
    ]
    return [
        Family(
            "leased_info",
            "Constant 1; labels name the sanlock version spoken and this host's name in delta leases.",
            "gauge",
            [Sample({"version": VERSION_STR, "host_name": state.config.our_host_name}, 1)],
        ),
        Family(
            "leased_uptime_seconds", "Seconds since the daemon started.", "gauge", [Sample({}, now - state.started)]
        ),
        Family(
            "leased_clients",
            "Connected clients: registered processes (lease holders) and one-shot command connections.",
            "gauge",
            [
                Sample({"kind": "registered"}, sum(1 for c in clients if c.registered)),
                Sample({"kind": "one_shot"}, sum(1 for c in clients if not c.registered)),
            ],
        ),
        Family(
            "leased_lockspaces",
            "Lockspaces by state (adding, joined, removing, failed).",
            "gauge",
            [
                Sample({"state": ls_state.name.lower()}, sum(1 for x in state.lockspaces if x.state is ls_state))
                for ls_state in LockspaceState
            ],
        ),
        Family("leased_lockspace_host_id", "Our host id in the lockspace.", "gauge", per_space(lambda x: x.host_id)),
        Family(
            "leased_lockspace_io_timeout_seconds",
            "The lockspace's io_timeout N: renewal every 2N, renewal failure after 8N.",
            "gauge",
            per_space(lambda x: x.io_timeout),
        ),
        Family(
            "leased_lockspace_renewal_failed",
            "1 once the lockspace failed (no renewal for 8N, or corruption): no new leases, holders are fenced.",
            "gauge",
            per_space(lambda x: 1 if x.renewal_fail or x.state is LockspaceState.FAILED else 0),
        ),
        Family(
            "leased_renewal_age_seconds",
            "Seconds since the last successful renewal of our host id (alarm well before 8N).",
            "gauge",
            per_space(age),
        ),
        Family(
            "leased_renewal_expiry_seconds",
            "Seconds left before the lockspace fails for lack of a successful renewal (0 once failed).",
            "gauge",
            per_space(expiry),
        ),
        Family(
            "leased_renewal_last_duration_seconds",
            "Duration of the last successful renewal (area read and our sector's write).",
            "gauge",
            per_space(lambda x: x.last_renewal_seconds if x.renewals_ok else None),
        ),
        Family(
            "leased_renewal_duration_seconds",
            "Durations of successful renewals since the lockspace was joined.",
            "histogram",
            histograms=histograms,
        ),
        Family(
            "leased_renewals_total",
            "Renewal attempts since the lockspace was joined, by result.",
            "counter",
            [
                Sample({"lockspace": name, "result": result}, count)
                for name, lockspace in spaces
                for result, count in (("ok", lockspace.renewals_ok), ("error", lockspace.renewals_failed))
            ],
        ),
        Family(
            "leased_resources_held",
            "Resource leases held by registered processes, by lockspace and mode.",
            "gauge",
            [Sample({"lockspace": n, "mode": m}, v) for (n, m), v in sorted(held.items())],
        ),
        Family(
            "leased_resources_orphaned",
            "Persistent leases whose process exited, kept as orphans, by lockspace and mode.",
            "gauge",
            [Sample({"lockspace": n, "mode": m}, v) for (n, m), v in sorted(orphans.items())],
        ),
        Family(
            "leased_hosts",
            "Hosts seen in the lockspace's delta leases, by the state this daemon judges them in.",
            "gauge",
            hosts,
        ),
    ]
