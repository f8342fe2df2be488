"""``leased direct <action>``: sanlock's direct options and output.

``leased direct <action>`` takes sanlock's options and prints sanlock's
output on stdout, so a ``leased`` binary can stand where scripts expect
``sanlock``.  On failure the same ``<action> done <rc>`` line appears, the exit
status is 1, and one extra line on stderr says what went wrong and where.
No traceback ever reaches the user: :class:`~leased.errors.LeaseError` and
``OSError`` are turned into that line at this one boundary.  The operations
themselves are :mod:`leased.direct`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from leased import cluster, direct
from leased.cli import specs
from leased.cli.options import LEASED_USAGE, Action, Option, UsageError, action_help, build_parser, command_help
from leased.clock import run_blocking
from leased.errors import LeaseError, ResultCode, code_name, rc_from_oserror
from leased.timeouts import DEFAULT_IO_TIMEOUT

DIRECT_SUMMARY = """\
Lease operations straight on storage, with no daemon (as 'sanlock direct').
stdout is what sanlock 3.8.5 prints; on failure one more line on stderr says why."""

DIRECT_TAIL = """\
LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]
Names are at most 48 bytes; a ':' inside a path is written '\\:'."""


def _int_arg(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} seconds: give 0..3600")
    return value


DIRECT_OPTIONS = (
    Option("-s", "lockspace", "lockspace NAME:HOST_ID:PATH:OFFSET (host_id is ignored by init)", "LOCKSPACE"),
    Option("-r", "resource", "resource LOCKSPACE:NAME:PATH:OFFSET[:LVER|:SH]", "RESOURCE"),
    Option(
        "-Z",
        "sector_size",
        "sector size of the area, with -A (default: from the device or leader)",
        "512|4096",
        _int_arg,
        0,
    ),
    Option("-A", "align", "align size (size of one area), with -Z", "1M|2M|4M|8M", str, ""),
    Option(
        "-o",
        "io_timeout",
        "init -s: io_timeout stored in the lockspace; host id and lease actions: the io_timeout to use (default 10)",
        "SEC",
        _int_arg,
        0,
    ),
    Option("-n", "num_hosts", "init -r: num_hosts written in the leader (default 0: all)", "NUM", _int_arg, 0),
    Option("-z", "clear", "init -r: 1 writes the lease cleared, so nobody can acquire it", "0|1", _int_arg, 0),
    Option(
        "-f", "force_level", "dump: 1 adds request records and host bitmaps, 2 also ballot blocks", "0|1|2", _int_arg, 0
    ),
    Option("-i", "host_id", "acquire, release: our host id in the lockspace", "HOST_ID", _int_arg, 0),
    Option("-g", "generation", "acquire, release: the generation of our host id", "GEN", _int_arg, 0),
    Option(
        "-e",
        "host_name",
        "acquire_id: host name stored in our delta lease (default <uuid>.<nodename>)",
        "HOST_NAME",
        str,
        "",
    ),
    Option(
        "-a", "use_aio", "accepted for compatibility with sanlock; leased always uses I/O threads", "0|1", _int_arg, 1
    ),
    Option(
        "--interval",
        "interval",
        "cluster: read twice, SEC seconds apart, so renewing hosts show LIVE "
        "(more than 2 * io_timeout; default 0: one read)",
        "SEC",
        _seconds_arg,
        0.0,
    ),
    Option("--json", "json", "cluster: print one JSON document instead of tables"),
)

_AREA = "<path>[:<offset>[:<size>]]"
DIRECT_ACTION_TABLE = (
    Action(
        "init",
        "-s LOCKSPACE | -r RESOURCE [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC] [-n NUM] [-z 0|1]",
        "Write a new lockspace area (-s) or resource lease area (-r), erasing what was there.",
        ("-s", "-r", "-Z", "-A", "-o", "-n", "-z"),
    ),
    Action(
        "read_leader",
        "-s LOCKSPACE | -r RESOURCE",
        "Print one leader record: a host's delta lease (-s, its host_id) or a resource leader (-r).",
        ("-s", "-r"),
    ),
    Action(
        "dump",
        f"{_AREA} [-f 0|1|2] [-Z 512|4096 -A 1M|2M|4M|8M]",
        "List the lease areas from an offset: host ids in lockspaces, owners and lvers of resources.",
        ("-f", "-Z", "-A"),
    ),
    Action(
        "acquire_id",
        "-s LOCKSPACE [-o SEC] [-e HOST_NAME]",
        "Acquire a host id (delta lease) once, without renewing it.",
        ("-s", "-o", "-e"),
    ),
    Action(
        "renew_id",
        "-s LOCKSPACE [-o SEC]",
        "Renew a host id held on disk once (prints 'rewew_id', as sanlock).",
        ("-s", "-o"),
    ),
    Action("release_id", "-s LOCKSPACE [-o SEC]", "Release a host id held on disk.", ("-s", "-o")),
    Action(
        "acquire",
        "-r RESOURCE -i HOST_ID -g GENERATION [-o SEC]",
        "Acquire a resource lease for a host id (':SH' at the end of RESOURCE: shared).",
        ("-r", "-i", "-g", "-o"),
    ),
    Action(
        "release",
        "-r RESOURCE -i HOST_ID -g GENERATION [-o SEC]",
        "Release a resource lease the host id holds (sanlock's direct release writes nothing).",
        ("-r", "-i", "-g", "-o"),
    ),
    Action(
        "cluster",
        f"{_AREA} [{_AREA} ...] [--interval SEC] [--json]",
        "Show who holds what, from the disk alone: each lockspace's hosts (id, generation, name,\n"
        "timestamp, liveness) and each resource's mode (EX, SH, free), lver and holders with their\n"
        "host names.  Without --interval one read is made and a held host id shows UNKNOWN: only a\n"
        "change between two reads proves a host alive.  A walk without a size stops at the first\n"
        "offset holding no leader; give the lockspace and the resource areas (any files) as arguments.",
        ("--interval", "--json"),
    ),
)
DIRECT_ACTIONS = tuple(a.name for a in DIRECT_ACTION_TABLE)


CliError = UsageError
"""A usage error: reported as one line, exit status 1."""


def _direct_parser() -> argparse.ArgumentParser:
    positionals = (
        Option("action", "action", "what to do", "?"),
        Option("targets", "targets", "dump, cluster: PATH[:OFFSET[:SIZE]]", "*"),
    )
    return build_parser("leased direct", LEASED_USAGE, DIRECT_OPTIONS, positionals)


def _run(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    return run_blocking(fn(*args))


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(detail: str) -> None:
    print(f"leased: {detail}", file=sys.stderr, flush=True)


def run_direct(argv: Sequence[str]) -> int:
    """``leased direct ...``: returns the exit status."""
    if not argv:
        sys.stdout.write(LEASED_USAGE)
        return 1
    try:
        opts = _direct_parser().parse_intermixed_args(argv)
    except CliError as exc:
        _complain(str(exc))
        return 1
    action = opts.action
    if opts.help and action in (None, *DIRECT_ACTIONS):
        chosen = next((a for a in DIRECT_ACTION_TABLE if a.name == action), None)
        if chosen is None:
            sys.stdout.write(
                command_help("leased direct", DIRECT_SUMMARY, DIRECT_ACTION_TABLE, DIRECT_OPTIONS, DIRECT_TAIL)
            )
        else:
            sys.stdout.write(action_help("leased direct", chosen, DIRECT_OPTIONS, DIRECT_TAIL))
        return 0
    if action not in DIRECT_ACTIONS:
        _say(f'direct action "{action}" is unknown')
        return 1
    if action == "dump":
        return _direct_dump(opts)
    if action == "cluster":
        return _direct_cluster(opts)
    if action == "read_leader":
        return _direct_read_leader(opts)
    label = "rewew_id" if action == "renew_id" else action  # sanlock's own spelling, which scripts match
    try:
        rc = _direct_action(opts)
    except LeaseError as exc:
        rc = exc.rc
        _complain(str(exc))
    except OSError as exc:
        rc = rc_from_oserror(exc)
        _complain(f"{exc.strerror}: {exc.filename or ''}")
    _say(f"{label} done {rc}")
    return 0 if rc == 0 else 1


def _align(opts: argparse.Namespace) -> int:
    align = specs.parse_align_option(opts.align)
    if align and (opts.sector_size, align) not in {(512, 1 << 20)} | {(4096, a << 20) for a in (1, 2, 4, 8)}:
        raise CliError(
            f"Invalid sector_size/align_size combination ({opts.sector_size}/{align})\n"
            "Use one of: 512/1M, 4096/1M, 4096/2M, 4096/4M, 4096/8M."
        )
    return align


def _direct_action(opts: argparse.Namespace) -> int:
    action = opts.action
    io_timeout = opts.io_timeout or DEFAULT_IO_TIMEOUT
    if action == "init":
        if bool(opts.lockspace) == bool(opts.resource):
            raise LeaseError(ResultCode.EINVAL, "init needs exactly one of -s LOCKSPACE or -r RESOURCE")
        try:
            align = _align(opts)
        except CliError as exc:
            _say(str(exc))
            raise SystemExit(1) from None
        if opts.lockspace:
            _run(
                direct.init_lockspace,
                specs.parse_lockspace_spec(opts.lockspace),
                opts.sector_size,
                align,
                opts.io_timeout,
            )
        else:
            resource = specs.parse_resource_spec(opts.resource)
            _run(direct.init_resource, resource, opts.sector_size, align, opts.num_hosts, bool(opts.clear))
        return 0
    if action in ("acquire_id", "renew_id", "release_id"):
        if not opts.lockspace:
            raise LeaseError(ResultCode.EINVAL, f"{action} needs -s LOCKSPACE")
        lockspace = specs.parse_lockspace_spec(opts.lockspace)
        if action == "acquire_id":
            _run(direct.acquire_id, lockspace, opts.host_name or direct.default_host_name(), io_timeout)
        elif action == "renew_id":
            _run(direct.renew_id, lockspace, io_timeout)
        else:
            _run(direct.release_id, lockspace, io_timeout)
        return 0
    if not opts.resource:
        raise LeaseError(ResultCode.EINVAL, f"{action} needs -r RESOURCE")
    resource = specs.parse_resource_spec(opts.resource)
    if action == "acquire":
        _run(direct.acquire, resource, opts.host_id, opts.generation, io_timeout)
    else:
        _run(direct.release, resource, opts.host_id, opts.generation, io_timeout)
    return 0


def _direct_read_leader(opts: argparse.Namespace) -> int:
    try:
        if opts.lockspace:
            rc, leader, detail = _run(direct.read_lockspace_leader, specs.parse_lockspace_spec(opts.lockspace))
        elif opts.resource:
            rc, leader, detail = _run(direct.read_resource_leader, specs.parse_resource_spec(opts.resource))
        else:
            raise LeaseError(ResultCode.EINVAL, "read_leader needs -s LOCKSPACE or -r RESOURCE")
    except LeaseError as exc:
        rc, leader, detail = exc.rc, direct._zero_leader(), str(exc)
    _say(f"read_leader done {rc}")
    for line in direct.format_leader(leader, resource=bool(opts.resource)):
        _say(line)
    if rc:
        _complain(f"{detail} (error {rc} {code_name(rc)})" if "error" not in detail else detail)
    return 0 if rc == 0 else 1


def _direct_dump(opts: argparse.Namespace) -> int:
    if len(opts.targets) != 1:
        _complain("dump needs one PATH[:OFFSET[:SIZE]]")
        return 1
    try:
        align = _align(opts) if opts.align else 0
        status, lines = _run(
            direct.dump, specs.parse_dump_target(opts.targets[0]), opts.force_level, opts.sector_size, align
        )
    except CliError as exc:
        _say(str(exc))
        return 1
    except LeaseError as exc:
        _complain(str(exc))
        return 1
    for line in lines:
        _say(line)
    return int(status)


def _direct_cluster(opts: argparse.Namespace) -> int:
    """Read the areas (twice with --interval) and print who holds what; exit 1 when nothing was found."""
    if not opts.targets:
        _complain("cluster needs PATH[:OFFSET[:SIZE]] (the lockspace area, and the resource areas)")
        return 1
    targets = [specs.parse_dump_target(text) for text in opts.targets]
    try:
        view = cluster.cluster_view(_run(direct.cluster_scans, targets, opts.interval))
    except LeaseError as exc:
        _complain(str(exc))
        return 1
    if opts.json:
        _say(json.dumps(view.to_json(), indent=2))
    else:
        for line in cluster.format_text(view):
            _say(line)
    if not view.lockspaces and not view.unmatched_resources:
        _complain(f"no lockspace or resource lease found at {', '.join(opts.targets)}")
        return 1
    return 0
