"""``leased torture``: the fault-injection run from the command line, for minutes or for hours."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from leased.faultpoints import FaultPointError
from leased.faultpoints import parse as parse_faultpoints
from leased.torture.checker import check
from leased.torture.history import read_history

DESCRIPTION = """\
Run several lease daemons on one lockspace (leased, plus real sanlock if asked
for), keep client processes acquiring and releasing leases on every host, inject
faults (client and daemon SIGKILL/SIGSTOP, storage EIO and stalls through a FUSE
filesystem, unserialized and truncated messages, allocation failures), then
check the shared history: no two holders of an exclusive lease overlap, no
SH/EX overlap, no devcount violation, every lease of a dead process released,
no lease lost untold.  Prints a report and exits 0 on PASS, 1 on FAIL, 2 when
the run could not be made.  Needs root (daemons, FUSE).  The lease file (or
--device) is overwritten.  The wire fuzzer is another mode: leased torture
--fuzz --help.
"""


def _faults(text: str) -> tuple[str, ...]:
    from leased.torture.hosts import ALL_FAULTS

    if text == "all":
        return ALL_FAULTS
    if text == "none":
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind {', '.join(unknown)} (known: {', '.join(ALL_FAULTS)})")
    return kinds


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    from leased.torture.hosts import PROFILES

    p = argparse.ArgumentParser(prog="leased torture", description=DESCRIPTION)
    p.add_argument("--workdir", type=Path, required=True, help="directory for run dirs, logs, history and report")
    p.add_argument("--duration", type=_positive, default=120, help="seconds of faults before the run ends (120)")
    p.add_argument("--leased-hosts", type=int, default=2, help="leased daemons (2)")
    p.add_argument("--sanlock-hosts", type=int, default=1, help="real sanlock daemons, 0 for none (1)")
    p.add_argument("--clients", type=int, default=2, help="worker processes per host (2)")
    p.add_argument("--resources", type=int, default=4, help="resource leases R0..Rn-1 (4)")
    p.add_argument(
        "--io-timeout",
        type=int,
        default=None,
        help="io_timeout N of the lockspace, seconds (1; 3 with --watchdog, which refuses less than 2)",
    )
    p.add_argument(
        "--watchdog-fire-timeout",
        type=int,
        default=None,
        help="W of the leased hosts; 60 (sanlock's fixed value) when sanlock hosts take part or with --watchdog "
        "(wdmd's), else 5",
    )
    p.add_argument("--fault-interval", type=_positive, default=3.0, help="mean seconds between faults (3)")
    p.add_argument(
        "--fault-count",
        type=int,
        default=0,
        help="inject this many faults, then end the fault phase once they are over (0: no limit, the default)",
    )
    p.add_argument(
        "--watchdog",
        action="store_true",
        help="every host runs its own real wdmd (under the LD_PRELOAD shim) and its daemon -w 1; a daemon_kill "
        "kills only the daemon, and the host is reset (workers, daemon, wdmd killed, then booted anew) when the "
        "model of the kernel timer says the watchdog fired; needs gcc and wdmd (sanlock package)",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        default="mixed",
        help="mixed: workers take leases shared or exclusive at random (the default); shared-local: the first "
        "leased host runs twice the workers, all shared, so several local processes share each hold, while "
        "the other hosts' workers take the same leases exclusive",
    )
    p.add_argument("--faults", type=_faults, default="all", help="comma-separated fault kinds, 'all' or 'none'")
    p.add_argument(
        "--device",
        default=None,
        help="lease storage to use instead of a file in --workdir: a file or block device, OVERWRITTEN "
        "(storage faults need the file in --workdir, behind FUSE)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (printed in the report)")
    p.add_argument(
        "--faultpoints",
        default=None,
        help="allocation failures armed in the leased daemons, e.g. 'acquire.prepare=0.02,release.prepare@3' "
        "('' for none; default: every point at 1-2%%)",
    )
    p.add_argument("--check", type=Path, default=None, help="only check an existing history file and report (alone)")
    return p


FUZZ_DESCRIPTION = """\
Hostile and broken clients against one daemon while a victim holds leases:
worker processes (as nobody when run as root) send mutated and random wire
messages over many connections, register and acquire, vanish mid-message,
flood, and are SIGKILLed with everything open.  The run checks the daemon
stays up and answers, the victim's two leases stay held (by its inquire and
on disk), and fds and RSS stay bounded.  Starts its own daemon (leased or
sanlock) in --workdir, or fuzzes the one listening in --run-dir, which gains
the lockspaces VICTIM and FUZZ on files in --workdir.  Exit 0 PASS, 1 FAIL,
2 when the run could not be made.
"""


def fuzz_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leased torture --fuzz", description=FUZZ_DESCRIPTION)
    p.add_argument("--fuzz", action="store_true", help="this mode")
    p.add_argument("--workdir", type=Path, required=True, help="lease files, logs and fuzz-report.{txt,json}")
    p.add_argument("--duration", type=_positive, default=60, help="seconds of fuzzing (60)")
    p.add_argument("--daemon", choices=("leased", "sanlock"), default="leased", help="daemon to start (leased)")
    p.add_argument("--run-dir", type=Path, default=None, help="fuzz the daemon already listening in this directory")
    p.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    p.add_argument("--max-open", type=int, default=24, help="connections each worker keeps open (24)")
    p.add_argument("--kill-interval", type=_positive, default=2.0, help="seconds between worker SIGKILLs (2)")
    p.add_argument("--io-timeout", type=int, default=1, help="io_timeout of the two lockspaces (1)")
    p.add_argument("--host-id", type=int, default=1, help="host id to join them with (1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the message streams (1)")
    return p


def run_fuzz_command(argv: Sequence[str]) -> int:
    p = fuzz_parser()
    try:
        opts = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if opts.workers < 1 or opts.max_open < 1:
        p.error("--workers and --max-open must be positive")
    from leased.torture.fuzz import FuzzError, FuzzOptions, run_fuzz

    options = FuzzOptions(
        workdir=opts.workdir.resolve(),
        duration=opts.duration,
        seed=opts.seed,
        workers=opts.workers,
        max_open=opts.max_open,
        kill_interval=opts.kill_interval,
        io_timeout=opts.io_timeout,
        host_id=opts.host_id,
        daemon=opts.daemon,
        run_dir=opts.run_dir.resolve() if opts.run_dir else None,
    )
    try:
        report = run_fuzz(options)
    except FuzzError as exc:
        sys.stderr.write(f"leased torture --fuzz: {exc}\n")
        return 2
    sys.stdout.write(report.text())
    return 0 if report.passed else 1


def run_torture_command(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if "--fuzz" in argv:
        return run_fuzz_command(argv)
    if "--check" in argv:
        report = check(read_history(_check_only(argv).check))
        sys.stdout.write(report.text())
        return 0 if report.passed else 1
    p = parser()
    try:
        opts = p.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return int(exc.code or 0)
    from leased.torture.harness import run_torture
    from leased.torture.hosts import DEFAULT_FAULTPOINTS, Options, TortureError

    if opts.leased_hosts < 1 and opts.sanlock_hosts < 1:
        p.error("at least one host is needed")
    if opts.leased_hosts < 0 or opts.sanlock_hosts < 0 or opts.clients < 1 or opts.resources < 1:
        p.error("host, client and resource counts must be positive")
    if opts.faultpoints:
        try:
            parse_faultpoints(opts.faultpoints)
        except FaultPointError as exc:
            p.error(f"--faultpoints: {exc}")
    options = Options(
        workdir=opts.workdir.resolve(),
        duration=opts.duration,
        leased_hosts=opts.leased_hosts,
        sanlock_hosts=opts.sanlock_hosts,
        clients=opts.clients,
        resources=opts.resources,
        io_timeout=opts.io_timeout if opts.io_timeout is not None else (3 if opts.watchdog else 1),
        watchdog_fire_timeout=opts.watchdog_fire_timeout,
        fault_interval=opts.fault_interval,
        faults=opts.faults if isinstance(opts.faults, tuple) else _faults(opts.faults),
        device=opts.device,
        seed=opts.seed,
        faultpoints=DEFAULT_FAULTPOINTS if opts.faultpoints is None else opts.faultpoints,
        watchdog=opts.watchdog,
        fault_count=opts.fault_count,
        profile=opts.profile,
    )
    for problem in options.problems():
        p.error(problem)
    try:
        report = run_torture(options)
    except TortureError as exc:
        sys.stderr.write(f"leased torture: {exc}\n")
        return 2
    sys.stdout.write((options.workdir / "report.txt").read_text())
    return 0 if report.passed else 1


def _check_only(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leased torture --check")
    p.add_argument("--check", type=Path, required=True, help="history file to check")
    return p.parse_args(argv)
