"""The daemon's state: configuration, clients, lockspaces, leases, and which log ring serves log_dump.

Everything the command handlers read or change lives in one
:class:`DaemonState`, so a handler is a function of (state, client,
request).  Nothing here does I/O or knows about sockets.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from leased.errors import QuietRefusal, Refused, ResultCode
from leased.faultpoints import FaultPoints
from leased.health import HealthChannel
from leased.listener import SOCKET_NAME
from leased.lockspace import JoinedLockspace, LockspaceState
from leased.logsetup import LogRing
from leased.protocol import TARGET_SELF, Killpath, to_signed
from leased.resource import LeaseTable, Token
from leased.timeouts import DEFAULT_IO_TIMEOUT, DEFAULT_WATCHDOG_FIRE_TIMEOUT, Timeouts
from leased.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass
class DaemonConfig:
    """Effective daemon settings (sanlock's option letters in comments)."""

    run_dir: str = "/run/sanlock"
    our_host_name: str = ""  # -e; default <uuid4>.<nodename>
    use_watchdog: bool = False  # -w
    high_priority: int = 0  # -h
    mlock_level: int = 0  # -l
    uid: int = 0  # -U
    gid: int = 0  # -G
    max_worker_threads: int = 8  # -t
    kill_grace_seconds: int | None = None  # -g
    quiet_fail: bool = True  # -Q
    debug_renew: bool = False  # -R
    renewal_history_size: int = 180  # -H
    set_bitmap_seconds: int = 0  # -b
    io_timeout: int = DEFAULT_IO_TIMEOUT
    watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT
    log_ring_bytes: int = 1 << 20
    max_clients: int = 0
    """Most connections (and registered processes) at once; 0: :func:`client_limit` of RLIMIT_NOFILE."""
    io_engine: str = "auto"
    busy_poll: int = 50
    """Microseconds the idle watch polls without sleeping after serving connections inline (0: never)."""
    """How lease I/O reaches the disk (``storage.IO_ENGINES``): io_uring where it works, or threads."""
    allow_cross_uid: bool = False
    """Let a client act on another uid's registered pid (root always may)."""

    def __post_init__(self) -> None:
        if not self.our_host_name:
            self.our_host_name = f"{uuid.uuid4()}.{socket.gethostname()}"[:47]

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, SOCKET_NAME)

    def timeouts(self, io_timeout: int) -> Timeouts:
        return Timeouts(io_timeout, self.watchdog_fire_timeout)


FD_RESERVE = 64
"""File descriptors kept back from clients: lockspace handles, log sinks, the listener, event channel dups."""
FDS_PER_CLIENT = 3
"""A connection's socket, a registered process's pidfd, and on average one lease's storage handle."""


def client_limit(nofile: int) -> int:
    """Connections the daemon accepts with ``nofile`` descriptors before it must refuse them.

    Past this the accept loop closes new connections at once instead of
    running into EMFILE half way through some client's acquire (its storage
    open) or a registration (its pidfd).
    """
    return max(8, (nofile - FD_RESERVE) // FDS_PER_CLIENT)


_client_ids = itertools.count(1)
_generations = itertools.count(1)


@dataclass
class ClientState:
    """One connection's client: registered (a process) or one-shot."""

    ci: int = field(default_factory=lambda: next(_client_ids))
    pid: int = -1
    uid: int = -1
    gid: int = -1
    registered: bool = False
    name: bytes = b""
    restrict: int = 0
    killpath: Killpath | None = None
    killpath_flags: int = 0
    tokens: list[Token] = field(default_factory=list)
    generation: int = field(default_factory=lambda: next(_generations))
    dead: bool = False
    cmd_active: int = 0
    cmd_last: int = 0
    kill_count: int = 0
    kill_last: float = 0.0
    killpath_done: bool = False
    pidfd_source: Callable[[], int] | None = None
    """Opens :attr:`pidfd` at its first use (the daemon's: the connection's SO_PEERPIDFD); -1 when it cannot."""
    _pidfd: int = field(default=-1, init=False, repr=False)
    fd: int = -1

    @property
    def pidfd(self) -> int:
        """A pidfd of the registered process, or -1: signals can never reach a process that reused the pid.

        Opened by ``pidfd_source`` when first asked for: most registered
        processes never hold a lease (register, inquire, exit), and for them
        opening and closing one is wasted work on every connection.
        """
        return self.open_pidfd()

    @pidfd.setter
    def pidfd(self, fd: int) -> None:
        self.pidfd_source = None
        self._pidfd = fd

    def open_pidfd(self) -> int:
        """:attr:`pidfd`, opened now if it has a source and is not open yet."""
        if self._pidfd < 0 and self.pidfd_source is not None:
            source, self.pidfd_source = self.pidfd_source, None
            self._pidfd = source()
        return self._pidfd


@dataclass
class DaemonState:
    config: DaemonConfig
    lockspaces: list[JoinedLockspace] = field(default_factory=list)
    leases: LeaseTable = field(default_factory=LeaseTable)
    clients: dict[int, ClientState] = field(default_factory=dict)
    log_ring: LogRing | None = None
    shutting_down: bool = False
    started: float = field(default_factory=time.monotonic)
    space_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    faultpoints: FaultPoints = field(default_factory=FaultPoints)
    """Where tests inject allocation failures (leased.faultpoints); arms nothing unless the daemon was given one."""
    watchdog: Watchdog | None = None
    """wdmd for every lockspace joined (``use_watchdog``), or None with ``-w 0``."""
    health_channels: list[HealthChannel] = field(default_factory=list)
    """Open health channels (leased extension): every lockspace's health changes are written to each."""

    def registered_client(self, pid: int) -> ClientState | None:
        """The first registered, live client with ``pid`` (lowest slot, as sanlock does)."""
        for client in sorted(self.clients.values(), key=lambda c: c.ci):
            if client.registered and client.pid == pid and not client.dead:
                return client
        return None

    def find_lockspace(
        self, name: bytes, *, states: tuple[LockspaceState, ...] = (LockspaceState.JOINED,)
    ) -> JoinedLockspace | None:
        for lockspace in self.lockspaces:
            if lockspace.name == name and lockspace.state in states:
                return lockspace
        return None

    def event_lockspace(self, name: bytes, action: str) -> JoinedLockspace:
        """The joined lockspace ``name`` an event command (``action``) acts on.

        An empty name is refused (:class:`~leased.errors.Refused`, -EINVAL);
        an unknown one is an ordinary answer (:class:`~leased.errors.QuietRefusal`, -ENOENT).
        """
        if not name:
            raise Refused(ResultCode.EINVAL, f"{action}: empty lockspace name")
        lockspace = self.find_lockspace(name)
        if lockspace is None:
            raise QuietRefusal(ResultCode.ENOENT, f"{action}: no such lockspace")
        return lockspace

    def target_client(self, client: ClientState, pid: int) -> ClientState:
        """The registered client a registered-type command acts on (wire spec §7.3).

        ``pid`` is the request's target: -1 (``TARGET_SELF``) for ``client``
        itself, else the pid of another registered process, which ``client``
        may act for only with its uid or as root (or with
        ``allow_cross_uid``).  Raises :class:`~leased.errors.Refused` when
        there is none it may act on, or the target is busy with a command.
        """
        if pid == to_signed(TARGET_SELF):
            if not client.registered or client.dead:
                raise Refused(ResultCode.EBUSY, "no pid: connection is not registered")
            target = client
        else:
            found = self.registered_client(pid) if pid > 0 else None
            if found is None:
                raise Refused(ResultCode.ESRCH, f"target pid {pid} not found")
            target = found
            if client.uid not in (0, target.uid) and not self.config.allow_cross_uid:
                raise Refused(ResultCode.EPERM, f"uid {client.uid} may not act for pid {pid} of uid {target.uid}")
        if target.cmd_active and target is not client:
            raise Refused(ResultCode.EBUSY, f"target pid {target.pid} busy with cmd {target.cmd_active}")
        return target
