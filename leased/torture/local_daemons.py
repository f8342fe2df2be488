"""How to start a private leased or real sanlock daemon on this machine, in one place.

The torture harness, the test suite and the benchmark all run daemons of
both kinds side by side, each in its own ``SANLOCK_RUN_DIR``.  They want the
same thing from them: in the foreground (the caller owns the process), no
watchdog unless asked (there is no watchdog device here; tests that want one
run the real wdmd under a shim, :mod:`leased.torture.wdmd`), the socket owned by
root, and logging to stderr only (so nothing lands in /var/log).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from leased.torture import armed_daemon

SANLOCK_PATH = "/usr/sbin/sanlock"

SANLOCK_DAEMON_ENV = {"SANLOCK_PRIVILEGED": "0"}
"""Lets sanlock 3.8 run without the capabilities and scheduling of a production host."""


def leased_command() -> list[str]:
    """The ``leased`` command of the running interpreter's environment, else the one on PATH."""
    script = Path(sys.executable).parent / "leased"
    if script.exists():
        return [str(script)]
    found = shutil.which("leased")
    return [found] if found else [sys.executable, "-m", "leased.cli"]


def sanlock_binary() -> str | None:
    """The real sanlock (Debian's package installs it in /usr/sbin), or None."""
    for candidate in (shutil.which("sanlock"), SANLOCK_PATH):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def leased_daemon_argv(
    host_name: str | None = None,
    *,
    watchdog_fire_timeout: int | None = None,
    faultpoints: str | None = None,
    use_watchdog: bool = False,
) -> list[str]:
    """``leased daemon`` in the foreground, stderr only, root's socket; no watchdog unless ``use_watchdog``.

    ``faultpoints`` (a spec, see :mod:`leased.faultpoints`) starts it through
    the test entry point :mod:`leased.torture.armed_daemon` instead.
    """
    command = armed_daemon.argv_prefix(faultpoints) if faultpoints else [*leased_command(), "daemon"]
    argv = [*command, "-D", "-L", "-1", "-w", "1" if use_watchdog else "0", "-U", "root", "-G", "root"]
    if host_name:
        argv += ["-e", host_name]
    if watchdog_fire_timeout is not None:
        argv += ["--watchdog-fire-timeout", str(watchdog_fire_timeout)]
    return argv


def sanlock_daemon_argv(binary: str, host_name: str | None = None, *, use_watchdog: bool = False) -> list[str]:
    """``sanlock daemon`` the same way (also no mlockall, no RR scheduling); run it with SANLOCK_DAEMON_ENV.

    ``use_watchdog`` gives it ``-w 1`` (sanlock's default): it then needs a
    wdmd, which here is the real one under the shim of
    :mod:`leased.torture.wdmd`, with sanlock under the same shim.
    """
    watchdog = "1" if use_watchdog else "0"
    argv = [binary, "daemon", "-D", "-w", watchdog, "-l", "0", "-h", "0", "-U", "root", "-G", "root"]
    return [*argv, "-e", host_name] if host_name else argv
