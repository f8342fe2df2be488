"""The ``leased`` entry point: the dispatch to a command.

Each command's module is imported only when that command runs, so
``leased --help`` and ``leased client ...`` load neither trio nor the daemon.
An interrupt or a closed stdout ends any command here, as one line and an
exit status, never a traceback; errors of the lease operations are turned
into sanlock's ``<action> done <rc>`` by the command itself
(:mod:`leased.cli.direct`, :mod:`leased.cli.client`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(detail: str) -> None:
    print(f"leased: {detail}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("help", "--help", "-h"):
        from leased.cli.options import LEASED_USAGE

        sys.stdout.write(LEASED_USAGE)
        return 0 if args else 1
    command, rest = args[0], args[1:]
    if command != "daemon":
        # The daemon sets up its own sinks, and must listen before it imports anything it can spare
        # (logging alone is 8 ms); the other commands log warnings to stderr.
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    try:
        if command == "direct":
            from leased.cli.direct import run_direct

            return run_direct(rest)
        if command == "daemon":
            from leased.cli import daemon

            return daemon.run(rest)
        if command == "client":
            from leased.cli.client import run_client

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
