"""The torture checker, tested with small histories, each clean or with one planted violation.

A checker that never fails proves nothing: every rule is shown to fire on
the history that breaks it, and to stay quiet on the nearest history that
does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from leased.torture.checker import Report, check
from leased.torture.history import History, Record, read_history


class Story:
    """Builds a history: workers on hosts, and the harness."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def worker(self, t: float, pid: int, host: str, kind: str, /, **fields: Any) -> None:
        self.records.append({"t": t, "k": kind, "p": pid, "h": host, **fields})

    def harness(self, t: float, kind: str, /, **fields: Any) -> None:
        self.records.append({"t": t, "k": kind, "p": 1, "h": "", **fields})

    def hold(self, pid: int, host: str, resource: str, mode: str, start: float, end: float) -> None:
        self.worker(start, pid, host, "held", r=resource, m=mode, lver=1)
        self.worker(end, pid, host, "releasing", r=resource)
        self.worker(end + 0.001, pid, host, "released", r=resource, rc=0)

    def check(self) -> Report:
        return check(self.records)


def rules(report: Report) -> list[str]:
    return [v.rule for v in report.violations]


def test_a_clean_history_passes_and_is_counted() -> None:
    story = Story()
    story.hold(10, "a", "R0", "EX", 1.0, 2.0)
    story.hold(20, "b", "R0", "EX", 2.5, 3.0)
    story.hold(10, "a", "R0", "SH", 3.5, 4.0)
    story.hold(20, "b", "R0", "SH", 3.6, 4.5)
    story.worker(1.1, 10, "a", "devcount", r="R0", n=1)
    story.worker(2.6, 20, "b", "devcount", r="R0", n=2)
    story.harness(1.5, "fault", kind="client_stop", target="b", id=1)
    story.worker(0.5, 10, "a", "acquire", r="R0", m="EX", persistent=False)
    story.worker(0.6, 10, "a", "acquire_failed", r="R0", m="EX", rc=-12)
    report = story.check()
    assert report.passed and report.violations == []
    assert report.operations["acquired EX"] == 2 and report.operations["acquired SH"] == 2
    assert report.operations["devcount"] == 2 and report.faults["client_stop"] == 1
    assert report.operations["acquire failed rc -12"] == 1 and report.faults["alloc failure at acquire"] == 1
    assert report.duration == pytest.approx(4.501 - 0.5)
    assert report.acquired_by_host == {"a": 2, "b": 2}
    assert report.intervals == 4
    assert report.text().endswith("RESULT: PASS\n")


def test_planted_exclusive_overlap_fails() -> None:
    story = Story()
    story.hold(10, "a", "R0", "EX", 1.0, 2.0)
    story.hold(20, "b", "R0", "EX", 1.9, 3.0)
    report = story.check()
    assert rules(report) == ["exclusive-overlap"]
    assert "pid 10 on a EX" in report.violations[0].detail and "pid 20 on b EX" in report.violations[0].detail
    assert report.text().endswith("RESULT: FAIL\n")


def test_touching_intervals_and_other_resources_do_not_overlap() -> None:
    story = Story()
    story.hold(10, "a", "R0", "EX", 1.0, 2.0)
    story.hold(20, "b", "R0", "EX", 2.0, 3.0)  # releasing at 2.0, the next held at 2.0: no overlap
    story.hold(30, "c", "R1", "EX", 1.0, 3.0)
    assert story.check().passed


@pytest.mark.parametrize(("first", "second", "expected"), [("SH", "EX", 1), ("EX", "SH", 1), ("SH", "SH", 0)])
def test_planted_shared_exclusive_overlap_fails(first: str, second: str, expected: int) -> None:
    story = Story()
    story.hold(10, "a", "R0", first, 1.0, 2.0)
    story.hold(20, "b", "R0", second, 1.5, 2.5)
    assert rules(story.check()) == ["shared-exclusive-overlap"] * expected


def test_planted_devcount_repeat_and_step_back_fail() -> None:
    story = Story()
    for t, pid, n in ((1.0, 10, 1), (2.0, 20, 2), (3.0, 30, 2), (4.0, 40, 1), (5.0, 50, 3)):
        story.worker(t, pid, "a", "devcount", r="R0", n=n)
    story.worker(1.5, 60, "a", "devcount", r="R1", n=1)  # another resource counts on its own
    report = story.check()
    assert rules(report) == ["devcount", "devcount"]
    assert "pid 30 wrote 2 after pid 20 wrote 2" in report.violations[0].detail


def test_a_violation_a_worker_saw_itself_is_reported() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "violation", r="R0", what="devcount", detail="counter (5, 99) while holding shared")
    report = story.check()
    assert rules(report) == ["devcount"] and "pid 10 on a" in report.violations[0].detail


def test_planted_dead_holder_never_released_fails() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.harness(2.0, "client_kill", pid=10, why="fault")
    story.harness(2.1, "client_exit", pid=10, status=-9, target="a")
    story.harness(9.0, "final", r="R0", free=False)
    report = story.check()
    assert rules(report) == ["dead-holder"]
    assert "pid 10 on a died holding it EX" in report.violations[0].detail


@pytest.mark.parametrize("evidence", ["later holder", "final free", "host fenced"])
def test_dead_holder_with_evidence_of_release_passes(evidence: str) -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.harness(2.0, "client_kill", pid=10, why="fault")
    story.harness(2.1, "client_exit", pid=10, status=-9, target="a")
    story.harness(9.0, "final", r="R0", free=evidence == "final free")
    if evidence == "later holder":
        story.hold(20, "b", "R0", "EX", 3.0, 4.0)
    if evidence == "host fenced":
        story.harness(2.5, "host_down", target="a")
    assert story.check().passed


def test_a_killed_worker_holds_until_its_last_own_record() -> None:
    """The kill is recorded just before kill(2): the worker may still write a record or two."""
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.harness(2.0, "client_kill", pid=10, why="fault")
    story.worker(2.002, 10, "a", "devcount", r="R0", n=1)
    story.harness(9.0, "final", r="R0", free=True)
    story.hold(20, "b", "R0", "EX", 2.001, 3.0)
    assert rules(story.check()) == ["exclusive-overlap"]
    story.records = [r for r in story.records if r.get("p") != 20]
    story.hold(20, "b", "R0", "EX", 2.003, 3.0)
    assert story.check().passed


def test_a_worker_killed_by_its_daemon_holds_until_reaped() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.harness(5.0, "client_exit", pid=10, status=-9, target="a")
    story.harness(9.0, "final", r="R0", free=True)
    story.hold(20, "b", "R0", "EX", 4.0, 6.0)
    assert rules(story.check()) == ["exclusive-overlap"]


def test_a_fenced_worker_holds_until_its_fenced_record() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(3.0, 10, "a", "fenced", sig=15)
    story.harness(9.0, "client_exit", pid=10, status=0, target="a")
    story.hold(20, "b", "R0", "EX", 3.5, 6.0)
    assert story.check().passed


def test_use_ends_at_the_first_request_to_release_even_if_it_failed() -> None:
    """A worker does not use a lease once it asked to release it, also while it retries a failed release."""
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(2.0, 10, "a", "releasing", r="R0")
    story.worker(2.01, 10, "a", "released", r="R0", rc=-12)
    story.worker(3.0, 10, "a", "releasing", r="R0")
    story.worker(3.01, 10, "a", "released", r="R0", rc=0)
    story.hold(20, "b", "R0", "EX", 2.5, 4.0)
    assert story.check().passed
    story.hold(30, "c", "R0", "EX", 1.5, 1.8)
    assert rules(story.check()) == ["exclusive-overlap"]


@pytest.mark.parametrize("end", ["killed", "daemon gone"])
def test_use_ends_at_a_request_to_release_that_its_death_left_unanswered(end: str) -> None:
    """Found by a 30-minute --watchdog run: a worker asked to release, then was SIGSTOPped and killed
    (or its daemon was killed) before the answer, while its daemon had already released the lease on
    disk and another process took it.  The worker stopped using it when it asked, so no overlap."""
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(2.0, 10, "a", "releasing", r="R0")
    if end == "killed":
        story.harness(5.0, "client_kill", pid=10, why="fault")
        story.harness(5.01, "client_exit", pid=10, status=-9, target="a")
    else:
        story.worker(2.1, 10, "a", "daemon_gone", rc=-107, detail="release reply header: connection closed")
    story.hold(20, "b", "R0", "EX", 2.05, 3.0)
    assert story.check().passed
    story.hold(30, "c", "R0", "EX", 1.5, 1.8)  # before the request to release: still an overlap
    assert rules(story.check()) == ["exclusive-overlap"]


def test_a_request_to_release_that_nobody_followed_is_still_a_dead_holder() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(2.0, 10, "a", "releasing", r="R0")
    story.harness(5.0, "client_kill", pid=10, why="fault")
    story.harness(5.01, "client_exit", pid=10, status=-9, target="a")
    story.harness(9.0, "final", r="R0", free=False)
    assert rules(story.check()) == ["dead-holder"]


def test_a_lease_gone_after_a_failed_release_was_told() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(2.0, 10, "a", "releasing", r="R0")
    story.worker(3.0, 10, "a", "released", r="R0", rc=-202)
    story.worker(3.0, 10, "a", "lost", r="R0")
    story.hold(20, "b", "R0", "EX", 2.5, 4.0)
    assert story.check().passed


def test_planted_lease_lost_untold_fails_but_told_passes() -> None:
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(2.0, 10, "a", "lost", r="R0")
    assert rules(story.check()) == ["lost"]
    story.harness(1.5, "fault", kind="storage_eio", target="a", id=7)
    story.harness(9.0, "heal", kind="storage_eio", target="a", id=7)
    assert story.check().passed
    # a fault on another host tells this one nothing
    story.records[-2]["target"] = story.records[-1]["target"] = "b"
    assert rules(story.check()) == ["lost"]


def test_history_file_round_trip_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    writer = History(path, "host-a")
    writer.record("held", r="R0", m="EX", lver=3)
    writer.record("releasing", r="R0")
    writer.close()
    with path.open("ab") as f:
        f.write(b'{"t": 1, "k": "held"')
    records = list(read_history(path))
    assert [r["k"] for r in records] == ["held", "releasing"]
    assert records[0]["h"] == "host-a" and records[0]["r"] == "R0" and records[0]["t"] <= records[1]["t"]


def test_an_orphaned_worker_holds_until_the_watchdog_reset_kills_it() -> None:
    """Watchdog mode: the daemon is SIGKILLed at 2, its worker goes on using R0 until the reset at 70."""
    story = Story()
    story.worker(1.0, 10, "a", "held", r="R0", m="EX", lver=1)
    story.worker(1.1, 10, "a", "devcount", r="R0", n=1)
    story.harness(2.0, "fault", kind="daemon_kill", target="a", id=1)
    story.worker(2.1, 10, "a", "orphaned", r="R0", m="EX")
    story.worker(69.9, 10, "a", "devcount", r="R0", n=2)
    story.harness(70.0, "host_down", target="a", why="watchdog reset", fire_at=69.9, workers=[10])
    story.harness(70.001, "client_kill", pid=10, why="watchdog reset")
    story.harness(70.5, "client_exit", pid=10, status=-9, target="a")
    story.harness(80.0, "heal", kind="daemon_kill", target="a", id=1)
    story.harness(99.0, "final", r="R0", free=True)
    story.hold(20, "b", "R0", "EX", 70.002, 71.0)
    report = story.check()
    assert report.passed, report.violations
    assert report.faults["watchdog reset"] == 1 and report.operations["orphaned"] == 1
    # Another host taking the lease before the reset is an overlap: the orphan was still using it.
    story.records = [r for r in story.records if r.get("p") != 20]
    story.hold(20, "b", "R0", "EX", 69.0, 71.0)
    assert rules(story.check()) == ["exclusive-overlap"]


def test_a_reset_that_never_came_is_a_violation() -> None:
    story = Story()
    story.harness(100.0, "violation", what="watchdog", target="a", detail="a: no watchdog reset 90.0 s after ...")
    assert rules(story.check()) == ["watchdog"]
