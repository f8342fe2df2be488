"""The ``leased`` command line, shaped like ``sanlock``'s.

``leased direct <action>`` takes sanlock's options and prints sanlock's
output on stdout, so a ``leased`` binary can stand where scripts expect
``sanlock``.  On failure the same ``<action> done <rc>`` line appears, the exit
status is 1, and one extra line on stderr says what went wrong and where.
No traceback ever reaches the user: :class:`~leased.errors.LeaseError` and
``OSError`` are turned into that line at this one boundary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from leased import direct
from leased.clock import run_blocking
from leased.errors import LeaseError, ResultCode, code_name, rc_from_oserror
from leased.timeouts import DEFAULT_IO_TIMEOUT

log = logging.getLogger("leased")

DIRECT_ACTIONS = ("init", "read_leader", "dump", "acquire", "release", "acquire_id", "renew_id", "release_id")

USAGE = """\
leased <command> <action> ...

leased direct init -s LOCKSPACE | -r RESOURCE [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC] [-n NUM] [-z 0|1]
leased direct read_leader -s LOCKSPACE | -r RESOURCE
leased direct dump <path>[:<offset>[:<size>]] [-f 0|1|2] [-Z 512|4096 -A 1M|2M|4M|8M]
leased direct acquire_id|renew_id|release_id -s LOCKSPACE [-o SEC] [-e HOST_NAME]
leased direct acquire|release -r RESOURCE -i HOST_ID -g GENERATION
leased daemon [options]            (leased daemon --help)
leased client <action> [options]   (leased client --help)
leased torture --workdir DIR [options]   (leased torture --help)

LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]
Names are at most 48 bytes; a ':' inside a path is written '\\:'.
"""


class CliError(Exception):
    """A usage error: reported as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _direct_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leased direct", add_help=False, usage=USAGE)
    parser.add_argument("action")
    parser.add_argument("target", nargs="?", help="dump: PATH[:OFFSET[:SIZE]]")
    parser.add_argument("-s", dest="lockspace")
    parser.add_argument("-r", dest="resource")
    parser.add_argument("-Z", dest="sector_size", type=_int_arg, default=0)
    parser.add_argument("-A", dest="align", default="")
    parser.add_argument("-o", dest="io_timeout", type=_int_arg, default=0)
    parser.add_argument("-n", dest="num_hosts", type=_int_arg, default=0)
    parser.add_argument("-z", dest="clear", type=_int_arg, default=0)
    parser.add_argument("-f", dest="force_level", type=_int_arg, default=0)
    parser.add_argument("-i", dest="host_id", type=_int_arg, default=0)
    parser.add_argument("-g", dest="generation", type=_int_arg, default=0)
    parser.add_argument("-e", dest="host_name", default="")
    parser.add_argument("-a", dest="use_aio", type=_int_arg, default=1, help="accepted for compatibility")
    return parser


def _int_arg(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _run(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    return run_blocking(fn(*args))


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(detail: str) -> None:
    print(f"leased: {detail}", file=sys.stderr, flush=True)


def run_direct(argv: Sequence[str]) -> int:
    """``leased direct ...``: returns the exit status."""
    if not argv:
        sys.stdout.write(USAGE)
        return 1
    try:
        opts = _direct_parser().parse_args(argv)
    except CliError as exc:
        _complain(str(exc))
        return 1
    action = opts.action
    if action not in DIRECT_ACTIONS:
        _say(f'direct action "{action}" is unknown')
        return 1
    if action == "dump":
        return _direct_dump(opts)
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
    align = direct.parse_align(opts.align)
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
                direct.init_lockspace, direct.parse_lockspace(opts.lockspace), opts.sector_size, align, opts.io_timeout
            )
        else:
            resource = direct.parse_resource(opts.resource)
            _run(direct.init_resource, resource, opts.sector_size, align, opts.num_hosts, bool(opts.clear))
        return 0
    if action in ("acquire_id", "renew_id", "release_id"):
        if not opts.lockspace:
            raise LeaseError(ResultCode.EINVAL, f"{action} needs -s LOCKSPACE")
        lockspace = direct.parse_lockspace(opts.lockspace)
        if action == "acquire_id":
            _run(direct.acquire_id, lockspace, opts.host_name or direct.default_host_name(), io_timeout)
        elif action == "renew_id":
            _run(direct.renew_id, lockspace, io_timeout)
        else:
            _run(direct.release_id, lockspace, io_timeout)
        return 0
    if not opts.resource:
        raise LeaseError(ResultCode.EINVAL, f"{action} needs -r RESOURCE")
    resource = direct.parse_resource(opts.resource)
    if action == "acquire":
        _run(direct.acquire, resource, opts.host_id, opts.generation, io_timeout)
    else:
        _run(direct.release, resource, opts.host_id, opts.generation, io_timeout)
    return 0


def _direct_read_leader(opts: argparse.Namespace) -> int:
    try:
        if opts.lockspace:
            rc, leader, detail = _run(direct.read_lockspace_leader, direct.parse_lockspace(opts.lockspace))
        elif opts.resource:
            rc, leader, detail = _run(direct.read_resource_leader, direct.parse_resource(opts.resource))
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
    if not opts.target:
        _complain("dump needs PATH[:OFFSET[:SIZE]]")
        return 1
    try:
        align = _align(opts) if opts.align else 0
        status, lines = _run(
            direct.dump, direct.parse_dump_target(opts.target), opts.force_level, opts.sector_size, align
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


DAEMON_USAGE = """\
leased daemon [options]   (options as sanlock daemon's)

  -D            no fork and print all logging to stderr
  -Q 0|1        quiet error messages for common lock contention (1)
  -R 0|1        renewal debugging, log debug info about renewals (0)
  -H <num>      renewal history size (180)
  -L <pri>      write logging at priority level and up to logfile (accepted, logged)
  -S <pri>      write logging at priority level and up to syslog (accepted, logged)
  -U <uid>      user id (name or number) owning the socket
  -G <gid>      group id (name or number) owning the socket
  -t <num>      max worker threads (accepted; leased uses trio tasks and I/O threads)
  -g <sec>      seconds for graceful recovery (kill grace)
  -w 0|1        use watchdog through wdmd (accepted; see README)
  -h 0|1        use high priority (RR) scheduling (accepted, logged)
  -l <num>      use mlockall (accepted, logged)
  -b <sec>      seconds a host id bit will remain set in delta lease bitmap
  -e <str>      local host name used in delta leases
  -o <sec>      default io_timeout for lockspaces added with io_timeout 0 (10)
  --watchdog-fire-timeout <sec>
                W in host_dead_seconds = 8*io_timeout + W (60, as sanlock 3.8.5;
                keep 60 in clusters with real sanlock hosts)

The socket is $SANLOCK_RUN_DIR/sanlock.sock (default /run/sanlock/sanlock.sock).
"""


def _daemon_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leased daemon", add_help=False, usage=DAEMON_USAGE)
    for flag, dest in (("-D", "foreground"),):
        parser.add_argument(flag, dest=dest, action="store_true")
    for flag, dest, default in (
        ("-Q", "quiet_fail", 1),
        ("-R", "debug_renew", 0),
        ("-H", "history", 180),
        ("-L", "log_file_priority", 4),
        ("-S", "syslog_priority", 3),
        ("-t", "max_worker_threads", 8),
        ("-w", "use_watchdog", 1),
        ("-h", "high_priority", 0),
        ("-l", "mlock_level", 1),
        ("-b", "set_bitmap_seconds", 0),
        ("-o", "io_timeout", 10),
        ("--watchdog-fire-timeout", "watchdog_fire_timeout", 60),
    ):
        parser.add_argument(flag, dest=dest, type=_int_arg, default=default)
    parser.add_argument("-g", dest="kill_grace", type=_int_arg, default=None)
    parser.add_argument("-U", dest="user", default=None)
    parser.add_argument("-G", dest="group", default=None)
    parser.add_argument("-e", dest="host_name", default="")
    parser.add_argument("--help", action="store_true")
    return parser


def _id_of(value: str | None, kind: str) -> int:
    """-U/-G: a name or a number; default the 'sanlock' user/group if it exists, else 0."""
    import grp
    import pwd

    lookup = pwd.getpwnam if kind == "user" else grp.getgrnam
    if value is None:
        try:
            entry = lookup("sanlock")
        except KeyError:
            return 0
        return int(entry[2])
    if value.isdigit():
        return int(value)
    try:
        return int(lookup(value)[2])
    except KeyError:
        raise CliError(f"unknown {kind} {value!r}") from None


def run_daemon_command(argv: Sequence[str]) -> int:
    """``leased daemon ...``: serve until shutdown; exit status 0, or 1 with one line on error."""
    import os

    import trio

    from leased.daemon import DaemonError, run_daemon
    from leased.state import DaemonConfig

    try:
        opts = _daemon_parser().parse_args(argv)
        if opts.help:
            sys.stdout.write(DAEMON_USAGE)
            return 0
        if not 1 <= opts.io_timeout <= 255:
            raise CliError(f"-o {opts.io_timeout}: io_timeout must be 1..255 (stored in one byte on disk)")
        if opts.watchdog_fire_timeout < 0:
            raise CliError("--watchdog-fire-timeout must not be negative")
        config = DaemonConfig(
            run_dir=os.environ.get("SANLOCK_RUN_DIR") or "/run/sanlock",
            our_host_name=opts.host_name,
            use_watchdog=bool(opts.use_watchdog),
            high_priority=opts.high_priority,
            mlock_level=opts.mlock_level,
            uid=_id_of(opts.user, "user"),
            gid=_id_of(opts.group, "group"),
            max_worker_threads=opts.max_worker_threads,
            kill_grace_seconds=opts.kill_grace,
            quiet_fail=bool(opts.quiet_fail),
            debug_renew=bool(opts.debug_renew),
            renewal_history_size=opts.history,
            set_bitmap_seconds=opts.set_bitmap_seconds,
            io_timeout=opts.io_timeout,
            watchdog_fire_timeout=opts.watchdog_fire_timeout,
        )
    except CliError as exc:
        _complain(str(exc))
        return 1
    if config.use_watchdog:
        log.warning("-w 1: no watchdog device is driven yet; lease safety relies on killing lease holders")
    try:
        trio.run(lambda: run_daemon(config, foreground=opts.foreground))
    except DaemonError as exc:
        _complain(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if not args or args[0] in ("help", "--help", "-h"):
        sys.stdout.write(USAGE)
        return 0 if args else 1
    command, rest = args[0], args[1:]
    try:
        if command == "direct":
            return run_direct(rest)
        if command == "daemon":
            return run_daemon_command(rest)
        if command == "client":
            from leased.client_cli import run_client

            return run_client(rest)
        if command == "torture":
            from leased.torture.cli import run_torture_command

            return run_torture_command(rest)
        _say(f'client action "{command}" is unknown')
        return 1
    except KeyboardInterrupt:
        _complain("interrupted")
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
