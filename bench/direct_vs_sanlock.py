"""Time ``leased direct`` against ``sanlock direct`` on the same kind of file, side by side.

Each operation runs REPEAT times per tool, alternating tools so both see the
same machine load; the median wall time of each is printed with the ratio
leased/sanlock (below 1.0 means leased is faster).  Both are whole command
invocations, so the figures include process start-up (Python's is the larger
part of leased's).  A second table times leased's library calls in-process,
which is what the daemon will pay per request.

Usage: .venv/bin/python bench/direct_vs_sanlock.py [--repeat N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from leased.torture.local_daemons import leased_command, sanlock_binary

MiB = 1 << 20


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    return elapsed


def make_file(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(8 * MiB)
    return path


def bench_cli(workdir: Path, repeat: int, sanlock: str) -> list[tuple[str, float, float]]:
    tools = {"leased": leased_command(), "sanlock": [sanlock]}
    files = {name: make_file(workdir / f"{name}.img") for name in tools}
    for name, cmd in tools.items():
        path = files[name]
        timed([*cmd, "direct", "init", "-s", f"LS:0:{path}:0", "-o", "1"])
        timed([*cmd, "direct", "init", "-r", f"LS:RES1:{path}:{MiB}"])
        timed([*cmd, "direct", "acquire_id", "-s", f"LS:1:{path}:0", "-o", "1", "-e", "bench"])

    def op_init(cmd: list[str], path: Path) -> float:
        return timed([*cmd, "direct", "init", "-r", f"LS:RES2:{path}:{2 * MiB}"])

    def op_dump(cmd: list[str], path: Path) -> float:
        return timed([*cmd, "direct", "dump", str(path), "-f", "2"])

    def op_acquire_release(cmd: list[str], path: Path) -> float:
        resource = f"LS:RES1:{path}:{MiB}"
        return timed([*cmd, "direct", "acquire", "-r", resource, "-i", "1", "-g", "1"]) + timed(
            [*cmd, "direct", "release", "-r", resource, "-i", "1", "-g", "1"]
        )

    def op_read_leader(cmd: list[str], path: Path) -> float:
        return timed([*cmd, "direct", "read_leader", "-r", f"LS:RES1:{path}:{MiB}"])

    ops: dict[str, Callable[[list[str], Path], float]] = {
        "init -r (1 MiB)": op_init,
        "dump -f 2": op_dump,
        "read_leader -r": op_read_leader,
        "acquire+release": op_acquire_release,
    }
    rows = []
    for label, op in ops.items():
        samples: dict[str, list[float]] = {name: [] for name in tools}
        for _ in range(repeat):
            for name, cmd in tools.items():
                samples[name].append(op(cmd, files[name]))
        rows.append((label, statistics.median(samples["leased"]), statistics.median(samples["sanlock"])))
    return rows


async def bench_library(workdir: Path, repeat: int) -> list[tuple[str, float]]:
    from leased import delta_lease, paxos_lease
    from leased.geometry import Geometry
    from leased.storage import FileStorage

    path = make_file(workdir / "lib.img")
    storage = FileStorage(str(path))
    geometry = Geometry(512, MiB)
    try:
        await delta_lease.init_lockspace(storage, 0, "LS", geometry, 1)
        await paxos_lease.init_resource(storage, MiB, "LS", "RES1", geometry)
        area = await paxos_lease.discover_resource(storage, MiB, "LS", "RES1", 1)
        acquire_release, init = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            lease = await paxos_lease.acquire(area, 1, 1, io_timeout=1)
            await paxos_lease.release(lease)
            acquire_release.append(time.perf_counter() - start)
            start = time.perf_counter()
            await paxos_lease.init_resource(storage, 2 * MiB, "LS", "RES2", geometry)
            init.append(time.perf_counter() - start)
        return [("acquire+release", statistics.median(acquire_release)), ("init -r", statistics.median(init))]
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the lease files (default: a temp dir)")
    args = parser.parse_args()
    sanlock = sanlock_binary()
    if sanlock is None:
        raise SystemExit("real sanlock not found: apt-get install sanlock")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        rows = bench_cli(workdir, args.repeat, sanlock)
        library = trio.run(bench_library, workdir, args.repeat)
    print(f"direct mode, whole commands, median of {args.repeat} (ms)")
    print(f"{'operation':<20} {'leased':>10} {'sanlock':>10} {'leased/sanlock':>15}")
    for label, ours, theirs in rows:
        print(f"{label:<20} {ours * 1000:>10.1f} {theirs * 1000:>10.1f} {ours / theirs:>15.2f}")
    print()
    print("leased library calls in-process, no process start-up (ms)")
    for label, value in library:
        print(f"{label:<20} {value * 1000:>10.2f}")


if __name__ == "__main__":
    main()
