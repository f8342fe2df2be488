"""The fuzzer's CI-sized run: hostile clients for 30 s against a real daemon while a victim holds leases.

:mod:`leased.torture.fuzz` does the work (its docstring says what it sends
and checks); this test runs it against a fresh leased daemon and asserts
the verdict, that the run did what it claims (connections, registered
clients, peers vanishing and killed), that fds and RSS stayed bounded, and
that no input made a handler fail inside leased (an internal error is a
bug even when its boundary contained it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leased.torture.fuzz import FD_SLACK, FuzzOptions, run_fuzz

pytestmark = pytest.mark.slow

WORKERS = 3
MAX_OPEN = 24


def test_hostile_clients_for_30_seconds_lose_no_lease(tmp_path: Path) -> None:
    options = FuzzOptions(
        workdir=tmp_path, duration=30, seed=10, workers=WORKERS, max_open=MAX_OPEN, kill_interval=2, io_timeout=1
    )
    report = run_fuzz(options)
    text = report.text()
    assert report.passed, text
    assert report.daemon_crashes == 0 and report.leases_lost == 0, text
    assert report.checks >= 10, text
    # what the run claims to have done (counts a slow machine still reaches in 30 s)
    assert report.sessions > 100 and report.registered > 10 and report.vanished > 0, text
    assert report.workers_killed >= 5, text
    # bounds: every open connection costs the daemon at most a socket, a pidfd and an event channel
    assert report.fds_max <= report.fds_before + WORKERS * MAX_OPEN * 3 + 32, text
    assert report.fds_after <= report.fds_before + FD_SLACK, text
    assert report.rss_max_kib <= report.rss_before_kib + 128 * 1024, text
    log = (tmp_path / "leased-daemon.log").read_text(errors="replace")
    assert "internal error" not in log and "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
