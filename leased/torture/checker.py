"""Reads a torture history and finds every violation of what a lease manager promises.

The rules, each a :class:`Violation` ``rule`` name:

``exclusive-overlap`` / ``shared-exclusive-overlap``
    Two processes believed they held one resource at the same time and at
    least one of them held it exclusively.  A belief runs from the ``held``
    record to the first ``releasing`` record after it: a worker uses a lease
    only before it asks to release it, and not while it retries a release
    that failed; a process that died ends its belief at its death (below).
``devcount``
    The counters written beside a resource while holding it EX must grow
    strictly in time: a repeat or a step back means two writers.  Workers
    also report what they see themselves (a counter that changed under
    them) as ``violation`` records.
``dead-holder``
    A process died holding a lease, and nothing afterwards shows the lease
    was let go: no other process got it later, its host was not fenced,
    and the final check could not acquire it.
``lost``
    A worker found a lease gone from its daemon's list while it believed it
    held it, and nothing had told it: no fault on its host was active then,
    and it had not asked to release it (a release that failed and then found
    the lease gone was told by that failure).

When a process died is known from the history: the last record it wrote
itself when it exited on its own (``fenced``, ``vanish``, ``daemon_gone``,
``exit``); when the harness killed it, the later of the kill and its last
record; otherwise (its daemon killed it) the time the harness reaped it,
which is late, so the interval is longer than the truth and an overlap can
be reported that was not there, but never missed.

This module does no I/O: it takes records and returns a :class:`Report`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from leased.torture.history import Record

EXCLUSIVE, SHARED = "EX", "SH"

SELF_ENDS = frozenset({"fenced", "vanish", "daemon_gone", "exit"})
"""Records a worker writes as the last thing before it exits."""

HOST_FAULT_PREFIXES = ("storage", "daemon")
"""Fault kinds that act on a whole host: while one is active, its workers may be told to go."""


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str
    t: float


@dataclass
class Interval:
    """One process's belief that it held one resource."""

    resource: str
    mode: str
    pid: int
    host: str
    start: float
    end: float = math.inf
    ended_by: str = "open"


@dataclass
class Report:
    operations: Counter[str] = field(default_factory=Counter)
    acquired_by_host: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    intervals: int = 0
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.violations

    def text(self) -> str:
        """The human report: operations, faults by kind, violations, and the final pass/fail line."""
        lines = [f"duration: {self.duration:.0f} s, lease intervals checked: {self.intervals}", "operations:"]
        lines += [f"  {name:<28} {count}" for name, count in sorted(self.operations.items())]
        lines.append("leases acquired by host:")
        lines += [f"  {name:<28} {count}" for name, count in sorted(self.acquired_by_host.items())]
        lines.append("faults injected:")
        lines += [f"  {name:<28} {count}" for name, count in sorted(self.faults.items())] or ["  none"]
        lines.append(f"violations: {len(self.violations)}")
        lines += [f"  [{v.rule}] t={v.t:.3f} {v.detail}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... and {len(self.violations) - 50} more")
        lines.append("RESULT: PASS" if self.passed else "RESULT: FAIL")
        return "\n".join(lines) + "\n"


@dataclass
class _Process:
    host: str = ""
    last_own: float = -math.inf
    self_end: float | None = None
    killed: float | None = None
    reaped: float | None = None

    def death(self) -> float:
        if self.self_end is not None:
            return max(self.self_end, self.last_own)
        if self.killed is not None:
            return max(self.killed, self.last_own)
        if self.reaped is not None:
            return self.reaped
        return math.inf


UNCHECKED = frozenset({"acquire", "start"})
"""Records no rule reads and the report does not count: the most frequent kind, so they are not kept."""


def check(records: Iterable[Record]) -> Report:
    report = Report()
    kept: list[Record] = []
    first, last = math.inf, -math.inf
    for record in records:
        first, last = min(first, record["t"]), max(last, record["t"])
        if record["k"] == "acquire_failed":  # only counted: not kept, a large share of a long history
            _count_failed_acquire(record, report)
        elif record["k"] not in UNCHECKED:
            kept.append(record)
    ordered = sorted(kept, key=lambda r: r["t"])
    if last >= first:
        report.duration = last - first
    processes = _processes(ordered)
    host_faults = _host_fault_windows(ordered)
    intervals = _intervals(ordered, processes, host_faults, report)
    report.intervals = len(intervals)
    _count(ordered, report)
    _check_overlaps(intervals, report)
    _check_devcount(ordered, report)
    _check_dead_holders(ordered, intervals, report)
    report.violations.sort(key=lambda v: v.t)
    return report


def _processes(ordered: list[Record]) -> dict[int, _Process]:
    processes: dict[int, _Process] = defaultdict(_Process)
    for record in ordered:
        kind = record["k"]
        if kind == "client_kill":
            target = processes[record["pid"]]
            target.killed = record["t"] if target.killed is None else target.killed
        elif kind == "client_exit":
            processes[record["pid"]].reaped = record["t"]
        elif record.get("h"):
            own = processes[record["p"]]
            own.host = record["h"]
            own.last_own = record["t"]
            if kind in SELF_ENDS and own.self_end is None:
                own.self_end = record["t"]
    return processes


def _host_fault_windows(ordered: list[Record]) -> dict[str, list[tuple[float, float]]]:
    """Per host, when a host-level fault was active (from its ``fault`` record to its ``heal``)."""
    opened: dict[tuple[str, int], float] = {}
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in ordered:
        if record["k"] == "fault" and str(record.get("kind", "")).startswith(HOST_FAULT_PREFIXES):
            opened[(record["target"], record.get("id", 0))] = record["t"]
        elif record["k"] == "heal":
            key = (record["target"], record.get("id", 0))
            if key in opened:
                windows[key[0]].append((opened.pop(key), record["t"]))
        elif record["k"] in ("host_down", "lockspace_lost"):
            windows[record["target"]].append((record["t"], record["t"]))
    for (host, _), start in opened.items():
        windows[host].append((start, math.inf))
    return windows


def _told(host_faults: dict[str, list[tuple[float, float]]], host: str, start: float, end: float) -> bool:
    return any(a <= end and start <= b for a, b in host_faults.get(host, ()))


def _intervals(
    ordered: list[Record],
    processes: dict[int, _Process],
    host_faults: dict[str, list[tuple[float, float]]],
    report: Report,
) -> list[Interval]:
    done: list[Interval] = []
    holding: dict[tuple[int, str], Interval] = {}
    releasing: dict[tuple[int, str], float] = {}
    for record in ordered:
        kind, t = record["k"], record["t"]
        if kind not in ("held", "releasing", "released", "lost", "violation"):
            continue
        key = (record["p"], record.get("r", ""))
        if kind == "held":
            if key in holding:
                report.violations.append(Violation("double-held", f"pid {key[0]} got {key[1]} twice", t))
            holding[key] = Interval(key[1], record["m"], key[0], record["h"], t)
        elif kind == "releasing":
            releasing.setdefault(key, t)  # use ends at the first request to release
        elif kind == "released":
            if record["rc"] == 0 and key in holding:
                interval = holding.pop(key)
                interval.end, interval.ended_by = releasing.pop(key, t), "release"
                done.append(interval)
        elif kind == "lost":
            if key not in holding:
                continue
            interval = holding.pop(key)
            asked = releasing.pop(key, None)
            interval.end, interval.ended_by = (t, "lost") if asked is None else (asked, "release failed")
            done.append(interval)
            if asked is None and not _told(host_faults, interval.host, interval.start, t):
                detail = f"pid {key[0]} on {interval.host}: {key[1]} gone from inquire while held, untold"
                report.violations.append(Violation("lost", detail, t))
        elif kind == "violation":
            report.violations.append(Violation(record["what"], f"pid {key[0]} on {record['h']}: {record['detail']}", t))
    for key, interval in holding.items():
        death = processes[key[0]].death() if key[0] in processes else math.inf
        # A worker that asked to release and died (or lost its daemon) before the answer stopped
        # using the lease when it asked, as one whose release was answered: its daemon may well have
        # released it on disk and given it to another process before the death.
        interval.end = min(releasing.get(key, math.inf), death)
        interval.ended_by = "death" if math.isfinite(death) else "open"
        done.append(interval)
    return done


def _count(ordered: list[Record], report: Report) -> None:
    for record in ordered:
        kind = record["k"]
        if kind == "held":
            report.operations[f"acquired {record['m']}"] += 1
            report.acquired_by_host[record["h"]] += 1
        elif kind == "released":
            report.operations["released" if record["rc"] == 0 else f"release failed rc {record['rc']}"] += 1
            if record["rc"] == -12:
                report.faults["alloc failure at release"] += 1
        elif kind in ("devcount", "interleaved", "vanish", "fenced", "daemon_gone", "lost", "client_exit", "orphaned"):
            report.operations[kind] += 1
        elif kind == "host_down" and record.get("why") == "watchdog reset":
            report.faults["watchdog reset"] += 1
        elif kind == "fault":
            report.faults[record["kind"]] += 1
        elif kind == "orphans_released":
            report.operations["orphans released at end"] += record["count"]


def _count_failed_acquire(record: Record, report: Report) -> None:
    report.operations[f"acquire failed rc {record['rc']}"] += 1
    if record["rc"] == -12:
        report.faults["alloc failure at acquire"] += 1


def _conflict(a: Interval, b: Interval) -> str | None:
    if a.pid == b.pid or not (a.start < b.end and b.start < a.end):
        return None
    if a.mode == EXCLUSIVE and b.mode == EXCLUSIVE:
        return "exclusive-overlap"
    if EXCLUSIVE in (a.mode, b.mode):
        return "shared-exclusive-overlap"
    return None


def _check_overlaps(intervals: list[Interval], report: Report) -> None:
    by_resource: dict[str, list[Interval]] = defaultdict(list)
    for interval in intervals:
        by_resource[interval.resource].append(interval)
    for resource, group in by_resource.items():
        group.sort(key=lambda i: i.start)
        active: list[Interval] = []
        for interval in group:
            active = [a for a in active if a.end > interval.start]
            for other in active:
                rule = _conflict(other, interval)
                if rule is not None:
                    detail = (
                        f"{resource}: pid {other.pid} on {other.host} {other.mode} "
                        f"[{other.start:.3f}, {other.end:.3f}] ({other.ended_by}) and pid {interval.pid} "
                        f"on {interval.host} {interval.mode} [{interval.start:.3f}, {interval.end:.3f}]"
                    )
                    report.violations.append(Violation(rule, detail, interval.start))
            active.append(interval)


def _check_devcount(ordered: list[Record], report: Report) -> None:
    highest: dict[str, tuple[int, int]] = {}
    for record in ordered:
        if record["k"] != "devcount":
            continue
        resource, n = record["r"], record["n"]
        before = highest.get(resource)
        if before is not None and n <= before[0]:
            detail = f"{resource}: pid {record['p']} wrote {n} after pid {before[1]} wrote {before[0]}"
            report.violations.append(Violation("devcount", detail, record["t"]))
        if before is None or n > before[0]:
            highest[resource] = (n, record["p"])


def _check_dead_holders(ordered: list[Record], intervals: list[Interval], report: Report) -> None:
    last_start: dict[str, float] = {}
    for interval in intervals:
        last_start[interval.resource] = max(last_start.get(interval.resource, -math.inf), interval.start)
    freed_at_end = {r["r"] for r in ordered if r["k"] == "final" and r["free"]}
    last_fenced: dict[str, float] = {}
    for record in ordered:
        if record["k"] in ("host_down", "lockspace_lost"):
            last_fenced[record["target"]] = max(last_fenced.get(record["target"], -math.inf), record["t"])
    for interval in intervals:
        if interval.ended_by != "death" or interval.resource in freed_at_end:
            continue
        if last_start[interval.resource] > interval.end:
            continue  # somebody got it after the death
        if last_fenced.get(interval.host, -math.inf) >= interval.start:
            continue
        detail = (
            f"{interval.resource}: pid {interval.pid} on {interval.host} died holding it {interval.mode} "
            f"at {interval.end:.3f}; never released, host never fenced"
        )
        report.violations.append(Violation("dead-holder", detail, interval.end))
