"""Two hosts waiting for one lease with ``acquire(..., wait=)``: waits, retries, and who wins (issue 15).

Two leased daemons run as hosts 1 and 2 of lockspace ``LS`` on one lease
file (io_timeout 1, the lockspace and one resource ``R`` written through
host 1's daemon).  For ``--duration`` seconds three processes compete for
``R``, each registered with its daemon through :class:`leased.client.Client`:

* a **holder** that cycles the lease: it takes it (``wait=``), holds it
  ``--hold`` seconds, releases it, pauses ``--gap`` seconds, and again; it
  registers with both daemons and alternates hosts each cycle, so neither
  host's waiter always meets a local holder (-17) and the other a remote one
  (-243);
* one **waiter per host**: ``acquire(..., wait=--wait)``, hold ``--use``
  seconds, release, pause ``--think`` seconds, and again.

Each waiter records, per acquisition, how long it waited and how many
attempts it sent (``lease.waited``, ``lease.attempts``), and how many waits
ran out (:class:`~leased.client.WaitExpired`; a waiter's last wait is cut
to the end of the run, and is not counted when it runs out there).  Printed: per host and for
both, the waits (median, p90, max), the retries (attempts - 1: median, p90,
max, total), the acquisitions each host won and its share, and the holder's
cycles.  The backoff is the client's default (:class:`~leased.client.Backoff`:
jittered, 50-100 ms first, capped at 1-2 s).

Usage: PYTHONPATH=. .venv/bin/python bench/acquire_wait.py [--duration 60] [--hold 0.5] [--gap 0.5]
       [--use 0.1] [--think 0.2] [--wait 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leased.client import Client, SanlockError, WaitExpired
from leased.torture.local_daemons import leased_daemon_argv

MiB = 1 << 20
LS = b"LS"
RESOURCE = b"R"


# --------------------------------------------------------------------------
# The competing processes (this script run with --role)


def holder(run_dirs: Sequence[str], lease_path: str, args: argparse.Namespace) -> dict[str, object]:
    """Take, hold, release, pause, alternating hosts, until the end time."""
    disks = [(lease_path, MiB)]
    registrations = [Client(run_dir, timeout=30).register() for run_dir in run_dirs]
    cycles, expired = 0, 0
    try:
        while time.time() < args.end:
            me = registrations[cycles % len(registrations)]
            try:
                me.acquire(LS, RESOURCE, disks, wait=args.wait)
            except WaitExpired:
                expired += 1
                continue
            time.sleep(args.hold)
            me.release(LS, RESOURCE)
            cycles += 1
            time.sleep(args.gap)
    finally:
        for me in registrations:
            me.close()
    return {"cycles": cycles, "expired": expired}


def waiter(run_dir: str, lease_path: str, args: argparse.Namespace) -> dict[str, object]:
    """Acquire with a deadline, use, release, think, until the end time; every wait recorded."""
    disks = [(lease_path, MiB)]
    waits: list[float] = []
    attempts: list[int] = []
    expired: list[tuple[float, int]] = []
    errors: dict[int, int] = {}
    with Client(run_dir, timeout=30).register() as me:
        while time.time() < args.end:
            try:
                lease = me.acquire(LS, RESOURCE, disks, wait=min(args.wait, max(args.end - time.time(), 0.0)))
            except WaitExpired as exc:
                if time.time() < args.end:  # not the last wait, cut short by the end of the run
                    expired.append((exc.waited, exc.attempts))
                continue
            except SanlockError as exc:
                errors[exc.rc] = errors.get(exc.rc, 0) + 1
                time.sleep(args.think)
                continue
            waits.append(lease.waited)
            attempts.append(lease.attempts)
            time.sleep(args.use)
            me.release(LS, RESOURCE)
            time.sleep(args.think)
    return {"waits": waits, "attempts": attempts, "expired": expired, "errors": errors}


# --------------------------------------------------------------------------
# Daemons and set-up


def start_daemon(base: Path, host: int) -> tuple[subprocess.Popen[bytes], Path]:
    run_dir = base / f"host{host}" / "run"
    run_dir.mkdir(parents=True)
    env = {**os.environ, "SANLOCK_RUN_DIR": str(run_dir)}
    with (base / f"host{host}" / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(
            leased_daemon_argv(f"bench-host-{host}"), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"host {host}'s daemon exited: {proc.returncode}")
        try:
            Client(run_dir, timeout=2).version()
        except (SanlockError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"host {host}'s daemon did not listen in {run_dir}") from None
            time.sleep(0.05)
        else:
            return proc, run_dir


def stop_daemon(proc: subprocess.Popen[bytes], run_dir: Path) -> None:
    with suppress(SanlockError, OSError):
        Client(run_dir, timeout=20).shutdown(force=True, wait=True)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------
# Figures


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


@dataclass
class HostFigures:
    waits: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    expired: list[tuple[float, int]] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostFigures:
        return cls(
            [float(w) for w in data["waits"]],
            [int(n) for n in data["attempts"]],
            [(float(w), int(n)) for w, n in data["expired"]],
            {int(rc): int(n) for rc, n in data["errors"].items()},
        )

    def line(self, label: str, total_wins: int) -> str:
        retries = [n - 1 for n in self.attempts]
        share = 100 * len(self.waits) / total_wins if total_wins else 0.0
        median = statistics.median(self.waits) if self.waits else 0.0
        return (
            f"{label}: won {len(self.waits)} ({share:.1f}%); "
            f"wait median {median:.3f} s, p90 {percentile(self.waits, 0.9):.3f} s, "
            f"max {max(self.waits, default=0.0):.3f} s; "
            f"retries median {statistics.median(retries) if retries else 0:g}, "
            f"p90 {percentile(retries, 0.9):g}, max {max(retries, default=0)}, total {sum(retries)}; "
            f"waits run out {len(self.expired)}" + (f"; errors {self.errors}" if self.errors else "")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of competition")
    parser.add_argument("--hold", type=float, default=0.5, help="the holder's hold, seconds")
    parser.add_argument("--gap", type=float, default=0.5, help="the holder's pause between cycles, seconds")
    parser.add_argument("--use", type=float, default=0.1, help="a waiter's hold once it has the lease, seconds")
    parser.add_argument("--think", type=float, default=0.2, help="a waiter's pause after releasing, seconds")
    parser.add_argument("--wait", type=float, default=30.0, help="the wait= of every acquire, seconds")
    parser.add_argument("--keep", type=Path, help="keep the daemon logs here")
    parser.add_argument("--role", choices=("holder", "waiter"), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--lease-path", help=argparse.SUPPRESS)
    parser.add_argument("--end", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "holder":
        print(json.dumps(holder(args.run_dir, args.lease_path, args)))
        return 0
    if args.role == "waiter":
        print(json.dumps(waiter(args.run_dir[0], args.lease_path, args)))
        return 0

    base = Path(tempfile.mkdtemp(prefix="acquire-wait-"))
    daemons: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        daemons = [start_daemon(base, host) for host in (1, 2)]
        lease_path = base / "leases"
        with lease_path.open("wb") as f:
            f.truncate(2 * MiB)
        first = Client(daemons[0][1], timeout=60)
        first.write_lockspace(LS, lease_path, 0, io_timeout=1)
        first.write_resource(LS, RESOURCE, [(str(lease_path), MiB)])
        for host, (_, run_dir) in enumerate(daemons, start=1):
            Client(run_dir, timeout=60).add_lockspace(LS, host, lease_path, 0, io_timeout=1, wait=False)
        for host, (_, run_dir) in enumerate(daemons, start=1):
            if Client(run_dir, timeout=60).inq_lockspace(LS, host, lease_path, 0, wait=True) is not True:
                raise SystemExit(f"host {host} did not join {LS!r}")

        end = time.time() + args.duration
        common = [
            *("--lease-path", str(lease_path), "--end", repr(end), "--wait", str(args.wait)),
            *("--hold", str(args.hold), "--gap", str(args.gap), "--use", str(args.use), "--think", str(args.think)),
        ]
        me = [sys.executable, __file__]
        runs = {
            "holder": [*me, "--role", "holder", "--run-dir", str(daemons[0][1]), "--run-dir", str(daemons[1][1])],
            **{f"host {host}": [*me, "--role", "waiter", "--run-dir", str(daemons[host - 1][1])] for host in (1, 2)},
        }
        procs = {label: subprocess.Popen([*argv, *common], stdout=subprocess.PIPE) for label, argv in runs.items()}
        outputs: dict[str, dict[str, Any]] = {}
        for label, proc in procs.items():
            out, _ = proc.communicate(timeout=args.duration + args.wait + 120)
            if proc.returncode != 0:
                raise SystemExit(f"{label} failed ({proc.returncode})")
            outputs[label] = json.loads(out)
    finally:
        for proc, run_dir in daemons:
            stop_daemon(proc, run_dir)
        if args.keep:
            shutil.copytree(base, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("leases", "run"))
        shutil.rmtree(base, ignore_errors=True)

    hosts = {label: HostFigures.from_json(outputs[label]) for label in ("host 1", "host 2")}
    both = HostFigures(
        waits=[w for fig in hosts.values() for w in fig.waits],
        attempts=[n for fig in hosts.values() for n in fig.attempts],
        expired=[e for fig in hosts.values() for e in fig.expired],
    )
    wins = len(both.waits)
    print(
        f"acquire wait: 2 hosts of one lockspace, {args.duration:g} s; holder cycles {args.hold:g} s held / "
        f"{args.gap:g} s free ({outputs['holder']['cycles']} cycles); waiters use {args.use:g} s, think "
        f"{args.think:g} s, wait={args.wait:g}"
    )
    for label, fig in hosts.items():
        print(fig.line(label, wins))
    print(both.line("both", wins))
    counts = [len(fig.waits) for fig in hosts.values()]
    jain = sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts)) if any(counts) else 0.0
    print(f"fairness: host 1 / host 2 acquisitions {counts[0]} / {counts[1]}, Jain's index {jain:.3f} (1 = even)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
