"""The ``leased`` entry point: the top-level usage and the dispatch to a command.

Each command's module is imported only when that command runs, so
``leased --help`` and ``leased client ...`` load neither trio nor the daemon.
An interrupt or a closed stdout ends any command here, as one line and an
exit status, never a traceback; errors of the lease operations are turned
into sanlock's ``<action> done <rc>`` by the command itself
(:mod:`leased.cli.direct`, :mod:`leased.cli.client`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

USAGE = """\
leased <command> <action> ...

leased direct init -s LOCKSPACE | -r RESOURCE [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC] [-n NUM] [-z 0|1]
leased direct read_leader -s LOCKSPACE | -r RESOURCE
leased direct dump <path>[:<offset>[:<size>]] [-f 0|1|2] [-Z 512|4096 -A 1M|2M|4M|8M]
leased direct acquire_id|renew_id|release_id -s LOCKSPACE [-o SEC] [-e HOST_NAME]
leased direct acquire|release -r RESOURCE -i HOST_ID -g GENERATION
leased direct cluster <path>[:<offset>[:<size>]] ... [--interval SEC] [--json]
leased daemon [options]                  (leased daemon --help)
leased client <action> [options]         (leased client --help)
leased torture --workdir DIR [options]   (leased torture --help)

LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]
Names are at most 48 bytes; a ':' inside a path is written '\\:'.
"""


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(detail: str) -> None:
    print(f"leased: {detail}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    if not args or args[0] in ("help", "--help", "-h"):
        sys.stdout.write(USAGE)
        return 0 if args else 1
    command, rest = args[0], args[1:]
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
