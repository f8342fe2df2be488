"""Many local processes sharing resources, against leased and real sanlock 3.8.5 (issue 24).

A load shaped like sanlock's own load generator: ``--processes`` processes
(Debian's /usr/bin/python3 with the unmodified python3-sanlock binding), each
registered with ``sanlock.register()``, loop until ``--duration`` runs out:

* pick one or two resources at random among ``--lockspaces`` lockspaces of
  ``--resources`` resources each, and acquire each of them shared or
  exclusive at random (one ``sanlock.acquire`` per resource);
* check with ``sanlock.inquire()`` that the daemon says this process holds
  exactly what it believes it holds, and in the same modes;
* sometimes convert one held lease to the other mode (python3-sanlock 3.8.5
  has no ``convert``: libsanlock's ``sanlock_convert`` through ctypes, on the
  registered connection), and check again;
* release what it holds, and check that nothing is left (a release that
  fails on disk still ends the client's hold, in sanlock as in leased).

Both daemons run at once, each with its own run directory and lease file
(the lockspaces at io_timeout 1, laid out by python3-sanlock's
``write_lockspace``/``write_resource``), started as
``bench/daemon_vs_sanlock.py`` starts them; the load runs against one daemon,
then the other, in turns (``--slices``, 4 of ``duration / slices`` seconds
each by default, each daemon first in every other round), so each sees the
same machine even when the disk's speed drifts from one minute to the next
(this machine's virtual disk does: one daemon's figure moved by a third
between runs minutes apart).  Printed per daemon:
successful acquires a second, the count of each result code of acquire,
convert and release, where the lease file sits on a block device the
device's read rate during the daemon's turns and the bytes it read per
successful acquire, and the ratio leased/sanlock of successful acquires a
second.  Both daemons make the same I/Os per acquire, three reads of the
whole 1 MiB area among them, so on a slow device its read bandwidth bounds
both alike: the disk line shows when it does.  Exits 1 when any process found that inquire disagrees with what it
believes it holds (each disagreement is printed); a failed set-up or driver
stops it with a message.

Usage: PYTHONPATH=. .venv/bin/python bench/mixed_load.py [--duration 20] [--processes 16]
       [--lockspaces 4] [--resources 16] [--slices 4] [--only leased|sanlock] [--keep DIR]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from side_by_side import PYTHON3, Daemon, daemon_commands, start_daemon, stop_daemons

from leased.errors import ResultCode

MiB = 1 << 20

SETUP = r"""
import sys, time
import sanlock

path, lockspaces, resources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20
for j in range(lockspaces):
    ls = b"LS%d" % j
    sanlock.write_lockspace(ls, path, j * MiB, iotimeout=1)
    for i in range(resources):
        sanlock.write_resource(ls, b"R%d" % i, [(path, (lockspaces + j * resources + i) * MiB)])
for j in range(lockspaces):
    sanlock.add_lockspace(b"LS%d" % j, 1, path, j * MiB, iotimeout=1, wait=False)
deadline = time.monotonic() + 60
while not all(sanlock.inq_lockspace(b"LS%d" % j, 1, path, j * MiB) for j in range(lockspaces)):
    if time.monotonic() > deadline:
        sys.exit("lockspaces not joined in 60 s")
    time.sleep(0.1)
"""

LOAD = r"""
import ctypes, json, os, random, sys, time
from multiprocessing import Pool
import sanlock

path, lockspaces, resources, processes, duration = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
)
MiB = 1 << 20
RES_SHARED = 4


class SanlkResource(ctypes.Structure):
    # struct sanlk_resource without its disks: all that sanlock_convert sends
    _fields_ = [
        ("lockspace_name", ctypes.c_char * 48),
        ("name", ctypes.c_char * 48),
        ("lver", ctypes.c_uint64),
        ("data64", ctypes.c_uint64),
        ("data32", ctypes.c_uint32),
        ("unused", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("num_disks", ctypes.c_uint32),
    ]


libsanlock = ctypes.CDLL("libsanlock.so.1")
libsanlock.sanlock_convert.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.POINTER(SanlkResource)]


def disks(key):
    j, i = key
    return [(path, (lockspaces + j * resources + i) * MiB)]


def names(key):
    return b"LS%d" % key[0], b"R%d" % key[1]


def code(exc):
    # python3-sanlock: errno -rc for -200 < rc < 0, sanlock's own codes as they are
    return -exc.errno if exc.errno > 0 else exc.errno


def convert(fd, key, shared):
    ls, name = names(key)
    res = SanlkResource(ls, name, 0, 0, 0, 0, RES_SHARED if shared else 0, 1)
    return libsanlock.sanlock_convert(fd, -1, 0, ctypes.byref(res))


def worker(seed):
    rng = random.Random(seed)
    fd = sanlock.register()
    acquire, conv, release = {}, {}, {}
    held = {}  # key -> shared
    disagreements = []
    acquired = 0

    def count(table, rc):
        table[str(rc)] = table.get(str(rc), 0) + 1

    def check(when):
        said = {}
        for lease in sanlock.inquire(slkfd=fd):
            ls, name = lease["lockspace"].decode(), lease["resource"].decode()
            said[(int(ls[2:]), int(name[1:]))] = bool(lease["flags"] & RES_SHARED)
        if said != held:
            believed = sorted((k, "SH" if v else "EX") for k, v in held.items())
            told = sorted((k, "SH" if v else "EX") for k, v in said.items())
            disagreements.append(f"pid {os.getpid()} {when}: believes {believed}, inquire says {told}")
            held.clear()
            held.update(said)

    end = time.monotonic() + duration
    while time.monotonic() < end:
        keys = rng.sample([(j, i) for j in range(lockspaces) for i in range(resources)], rng.choice((1, 2)))
        for key in keys:
            shared = rng.random() < 0.5
            ls, name = names(key)
            try:
                sanlock.acquire(ls, name, disks(key), slkfd=fd, shared=shared)
            except sanlock.SanlockException as exc:
                count(acquire, code(exc))
            else:
                count(acquire, 0)
                acquired += 1
                held[key] = shared
        check("after acquire")
        if held and rng.random() < 0.25:
            key = rng.choice(sorted(held))
            rc = convert(fd, key, not held[key])
            count(conv, rc)
            if rc == 0:
                held[key] = not held[key]
            check("after convert")
        for key in sorted(held):
            ls, name = names(key)
            try:
                sanlock.release(ls, name, disks(key), slkfd=fd)
            except sanlock.SanlockException as exc:
                count(release, code(exc))
            else:
                count(release, 0)
            # sanlock lets go of the client's token before its disk work: a failed release
            # (its disk write refused) still ends this process's hold
            del held[key]
        check("after release")
    os.close(fd)
    return dict(acquire=acquire, convert=conv, release=release, acquired=acquired, disagreements=disagreements)


with Pool(processes) as pool:
    start = time.monotonic()
    results = pool.map(worker, [os.getpid() * 1000 + n for n in range(processes)], chunksize=1)
    wall = time.monotonic() - start
print(json.dumps({"wall": wall, "results": results}))
"""


@dataclass
class Figures:
    """One daemon's outcome under the load."""

    wall: float = 0.0
    acquired: int = 0
    acquire: Counter[int] = field(default_factory=Counter)
    convert: Counter[int] = field(default_factory=Counter)
    release: Counter[int] = field(default_factory=Counter)
    disagreements: list[str] = field(default_factory=list)
    read_bytes: int | None = 0
    """Bytes the lease file's block device read during this daemon's turns; None where it cannot be told."""

    @property
    def rate(self) -> float:
        return self.acquired / self.wall if self.wall else 0.0

    def disk_figures(self) -> str | None:
        """The device's read rate and the bytes read per successful acquire, or None without device counts."""
        if self.read_bytes is None or not self.wall or not self.acquired:
            return None
        per_acquire = self.read_bytes / self.acquired / MiB
        return f"{self.read_bytes / self.wall / MiB:.0f} MiB/s read from the device, {per_acquire:.2f} MiB per success"

    def add(self, output: dict[str, Any]) -> None:
        """Add one run of the driver (one slice of the load)."""
        self.wall += output["wall"]
        for result in output["results"]:
            self.acquired += result["acquired"]
            for kind in ("acquire", "convert", "release"):
                getattr(self, kind).update({int(rc): n for rc, n in result[kind].items()})
            self.disagreements += result["disagreements"]


def device_sectors_read(path: Path) -> int | None:
    """Sectors read so far by the block device under ``path`` (/sys/dev/block/M:N/stat), or None (no such device:
    tmpfs, overlay, ...).

    Why: both daemons make the same I/Os per acquire (3 reads of the whole
    1 MiB area and 3 sector writes, on-disk spec 7.7), so under this load
    the device's read bandwidth can be what bounds both; its read rate and
    the bytes per successful acquire show when it is.
    """
    dev = path.stat().st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    try:
        return int(stat.read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return None


def code_name(rc: int) -> str:
    if rc == 0:
        return "0"
    try:
        return f"{rc} {ResultCode(rc).name}"
    except ValueError:
        return f"{rc} {errno.errorcode.get(-rc, '?')}"


def counts(counter: Counter[int]) -> str:
    total = sum(counter.values())
    if not total:
        return "none"
    parts = [f"{code_name(rc)}: {n} ({100 * n / total:.1f}%)" for rc, n in sorted(counter.items(), reverse=True)]
    return f"{total} = " + ", ".join(parts)


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per daemon")
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--lockspaces", type=int, default=4)
    parser.add_argument("--resources", type=int, default=16, help="resources per lockspace")
    parser.add_argument(
        "--slices", type=int, default=4, help="the duration cut in this many turns per daemon, taken alternately"
    )
    parser.add_argument("--only", choices=("leased", "sanlock"), help="run one daemon only")
    parser.add_argument("--keep", type=Path, help="keep run dirs and daemon logs here (log_dump of each too)")
    args = parser.parse_args()
    commands = daemon_commands()
    if args.only:
        commands = {args.only: commands[args.only]}
    size = (args.lockspaces * (args.resources + 1) + 1) * MiB
    base = Path(tempfile.mkdtemp(prefix="mixed-load-"))
    daemons: list[Daemon] = []
    figures: dict[str, Figures] = {}
    if args.duration <= 0 or args.slices < 1:
        parser.error("--duration must be positive and --slices at least 1")
    try:
        for label, argv in commands.items():
            daemons.append(start_daemon(label, argv, base))
            with (base / label / "leases").open("wb") as f:
                f.truncate(size)
        for daemon in daemons:
            lease_path = daemon.home / "leases"
            run([PYTHON3, "-c", SETUP, str(lease_path), str(args.lockspaces), str(args.resources)], daemon.env, 120)
        figures = {daemon.label: Figures() for daemon in daemons}
        for slice_ in range(args.slices):
            # Alternate which daemon goes first: a disk that slows or speeds up over minutes
            # (this machine's does) then weighs on both alike.
            for daemon in daemons if slice_ % 2 == 0 else daemons[::-1]:
                driver = [
                    PYTHON3,
                    "-c",
                    LOAD,
                    str(daemon.home / "leases"),
                    str(args.lockspaces),
                    str(args.resources),
                    str(args.processes),
                    str(args.duration / args.slices),
                ]
                before = device_sectors_read(daemon.home / "leases")
                out = run(driver, daemon.env, args.duration * 4 + 120)
                after = device_sectors_read(daemon.home / "leases")
                fig = figures[daemon.label]
                fig.add(json.loads(out.stdout))
                if before is None or after is None or fig.read_bytes is None:
                    fig.read_bytes = None
                else:
                    fig.read_bytes += (after - before) * 512
        for daemon in daemons:
            label, env = daemon.label, daemon.env
            if args.keep:
                dump = subprocess.run(["sanlock", "client", "log_dump"], env=env, capture_output=True, check=False)
                (base / label / "log_dump").write_bytes(dump.stdout)
    finally:
        stop_daemons(daemons)
        if args.keep:
            shutil.copytree(base, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("leases", "run"))
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"mixed local load: {args.processes} processes, {args.lockspaces} lockspaces x {args.resources} resources, "
        f"{args.duration:g} s per daemon in {args.slices} turns"
    )
    for label, fig in figures.items():
        print(f"{label}: {fig.rate:.1f} successful acquires/s ({fig.acquired} in {fig.wall:.1f} s)")
        disk = fig.disk_figures()
        if disk:
            print(f"  disk: {disk}")
        print(f"  acquire: {counts(fig.acquire)}")
        print(f"  convert: {counts(fig.convert)}")
        print(f"  release: {counts(fig.release)}")
    if "leased" in figures and "sanlock" in figures and figures["sanlock"].rate:
        print(f"ratio leased/sanlock, successful acquires/s: {figures['leased'].rate / figures['sanlock'].rate:.2f}")
    disagreements = [f"{label}: {line}" for label, fig in figures.items() for line in fig.disagreements]
    for line in disagreements:
        print(f"DISAGREEMENT {line}", file=sys.stderr)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
