"""leased's daemon against real sanlock 3.8.5, side by side, through python3-sanlock.

Both daemons run at once, each with its own run directory and lease file
(lockspace with io_timeout 1, one resource per client).  The same driver
(Debian's /usr/bin/python3 with the unmodified python3-sanlock binding) is
pointed at each in turn, operation by operation, so both see the same
machine load; each latency operation runs in ``--slices`` alternating turns
per daemon (the order flips every turn), since this machine's speed drifts
from minute to minute and one daemon must not get the faster minute.
Printed: the median latency of each operation per daemon over all its
turns, and
the ratio leased/sanlock (below 1.0 means leased is faster); for the
8-client run, throughput in acquire+release pairs per second and the ratio
sanlock/leased time.

Then the targets of issue 24, each a ratio leased/sanlock from this one run:
start to listening (exec to the first accepted connection, median of
``--starts`` fresh daemons each), register+close (median, from above) and
the mixed local load of ``bench/mixed_load.py`` (successful acquires a
second, ``--mixed`` seconds per daemon; 0 skips it).  Exits 1 when a figure
misses its target (start <= 10, register+close <= 1.0, mixed >= 1.0).

Usage: .venv/bin/python bench/daemon_vs_sanlock.py [--rounds N] [--clients 8] [--starts 9] [--mixed 20]
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from side_by_side import PYTHON3, Daemon, daemon_commands, daemon_env, start_daemon, stop_daemons

import leased

MiB = 1 << 20

DRIVER = r"""
import json, os, statistics, sys, time
from multiprocessing import Pool
import sanlock


op, path, rounds, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
LS = b"LS"

def disk(i):
    return [(path, (i + 1) * 1048576)]

def name(i):
    return b"R%d" % i

def pairs(i, n):
    fd = sanlock.register()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        sanlock.acquire(LS, name(i), disk(i), slkfd=fd)
        sanlock.release(LS, name(i), disk(i), slkfd=fd)
        samples.append(time.perf_counter() - t)
    os.close(fd)
    return samples

if op == "acquire_release":
    pairs(0, 5)
    samples = pairs(0, rounds)
elif op == "inquire":
    fd = sanlock.register()
    sanlock.acquire(LS, name(0), disk(0), slkfd=fd)
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        sanlock.inquire(slkfd=fd)
        samples.append(time.perf_counter() - t)
    sanlock.release(LS, name(0), disk(0), slkfd=fd)
    os.close(fd)
elif op == "register_close":
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fd = sanlock.register()
        sanlock.inquire(slkfd=fd)  # a round trip, so the registration has really been served
        os.close(fd)
        samples.append(time.perf_counter() - t)
elif op == "clients":
    with Pool(clients) as pool:
        t = time.perf_counter()
        results = pool.starmap(pairs, [(i, rounds) for i in range(clients)])
        wall = time.perf_counter() - t
    print(json.dumps({"wall": wall, "pairs": clients * rounds}))
    sys.exit(0)
print(json.dumps({"samples": samples}))
"""


def start_to_listening(argv: list[str], base: Path, starts: int) -> float:
    """Median seconds from exec to the first connection the daemon accepts, over ``starts`` fresh daemons.

    leased is byte-compiled first, as an installed daemon is: in a checkout
    whose .pyc files are missing or stale and not written (a fresh clone,
    ``PYTHONDONTWRITEBYTECODE``), every start would compile what it imports.
    """
    compileall.compile_dir(str(Path(leased.__file__).parent), quiet=1)
    times = []
    for attempt in range(starts):
        run_dir = base / f"start-{attempt}"
        run_dir.mkdir(parents=True)
        env = daemon_env(run_dir)
        path = str(run_dir / "sanlock.sock")
        began = time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while True:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    try:
                        probe.connect(path)
                        break
                    except OSError:
                        if proc.poll() is not None:
                            raise SystemExit(f"{argv[0]} exited with {proc.returncode} before listening") from None
                        if time.monotonic() - began > 30:
                            raise SystemExit(f"{argv[0]} did not listen in 30 s") from None
                time.sleep(0.0002)
            times.append(time.monotonic() - began)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return statistics.median(times)


def mixed_load_ratio(seconds: float) -> float:
    """bench/mixed_load.py's ratio leased/sanlock of successful acquires a second (its own output is shown)."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("mixed_load.py")), "--duration", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 600,
        check=False,
    )
    print(done.stdout, end="")
    print(done.stderr, end="", file=sys.stderr)
    found = re.search(r"ratio leased/sanlock, successful acquires/s: ([0-9.]+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"bench/mixed_load.py failed ({done.returncode})")
    return float(found.group(1))


def latency_samples(daemons: list[Daemon], op: str, rounds: int, clients: int, slices: int) -> dict[str, list[float]]:
    """Every latency sample of ``op`` per daemon, taken in ``slices`` alternating turns of ``rounds / slices``."""
    samples: dict[str, list[float]] = {daemon.label: [] for daemon in daemons}
    per_turn = max(1, rounds // max(1, slices))
    for turn in range(max(1, slices)):
        for daemon in daemons if turn % 2 == 0 else list(reversed(daemons)):
            argv = [PYTHON3, "-c", DRIVER, op, str(daemon.home / "leases"), str(per_turn), str(clients)]
            samples[daemon.label] += json.loads(run(argv, daemon.env).stdout)["samples"]
    return samples


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--starts", type=int, default=9, help="fresh daemons started per daemon for start-up")
    parser.add_argument("--mixed", type=float, default=20, help="seconds of mixed local load per daemon; 0: skip")
    parser.add_argument("--slices", type=int, default=4, help="alternating turns per daemon of each latency operation")
    args = parser.parse_args()
    commands = daemon_commands()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        daemons: list[Daemon] = []
        start = {
            label: start_to_listening(argv, base / "starts" / label, args.starts) for label, argv in commands.items()
        }
        try:
            for label, argv in commands.items():
                daemon = start_daemon(label, argv, base)
                daemons.append(daemon)
                env, lease_path = daemon.env, daemon.home / "leases"
                with lease_path.open("wb") as f:
                    f.truncate((args.clients + 2) * MiB)
                run(["sanlock", "direct", "init", "-s", f"LS:0:{lease_path}:0", "-o", "1"], env)
                for i in range(args.clients):
                    run(["sanlock", "direct", "init", "-r", f"LS:R{i}:{lease_path}:{(i + 1) * MiB}"], env)
                run(["sanlock", "client", "add_lockspace", "-s", f"LS:1:{lease_path}:0"], env)

            results: dict[str, dict[str, dict[str, float]]] = {daemon.label: {} for daemon in daemons}
            ops = [("acquire_release", args.rounds), ("inquire", args.rounds * 2), ("register_close", args.rounds)]
            for op, rounds in ops:
                samples = latency_samples(daemons, op, rounds, args.clients, args.slices)
                for label, values in samples.items():
                    results[label][op] = {"median": statistics.median(values), "mean": statistics.fmean(values)}
            for daemon in daemons:
                lease_path = daemon.home / "leases"
                rounds = max(10, args.rounds // 4)
                argv = [PYTHON3, "-c", DRIVER, "clients", str(lease_path), str(rounds), str(args.clients)]
                results[daemon.label]["clients"] = json.loads(run(argv, daemon.env).stdout)
        finally:
            stop_daemons(daemons)

    print(f"python3-sanlock against each daemon, {args.rounds} rounds, median latency (ms)")
    print(f"{'operation':<28} {'leased':>10} {'sanlock':>10} {'leased/sanlock':>15}")
    for op, _ in ops:
        ours, theirs = results["leased"][op]["median"], results["sanlock"][op]["median"]
        print(f"{op.replace('_', '+'):<28} {ours * 1000:>10.3f} {theirs * 1000:>10.3f} {ours / theirs:>15.2f}")
    ours_c, theirs_c = results["leased"]["clients"], results["sanlock"]["clients"]
    ours_rate, theirs_rate = ours_c["pairs"] / ours_c["wall"], theirs_c["pairs"] / theirs_c["wall"]
    print(
        f"{f'{args.clients} clients (pairs/s)':<28} {ours_rate:>10.1f} {theirs_rate:>10.1f} "
        f"{ours_c['wall'] / theirs_c['wall']:>15.2f}"
    )
    print(f"{'start to listening (ms)':<28} {start['leased'] * 1000:>10.1f} {start['sanlock'] * 1000:>10.1f}")

    register = results["leased"]["register_close"]["median"] / results["sanlock"]["register_close"]["median"]
    targets = [
        ("start to listening, median", start["leased"] / start["sanlock"], "<=", 10.0),
        ("register+close, median", register, "<=", 1.0),
    ]
    if args.mixed > 0:
        print()
        targets.append(("mixed local load, successful acquires/s", mixed_load_ratio(args.mixed), ">=", 1.0))
    print()
    print(f"{'issue 24 target (leased/sanlock)':<44} {'ratio':>8} {'target':>9}  verdict")
    missed = 0
    for name, ratio, sense, bound in targets:
        met = ratio <= bound if sense == "<=" else ratio >= bound
        missed += not met
        print(f"{name:<44} {ratio:>8.2f} {sense + ' ' + format(bound, 'g'):>9}  {'met' if met else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
