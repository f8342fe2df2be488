"""``leased torture`` in its CI size: two leased hosts and a real sanlock host, every fault kind, zero violations.

The run is the real command line: daemons, workers and the faultfs mounts
are real processes, faults are real signals and real failing I/O.  It lasts
a few minutes; docs/torture.md documents the long form.  The history it leaves is
then given a planted violation, which the checker must catch: a run that
passes only means something if the same checker fails on a broken history.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from daemons import wait_for
from once import once_per_run

from leased.torture.checker import check
from leased.torture.history import read_history
from leased.torture.hosts import ALL_FAULTS, Options, make_hosts
from leased.torture.local_daemons import leased_command, sanlock_binary
from leased.torture.wdmd import ShimUnavailable, build_shim, wdmd_binary

pytestmark = [pytest.mark.slow, pytest.mark.sanlock, pytest.mark.root]

RUN_SECONDS = 90


@pytest.fixture(scope="module")
def torture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CI-sized run for the whole test run (:func:`once.once_per_run`): four tests read it."""
    if os.geteuid() != 0:
        pytest.skip("the torture run needs root (daemons owning their sockets, FUSE mounts)")
    if sanlock_binary() is None:
        pytest.skip("sanlock is not installed")
    return once_per_run(tmp_path_factory, "torture", _run_torture)


def _run_torture(workdir: Path) -> None:
    argv = [
        *leased_command(),
        "torture",
        "--workdir",
        str(workdir),
        "--duration",
        str(RUN_SECONDS),
        "--fault-interval",
        "2",
        "--leased-hosts",
        "2",
        "--sanlock-hosts",
        "1",
        "--clients",
        "2",
        "--resources",
        "3",
        "--seed",
        "7",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_SECONDS + 600, stdin=subprocess.DEVNULL)
    (workdir / "torture.out").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (
        f"leased torture exited {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )


def test_ci_sized_run_passes_with_every_fault_kind(torture_run: Path) -> None:
    summary = json.loads((torture_run / "report.json").read_text())
    assert summary["passed"] is True and summary["violations"] == []
    assert (torture_run / "report.txt").read_text().endswith("RESULT: PASS\n")
    injected = summary["faults"]
    missing = [kind for kind in ALL_FAULTS if not injected.get(kind)]
    assert not missing, f"fault kinds never injected: {missing} ({injected})"
    assert injected.get("alloc failure at acquire", 0) + injected.get("alloc failure at release", 0) > 0
    operations = summary["operations"]
    assert operations["acquired EX"] > 0 and operations["acquired SH"] > 0 and operations["devcount"] > 0
    by_host = summary["acquired_by_host"]
    assert set(by_host) == {"leased-1", "leased-2", "sanlock-3"} and all(n > 0 for n in by_host.values()), by_host
    finals = [r for r in read_history(torture_run / "history.jsonl") if r["k"] == "final"]
    assert [r["r"] for r in finals] == ["R0", "R1", "R2"] and all(r["free"] for r in finals)


@pytest.mark.late  # the run itself is made by test_ci_sized_run_..., scheduled first
def test_the_same_history_with_a_planted_overlap_fails(torture_run: Path) -> None:
    """Another host 'holds' a lease exclusively inside a real exclusive interval of the run."""
    records = list(read_history(torture_run / "history.jsonl"))
    assert check(records).passed
    held = next(r for r in records if r["k"] == "held" and r["m"] == "EX")
    release = next(r for r in records if r["k"] == "releasing" and r["p"] == held["p"] and r["t"] > held["t"])
    middle = (held["t"] + release["t"]) / 2
    intruder = {"p": 999_999, "h": "intruder", "r": held["r"]}
    planted = [
        *records,
        {**intruder, "t": middle, "k": "held", "m": "EX", "lver": 1},
        {**intruder, "t": middle + 1e-6, "k": "releasing"},
        {**intruder, "t": middle + 2e-6, "k": "released", "rc": 0},
    ]
    report = check(planted)
    assert not report.passed
    assert [v.rule for v in report.violations] == ["exclusive-overlap"]
    assert "intruder" in report.violations[0].detail


@pytest.mark.late  # the run itself is made by test_ci_sized_run_..., scheduled first
def test_the_same_history_with_a_planted_devcount_repeat_fails(torture_run: Path) -> None:
    records = list(read_history(torture_run / "history.jsonl"))
    last = max((r for r in records if r["k"] == "devcount"), key=lambda r: r["t"])
    planted = [*records, {**last, "t": last["t"] + 1.0, "p": 999_999}]
    assert [v.rule for v in check(planted).violations] == ["devcount"]


@pytest.mark.late  # the run itself is made by test_ci_sized_run_..., scheduled first
def test_check_only_mode_reads_a_history(torture_run: Path) -> None:
    history = torture_run / "history.jsonl"
    proc = subprocess.run(
        [*leased_command(), "torture", "--check", str(history)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.endswith("RESULT: PASS\n"), proc.stdout + proc.stderr


def test_sigterm_ends_a_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """An operator stopping a long run gets every daemon, worker and FUSE mount cleaned up, and exit status 2."""
    if os.geteuid() != 0:
        pytest.skip("the torture run needs root")
    argv = [*leased_command(), "torture", "--workdir", str(tmp_path), "--duration", "600", "--sanlock-hosts", "0"]
    argv += ["--leased-hosts", "2", "--clients", "1", "--faults", "storage_eio,client_kill", "--seed", "3"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_for(lambda: b'"k":"held"' in _read(tmp_path / "history.jsonl"), 120, "a lease held in the run")
            ours = _processes_under(tmp_path)
            assert ours, "daemons and workers of the run are found by their paths"
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)  # a second one must not cut the clean-up short
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 2 and "interrupted by signal 15" in err, err
    assert _processes_under(tmp_path) == []
    with open("/proc/self/mounts") as mounts:
        assert str(tmp_path) not in mounts.read()


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _processes_under(workdir: Path) -> list[int]:
    """Live processes whose command line or environment names the work directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if str(workdir).encode() in text and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


WATCHDOG_SLACK = 2.0
"""How late after the modelled fire a reset may be acted on: the monitor reads the log every 0.2 s."""


@pytest.mark.slow
def test_watchdog_mode_resets_a_killed_daemons_host_before_others_may_take_its_leases(tmp_path: Path) -> None:
    """One daemon_kill, forced (--fault-count 1, mean 1 s before it): the real wdmd of that host stops petting,
    the modelled reset kills the workers that ran on, and that comes before host_dead_seconds; 0 violations."""
    if os.geteuid() != 0:
        pytest.skip("the torture run needs root")
    try:
        wdmd_binary()
        build_shim()
    except ShimUnavailable as exc:
        pytest.skip(str(exc))
    sanlock_hosts = "1" if sanlock_binary() is not None else "0"
    argv = [*leased_command(), "torture", "--watchdog", "--workdir", str(tmp_path), "--duration", "60"]
    argv += ["--leased-hosts", "2", "--sanlock-hosts", sanlock_hosts, "--clients", "2", "--resources", "6"]
    argv += ["--faults", "daemon_kill", "--fault-count", "1", "--fault-interval", "1", "--seed", "6"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["passed"] is True and summary["violations"] == []
    assert summary["faults"]["daemon_kill"] == 1 and summary["faults"]["watchdog reset"] == 1
    [reset] = summary["watchdog_resets"]
    dead = summary["host_dead_seconds"]
    assert dead == 8 * 3 + 60
    assert reset["cause"] == "daemon_kill"
    fire, acted, killed = reset["fire_at"], reset["acted_at"], reset["daemon_killed_at"]
    assert killed < fire <= acted <= fire + WATCHDOG_SLACK
    # The last renewal was before the kill, so others may take its leases host_dead_seconds after the kill at
    # the earliest: the reset comes first (wdmd stops petting once the expiry is within its 10 s test interval).
    assert fire - killed < dead

    records = list(read_history(tmp_path / "history.jsonl"))
    [fault] = [r for r in records if r["k"] == "fault"]
    [down] = [r for r in records if r["k"] == "host_down" and r.get("why") == "watchdog reset"]
    host = fault["target"]
    assert down["target"] == host and down["fire_at"] == fire
    # Every worker of the host alive at the SIGKILL of its daemon ran on until the reset, and no longer.
    started = {r["p"] for r in records if r["k"] == "start" and r["h"] == host and r["t"] < fault["t"]}
    exited = {r["pid"]: r["t"] for r in records if r["k"] == "client_exit"}
    alive = {pid for pid in started if exited.get(pid, math.inf) > fault["t"]}
    assert alive and alive == set(down["workers"])
    kills = {r["pid"]: r["t"] for r in records if r["k"] == "client_kill" and r.get("why") == "watchdog reset"}
    assert set(kills) == alive
    for pid in alive:
        assert fault["t"] < fire <= kills[pid] <= fire + WATCHDOG_SLACK
        assert kills[pid] <= exited[pid]
    # The last renewal the daemon reported to wdmd (whole seconds, as sent): others may take the leases
    # host_dead_seconds after it, and the reset came before that.
    lives = re.findall(
        r"test_live ci \d+ renewal (\d+) expire (\d+)", (tmp_path / host / "wd/boot-1/wdmd.log").read_text()
    )
    renewal = max(int(r) for r, _ in lives if r != "0")
    assert renewal <= killed and fire < renewal + dead
    heal = next(r for r in records if r["k"] == "heal" and r.get("id") == fault["id"])
    assert heal["t"] > kills[next(iter(alive))]  # the host came back after its reset
    finals = [r for r in records if r["k"] == "final"]
    assert [r["r"] for r in finals] == [f"R{i}" for i in range(6)] and all(r["free"] for r in finals)
    orphaned = sum(r["k"] == "orphaned" for r in records)
    print(
        f"watchdog run: {host} daemon SIGKILLed, last renewal {renewal - killed:+.1f} s, modelled reset "
        f"{fire - killed:.1f} s later (acted on after {acted - fire:.2f} s), host_dead_seconds {dead}: "
        f"{renewal + dead - fire:.1f} s to spare; "
        f"{len(alive)} workers killed by the reset, {orphaned} of them still using a lease"
    )


def test_the_shared_local_profile_gives_one_leased_host_many_shared_clients(tmp_path: Path) -> None:
    options = Options(tmp_path, profile="shared-local", clients=2)
    hosts = make_hosts(options, [], tmp_path / "leases")
    first, others = hosts[0], hosts[1:]
    assert first.kind == "leased" and options.shared_host(first)
    assert options.clients_on(first) == 4 and options.sh_fraction_on(first) == 1.0
    assert options.hold_max_on(first) > options.hold_max
    assert others and all(
        not options.shared_host(h) and options.clients_on(h) == 2 and options.sh_fraction_on(h) == 0.0 for h in others
    )
    mixed = Options(tmp_path)
    assert [mixed.sh_fraction_on(h) for h in hosts] == [mixed.sh_fraction] * len(hosts)
    assert Options(tmp_path, profile="bogus").problems() == ["--profile must be one of mixed, shared-local"]


@pytest.mark.slow
def test_shared_local_run_keeps_exclusion_while_local_clients_share_holds(tmp_path: Path) -> None:
    """Several clients of one host share holds while other hosts (real sanlock among them) take the same
    leases exclusive: the run passes, local shared holds really overlap, and the exclusive ones happen."""
    if os.geteuid() != 0:
        pytest.skip("the torture run needs root (FUSE)")
    sanlock_hosts = "1" if sanlock_binary() is not None else "0"
    argv = [*leased_command(), "torture", "--profile", "shared-local", "--workdir", str(tmp_path)]
    argv += ["--duration", "20", "--leased-hosts", "2", "--sanlock-hosts", sanlock_hosts, "--clients", "2"]
    argv += ["--resources", "2", "--faults", "client_kill,client_stop,storage_eio", "--seed", "3"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["passed"] is True and summary["violations"] == []
    records = list(read_history(tmp_path / "history.jsonl"))
    held = [r for r in records if r["k"] == "held"]
    assert {r["m"] for r in held if r["h"] == "leased-1"} == {"SH"}
    assert {r["m"] for r in held if r["h"] != "leased-1"} == {"EX"}
    # Two processes of the shared host held one resource at the same time, at least once.
    holding: dict[str, set[int]] = {}
    overlapped = False
    for record in records:
        if record.get("h") != "leased-1" or record["k"] not in ("held", "releasing"):
            continue
        owners = holding.setdefault(record["r"], set())
        if record["k"] == "held":
            owners.add(record["p"])
            overlapped = overlapped or len(owners) > 1
        else:
            owners.discard(record["p"])
    assert overlapped, "no two local clients ever shared a hold"
