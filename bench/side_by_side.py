"""Starting and stopping leased and real sanlock side by side, for the benchmarks that compare them.

Each daemon gets its own run directory (``SANLOCK_RUN_DIR``) under one base
directory, its output in ``daemon.log`` beside it, and is stopped the way
an operator stops it (``sanlock client shutdown -f 1``), killed only if it
does not exit.  Used by ``daemon_vs_sanlock.py`` and ``mixed_load.py``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from leased.torture.local_daemons import SANLOCK_DAEMON_ENV, leased_daemon_argv, sanlock_binary, sanlock_daemon_argv

PYTHON3 = "/usr/bin/python3"
"""Debian's interpreter, the one python3-sanlock is built for."""


@dataclass
class Daemon:
    """One running daemon: its process, the environment that points clients at it, and its directory."""

    label: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    home: Path


def daemon_commands() -> dict[str, list[str]]:
    """The command line of each daemon, real sanlock first; exits with a message without sanlock's packages."""
    sanlock = sanlock_binary()
    if not Path(PYTHON3).exists() or sanlock is None:
        raise SystemExit("needs Debian's sanlock and python3-sanlock (apt-get install sanlock python3-sanlock)")
    return {"sanlock": sanlock_daemon_argv(sanlock), "leased": leased_daemon_argv()}


def daemon_env(run_dir: Path) -> dict[str, str]:
    """The environment of a daemon (and its clients) whose run directory is ``run_dir``."""
    return {**os.environ, "SANLOCK_RUN_DIR": str(run_dir), **SANLOCK_DAEMON_ENV}


def start_daemon(label: str, argv: list[str], base: Path) -> Daemon:
    """Start ``argv`` with its run directory in ``base/label/run``; returns once it answers a client."""
    home = base / label
    run_dir = home / "run"
    run_dir.mkdir(parents=True)
    env = daemon_env(run_dir)
    with (home / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    daemon = Daemon(label, proc, env, home)
    try:
        wait_listening(daemon)
    except BaseException:
        stop_daemons([daemon])
        raise
    return daemon


def wait_listening(daemon: Daemon, seconds: float = 20) -> None:
    """Return once ``sanlock client version`` gets an answer; exit with a message if the daemon dies or never does."""
    deadline = time.monotonic() + seconds
    sock = Path(daemon.env["SANLOCK_RUN_DIR"]) / "sanlock.sock"
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise SystemExit(f"{daemon.label} daemon exited: {daemon.proc.returncode}")
        probe = subprocess.run(["sanlock", "client", "version"], env=daemon.env, capture_output=True, check=False)
        if sock.exists() and probe.returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"{daemon.label} daemon did not listen on {sock}")


def stop_daemons(daemons: list[Daemon]) -> None:
    """Shut each daemon down as an operator would (forced: its lockspaces are left); kill what does not exit."""
    for daemon in daemons:
        subprocess.run(["sanlock", "client", "shutdown", "-f", "1", "-w", "1"], env=daemon.env, capture_output=True)
        try:
            daemon.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()
