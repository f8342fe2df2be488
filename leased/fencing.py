"""Stopping the processes whose leases can no longer be trusted.

When this host cannot renew its host id, other hosts will take its leases
after ``host_dead_seconds`` (8N + W, measured from the last renewal they
saw).  Before then every process holding a lease in that lockspace must be
gone.  sanlock relies on a hardware watchdog as the backstop; leased always
runs the kill escalation of on-disk spec §9, and a watchdog only when one is
configured:

* from ``last_success + 8N``: the client's killpath program once (if set and
  the grace period is not zero), then SIGTERM, at most one action a second;
* from ``last_success + 8N + kill_grace_seconds``: SIGKILL;
* a RESTRICT_SIGKILL client gets SIGTERM instead of SIGKILL, a
  RESTRICT_SIGTERM client SIGKILL instead of SIGTERM;
* at most 100 attempts per process.

Signals go through a pidfd of the process, so a late signal can never hit
an unrelated process that reused the pid: the daemon opens it from the
process's connection (SO_PEERPIDFD, which names the process that connected)
when it is first needed, or at registration on kernels without that.  Every tick
re-checks that the client object is still the live one it was started for
(its generation): a stale timer does nothing.

The :class:`Fencer` is a seam: tests wrap the production one to record what
was sent, without changing what happens.

What fencing knows of a process is a :class:`Holder`: its pid and pidfd,
its restrictions and killpath, whether it is still the live client it was,
and this module's own bookkeeping of the escalation.  The daemon's
:class:`~leased.state.ClientState` is one; fencing never imports the
daemon's state, so it sits below it, beside the lockspace and the lease
table.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import trio

from leased.clock import Clock
from leased.protocol import KILLPATH_PID, RESTRICT_SIGKILL, RESTRICT_SIGTERM, Killpath
from leased.text_forms import split_killpath_args

log = logging.getLogger(__name__)

MAX_KILL_ATTEMPTS = 100
KILL_TICK = 0.2


class Holder(Protocol):
    """A lease holder's process, as fencing sees it (:class:`leased.state.ClientState` is one).

    Read-only: who it is and how it asked to be stopped.  Written here: the
    escalation's bookkeeping (``kill_count``, ``kill_last``, ``killpath_done``).
    """

    @property
    def pid(self) -> int: ...
    @property
    def pidfd(self) -> int:
        """A pidfd of the process, or -1: signals through it never reach a process that reused the pid."""
        ...

    @property
    def generation(self) -> int:
        """Unique to this client: an escalation acts only while it is the one it was started for."""
        ...

    @property
    def dead(self) -> bool: ...
    @property
    def restrict(self) -> int: ...
    @property
    def killpath(self) -> Killpath | None: ...
    @property
    def killpath_flags(self) -> int: ...

    kill_count: int
    kill_last: float
    killpath_done: bool


H = TypeVar("H", bound=Holder)


class Fencer(Protocol):
    def send_signal(self, client: Holder, signum: int) -> bool:
        """Signal the client's process; False if it is already gone."""
        ...

    def run_killpath(self, client: Holder) -> bool:
        """Start the client's killpath program; False if it could not start."""
        ...


def killpath_argv(client: Holder) -> list[str]:
    """The killpath program and its arguments (backslash escapes as libsanlock writes them)."""
    assert client.killpath is not None
    argv = [client.killpath.path, *split_killpath_args(client.killpath.args)][:8]
    if client.killpath_flags & KILLPATH_PID:
        argv = [*argv[:7], str(client.pid)]
    return argv


class ProcessFencer:
    """Signals through pidfds; killpath programs as detached child processes."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def send_signal(self, client: Holder, signum: int) -> bool:
        try:
            if client.pidfd >= 0:
                signal.pidfd_send_signal(client.pidfd, signum)
            elif client.pid > 0:
                os.kill(client.pid, signum)
            else:
                return False
        except ProcessLookupError:
            return False
        except OSError as exc:
            log.error("kill %d sig %d failed: %s", client.pid, signum, exc)
            return False
        log.info("kill %d sig %d", client.pid, signum)
        return True

    def run_killpath(self, client: Holder) -> bool:
        argv = killpath_argv(client)
        self.reap()
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.error("killpath %s for pid %d failed: %s", argv, client.pid, exc)
            return False
        self.children.append(child)
        log.info("killpath %s for pid %d", " ".join(argv), client.pid)
        return True

    def reap(self) -> None:
        self.children = [child for child in self.children if child.poll() is None]


def restricted_signal(client: Holder, signum: int) -> int:
    """The signal RESTRICT_* flags turn ``signum`` into (a restricted SIGKILL becomes SIGTERM and the reverse)."""
    if signum == signal.SIGKILL and client.restrict & RESTRICT_SIGKILL:
        return signal.SIGTERM
    if signum == signal.SIGTERM and client.restrict & RESTRICT_SIGTERM:
        return signal.SIGKILL
    return signum


def next_action(client: Holder, now: float, fail_time: float, grace: float, immediate: bool) -> str | None:
    """What the escalation does to ``client`` at ``now`` (pure): "killpath", "term", "kill" or None.

    ``fail_time`` is last_success + 8N; ``immediate`` skips straight to SIGKILL
    (lockspace removal, forced shutdown).
    """
    if client.kill_count >= MAX_KILL_ATTEMPTS or now - client.kill_last < 1.0:
        return None
    if immediate or now >= fail_time + grace:
        return "kill"
    if client.killpath is not None and grace > 0 and not client.killpath_done:
        return "killpath"
    if client.killpath is not None and grace > 0 and now < fail_time + grace / 2:
        return None  # give the killpath program the first half of the grace period
    return "term"


def act(fencer: Fencer, client: Holder, action: str, now: float) -> None:
    client.kill_count += 1
    client.kill_last = now
    if action == "killpath":
        client.killpath_done = True
        if fencer.run_killpath(client):
            return
        action = "term"
    signum = restricted_signal(client, signal.SIGKILL if action == "kill" else signal.SIGTERM)
    fencer.send_signal(client, signum)


async def escalate(
    fencer: Fencer,
    clients: Sequence[tuple[H, int]],
    *,
    fail_time: float,
    grace: float,
    immediate: bool,
    clock: Clock,
    still_holding: Callable[[H], bool],
) -> None:
    """Run the kill escalation until none of ``clients`` holds leases any more."""
    while True:
        live = [
            client
            for client, generation in clients
            if not client.dead and client.generation == generation and still_holding(client)
        ]
        if not live:
            return
        now = clock.now()
        for client in live:
            action = next_action(client, now, fail_time, grace, immediate)
            if action is not None:
                act(fencer, client, action, now)
        await trio.sleep(KILL_TICK)
