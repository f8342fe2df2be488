"""Run leased's own daemon for tests, the way ``daemons.sanlock_daemon`` runs the real one.

The daemon is the installed ``leased`` script of this virtualenv, started in
the foreground (``-D``) without a watchdog, owning its socket as root, with a
fixed host name so that delta leases and ``status`` output are predictable.
It is stopped through the real ``sanlock client shutdown -f 1 -w 1`` when the
real CLI is installed (which doubles as a check that the CLI can talk to it),
else with SIGTERM; :func:`daemons.start_daemon` SIGKILLs it if it lingers.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemons import SANLOCK_BIN, Daemon, start_daemon


def leased_binary() -> Path:
    """The ``leased`` console script next to the running interpreter (the project's venv)."""
    return Path(sys.executable).parent / "leased"


def leased_argv(host_name: str, watchdog_fire_timeout: int) -> list[str]:
    return [
        str(leased_binary()),
        "daemon",
        "-D",
        "-w",
        "0",
        "-U",
        "root",
        "-G",
        "root",
        "-e",
        host_name,
        "--watchdog-fire-timeout",
        str(watchdog_fire_timeout),
    ]


@contextmanager
def leased_daemon(
    tmp: Path, name: str = "leased", host_name: str | None = None, *, watchdog_fire_timeout: int = 60
) -> Iterator[Daemon]:
    """A private leased daemon: run dir ``<tmp>/<name>/run``, log ``<tmp>/<name>/daemon.log``.

    ``watchdog_fire_timeout`` 60 is sanlock 3.8.5's value; keep it when the
    lockspace is shared with real sanlock hosts, lower it only in leased-only
    tests that wait for a host to be declared dead.
    """
    stop_argv = [SANLOCK_BIN, "client", "shutdown", "-f", "1", "-w", "1"] if os.path.exists(SANLOCK_BIN) else None
    with start_daemon(
        leased_argv(host_name or socket.gethostname(), watchdog_fire_timeout),
        tmp / name / "run",
        stop_argv=stop_argv,
        log_path=tmp / name / "daemon.log",
    ) as daemon:
        yield daemon
