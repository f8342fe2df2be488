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
            from leased import daemon_cli

            return daemon_cli.run(rest)
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
