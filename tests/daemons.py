"""Run real lease daemons (sanlock 3.8.5, later leased's own) for tests, and lay out lease files.

A daemon here is a command line plus a run directory: it is started with
``SANLOCK_RUN_DIR`` pointing at that directory, its stderr goes to a log file
next to it, and it counts as up once ``<run_dir>/sanlock.sock`` answers a
VERSION request.  Stopping asks it politely first (a command such as
``sanlock client shutdown -f 1 -w 1``), then SIGKILLs it after a bounded wait,
so a wedged daemon cannot outlive the test session.  Nothing here sleeps for a
fixed time: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from leased.client import Client, SanlockError, socket_path
from leased.torture import local_daemons

MiB = 1 << 20

_T = TypeVar("_T")


def sanlock_binary() -> str:
    """Path of the real sanlock, or skip the test with the reason."""
    found = local_daemons.sanlock_binary()
    if found is None:
        pytest.skip("real sanlock 3.8.5 not installed (apt-get install sanlock): /usr/sbin/sanlock missing")
    return found


def wait_for(condition: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.02) -> _T:
    """Poll ``condition`` until it returns something other than None/False; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout} s")
        time.sleep(interval)


@dataclass
class Daemon:
    """A running daemon: its process, where it listens, where it logs."""

    argv: list[str]
    run_dir: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    stop_argv: list[str] | None = None

    @property
    def socket_path(self) -> str:
        return socket_path(self.run_dir)

    def client(self, timeout: float | None = 30) -> Client:
        return Client(self.run_dir, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


def _answers_version(daemon: Daemon) -> bool:
    if not daemon.alive():
        raise RuntimeError(f"daemon {daemon.argv} exited with {daemon.process.returncode}:\n{daemon.log()[-4000:]}")
    try:
        daemon.client(timeout=2).version()
    except (SanlockError, OSError):
        return False
    return True


def stop_daemon(daemon: Daemon, timeout: float = 15) -> None:
    """Ask the daemon to stop (its stop command, else SIGTERM); SIGKILL it if it lingers."""
    if daemon.alive():
        if daemon.stop_argv is not None:
            with suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    daemon.stop_argv,
                    env=daemon.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
        else:
            daemon.process.send_signal(signal.SIGTERM)
    try:
        daemon.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.process.kill()
        daemon.process.wait(timeout=timeout)


@contextmanager
def start_daemon(
    argv: Sequence[str],
    run_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    stop_argv: Sequence[str] | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 15,
) -> Iterator[Daemon]:
    """Start ``argv`` with SANLOCK_RUN_DIR=run_dir, wait until it answers VERSION, stop it on exit.

    ``stop_argv`` runs (with the same environment) to stop it; without one
    the daemon gets SIGTERM.  Either way it is SIGKILLed if still alive after
    a bounded wait.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or run_dir.parent / f"{run_dir.name}-daemon.log"
    full_env = {**os.environ, **(env or {}), "SANLOCK_RUN_DIR": str(run_dir)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(argv), env=full_env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    daemon = Daemon(list(argv), run_dir, log_path, full_env, process, list(stop_argv) if stop_argv else None)
    try:
        wait_for(lambda: _answers_version(daemon), ready_timeout, f"daemon {argv[0]} listening on {daemon.socket_path}")
        yield daemon
    finally:
        stop_daemon(daemon)


def leased_shutdown_argv() -> list[str]:
    """``leased client shutdown -f 1 -w 1``: stops a daemon even while it guards a lockspace.

    SIGTERM does not: like sanlock, a daemon with a lockspace logs "ignore
    shutdown, lockspace exists" and keeps running, and the test would then
    wait out :func:`stop_daemon`'s timeout before its SIGKILL.
    """
    return [*local_daemons.leased_command(), "client", "shutdown", "-f", "1", "-w", "1"]


@contextmanager
def sanlock_daemon(tmp: Path, name: str = "sanlock", host_name: str | None = None) -> Iterator[Daemon]:
    """A private real sanlock 3.8.5: unprivileged, no watchdog, debug log to ``<tmp>/<name>-daemon.log``."""
    binary = sanlock_binary()
    run_dir = tmp / name / "run"
    with start_daemon(
        local_daemons.sanlock_daemon_argv(binary, host_name or socket.gethostname()),
        run_dir,
        env=local_daemons.SANLOCK_DAEMON_ENV,
        stop_argv=[binary, "client", "shutdown", "-f", "1", "-w", "1"],
        log_path=tmp / name / "daemon.log",
    ) as daemon:
        yield daemon


# --------------------------------------------------------------------------
# Lease files


@dataclass(frozen=True)
class LeaseFile:
    """A lockspace at offset 0 of ``path`` and resources at 1 MiB steps (512-byte sectors, 1 MiB align)."""

    path: Path
    lockspace: bytes
    resources: tuple[bytes, ...]

    def offset(self, resource: bytes) -> int:
        return (self.resources.index(resource) + 1) * MiB

    def disks(self, resource: bytes) -> list[tuple[str, int]]:
        return [(str(self.path), self.offset(resource))]


def new_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def init_lease_file(
    client: Client,
    path: Path,
    lockspace: bytes,
    resources: Sequence[bytes],
    *,
    io_timeout: int = 1,
) -> LeaseFile:
    """Create ``path`` and initialise it through the daemon (write_lockspace + write_resource).

    ``io_timeout`` 1 makes a join take about 3 s instead of 20.
    """
    new_file(path, (len(resources) + 1) * MiB)
    client.write_lockspace(lockspace, path, 0, io_timeout=io_timeout)
    lease_file = LeaseFile(path, lockspace, tuple(resources))
    for resource in resources:
        client.write_resource(lockspace, resource, lease_file.disks(resource))
    return lease_file


def init_lease_file_direct(
    path: Path, lockspace: bytes, resources: Sequence[bytes], *, io_timeout: int = 1
) -> LeaseFile:
    """The same layout written by ``sanlock direct init`` (no daemon needed)."""
    binary = sanlock_binary()
    new_file(path, (len(resources) + 1) * MiB)
    lease_file = LeaseFile(path, lockspace, tuple(resources))
    commands = [[binary, "direct", "init", "-s", f"{lockspace.decode()}:0:{path}:0", "-o", str(io_timeout)]]
    for resource in resources:
        spec = f"{lockspace.decode()}:{resource.decode()}:{path}:{lease_file.offset(resource)}"
        commands.append([binary, "direct", "init", "-r", spec])
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    return lease_file
