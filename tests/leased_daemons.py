"""Run leased's own daemon for tests, the way ``daemons.sanlock_daemon`` runs the real one.

The daemon is the installed ``leased`` script of this virtualenv, started in
the foreground (``-D``) without a watchdog, owning its socket as root, with a
fixed host name so that delta leases and ``status`` output are predictable.
It is stopped through the real ``sanlock client shutdown -f 1 -w 1`` when the
real CLI is installed (which doubles as a check that the CLI can talk to it),
else with SIGTERM; :func:`daemons.start_daemon` SIGKILLs it if it lingers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from daemons import Daemon, LeaseFile, sanlock_daemon, start_daemon

from leased.torture import local_daemons


@contextmanager
def leased_daemon(
    tmp: Path,
    name: str = "leased",
    host_name: str | None = None,
    *,
    watchdog_fire_timeout: int = 60,
    extra: Sequence[str] = (),
) -> Iterator[Daemon]:
    """A private leased daemon: run dir ``<tmp>/<name>/run``, log ``<tmp>/<name>/daemon.log``.

    ``watchdog_fire_timeout`` 60 is sanlock 3.8.5's value; keep it when the
    lockspace is shared with real sanlock hosts, lower it only in leased-only
    tests that wait for a host to be declared dead.
    """
    sanlock = local_daemons.sanlock_binary()
    stop_argv = [sanlock, "client", "shutdown", "-f", "1", "-w", "1"] if sanlock else None
    argv = local_daemons.leased_daemon_argv(
        host_name or socket.gethostname(), watchdog_fire_timeout=watchdog_fire_timeout
    )
    with start_daemon(
        [*argv, *extra],
        tmp / name / "run",
        stop_argv=stop_argv,
        log_path=tmp / name / "daemon.log",
    ) as daemon:
        yield daemon


@contextmanager
def leased_and_sanlock(tmp: Path, lease_file: LeaseFile, io_timeout: int = 1) -> Iterator[dict[str, Daemon]]:
    """Host 1 a leased daemon, host 2 a real sanlock daemon, both joined to LS on ``lease_file``."""
    with ExitStack() as stack:
        daemons = {
            "leased": stack.enter_context(leased_daemon(tmp, "leased", "leased-host")),
            "sanlock": stack.enter_context(sanlock_daemon(tmp, "sanlock", "sanlock-host")),
        }
        for host_id, daemon in enumerate(daemons.values(), start=1):
            daemon.client().add_lockspace(b"LS", host_id, lease_file.path, 0, io_timeout=io_timeout, wait=False)
        for host_id, daemon in enumerate(daemons.values(), start=1):
            assert daemon.client().inq_lockspace(b"LS", host_id, lease_file.path, 0, wait=True) is True
        yield daemons
