"""The leased daemon with fault points armed: a test-only entry point, never installed as a command.

    python -m leased.torture.armed_daemon --faultpoints SPEC [leased daemon options]

runs exactly ``leased daemon [options]`` with a :class:`~leased.faultpoints.FaultPoints`
built from SPEC (``acquire.prepare=0.02,release.prepare@3``; see
:mod:`leased.faultpoints`).  The torture harness starts its leased hosts this
way, and so do tests of a daemon process meeting injected failures.  The
daemon itself has no switch for it: the production command cannot be armed
by its environment or its options.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from leased.cli import daemon as daemon_cli
from leased.faultpoints import FaultPointError, FaultPoints, parse

USAGE = "usage: python -m leased.torture.armed_daemon --faultpoints SPEC [leased daemon options]"


def argv_prefix(spec: str) -> list[str]:
    """What replaces ``leased daemon`` in a daemon's command line to arm ``spec``."""
    return [sys.executable, "-m", "leased.torture.armed_daemon", "--faultpoints", spec]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--faultpoints":
        print(USAGE, file=sys.stderr)
        return 2
    try:
        table = parse(args[1])
    except FaultPointError as exc:
        print(f"leased: --faultpoints: {exc}", file=sys.stderr)
        return 1
    return daemon_cli.run(args[2:], faultpoints=FaultPoints(table))


if __name__ == "__main__":
    sys.exit(main())
