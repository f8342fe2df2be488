"""The leased daemon: a trio server on sanlock's Unix socket.

This is the thin I/O shell around the sans-I/O parts: it binds
``$SANLOCK_RUN_DIR/sanlock.sock`` (mode 0660, owner from ``-U/-G``), takes a
lock on ``sanlock.pid`` so only one daemon serves a run directory, accepts
connections, reads each peer's credentials (``SO_PEERCRED``), and runs one
task per connection that feeds a :class:`~leased.connection.MessageReader`
and hands each framed request to its handler (:mod:`leased.commands`).

What it promises (the boundaries are where a daemon dies, so each is here):

* **one boundary per connection**: a bad message is logged (connection id,
  pid, command, what was wrong) and answered with its code when it has one;
  the reader resynchronises on the next valid header.  Every send is
  guarded, and any exception in a connection's task is logged and ends that
  connection alone: never another connection, never the daemon;
* **one boundary per background task** (:mod:`leased.tasks`): a join,
  renewal, fencing, examine or removal task that breaks is logged and ends
  alone; a broken renewal fails its lockspace, which fences its holders;
* **the release rule** (see ``_connection``): a registered process's leases
  are released on disk only when it is known gone, by EOF on its
  connection or by its exit seen through its pidfd; no error, cancellation
  or shutdown path releases the lease of a holder that still runs;
* **bounds instead of crashes**: at most ``max_clients`` connections and
  registered processes (derived from RLIMIT_NOFILE unless configured; past
  it a new connection is logged and closed), an accept loop that waits out
  EMFILE, a bounded read buffer per connection (the reader's), at most 32
  event channels per lockspace, and a bounded renewal history;
* nothing blocks the event loop: disk I/O runs in worker threads, and a slow
  or silent client stalls only its own task;
* **fair turns on a fast path**: sockets are used raw and non-blocking
  (:class:`ClientSocket`), trio's scheduler reached only when one would
  block, so the accept loop yields every ``ACCEPT_BATCH`` connections and a
  connection every ``FAIR_SHARE`` operations: a client that never stops
  sending starves no other (docs/architecture.md, "The fast path").
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from functools import partial

import trio

from leased.commands import HANDLERS, INLINE_CLOSERS, Command, cmd_unsupported, mark_registered
from leased.connection import BadMessage, MessageReader, Request
from leased.errors import LeaseError, ResultCode
from leased.faultpoints import FaultPoints
from leased.fencing import Fencer, ProcessFencer
from leased.lifecycle import remove_lockspace
from leased.listener import Claim, ClaimError, claim
from leased.lockspace import EventChannel, LockspaceState
from leased.logsetup import LogRing, LogSettings, LogSetupError, debug, setup_logging
from leased.notify import Notifier
from leased.protocol import HEADER_SIZE, RESTRICT_ALL, Cmd, Header, header_problem
from leased.state import ClientState, DaemonConfig, DaemonState, client_limit
from leased.storage import FileStorage, Storage, io_engine_in_use, keep_freed_memory, use_io_engine
from leased.tasks import Spawner, nursery_spawner
from leased.transactions import release_client
from leased.watchdog import Watchdog, WdmdWatchdog

log = logging.getLogger(__name__)

RECV_CHUNK = 65536

ACCEPT_BATCH = 32
"""Connections accepted back to back before the accept loop lets other tasks run."""

FAIR_SHARE = 16
"""Receives and events a connection handles without blocking before it yields to other tasks.

The fast path (see ``ClientSocket``) only reaches trio's scheduler when a
socket would block; a client that never stops sending would otherwise keep
the event loop for itself, and a cancelled daemon would never see it.
"""

_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
_IGNORED_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
"""accept() failures about the one connection being accepted, not the listener (as trio's SocketListener)."""


class DaemonError(Exception):
    """The daemon cannot start (socket, lock file, permissions): one line for the operator."""


_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class ClientSocket:
    """One connection's non-blocking socket: the system call first, trio's wait only when it would block.

    trio's ``SocketStream`` costs a short-lived client more than everything
    else the daemon does for it (socket options tried and failed per
    connection, a checkpoint per call, a conflict detector per send).  Here a
    ``recv`` or ``send`` that can complete at once completes at once, and
    ``wait_readable``/``wait_writable`` are awaited only when it cannot.  So
    that no connection keeps the event loop (or misses a cancellation), every
    ``FAIR_SHARE`` operations without a wait end in ``trio.lowlevel.checkpoint()``
    (:meth:`share`).

    Errors: the peer's close (EPIPE, ECONNRESET) is :class:`PeerGone`;
    any other OSError goes up to the connection's boundary.
    """

    __slots__ = ("_unshared", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._unshared = 0

    async def share(self) -> None:
        """Count one operation done without blocking; yield to other tasks every ``FAIR_SHARE`` of them."""
        self._unshared += 1
        if self._unshared >= FAIR_SHARE:
            self._unshared = 0
            await trio.lowlevel.checkpoint()

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, b"" at EOF; raises :class:`PeerGone` on a reset."""
        while True:
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                self._unshared = 0
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except ConnectionError:
                raise PeerGone from None
            await self.share()
            return data

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``; raises :class:`PeerGone` when the peer has closed."""
        sent = self._send(data)
        if sent == len(data):
            return
        rest = memoryview(data)[sent:]
        while rest:
            self._unshared = 0
            await trio.lowlevel.wait_writable(self.sock)
            rest = rest[self._send(rest) :]

    def _send(self, data: bytes | memoryview) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except ConnectionError:
            raise PeerGone from None


class PeerGone(Exception):
    """The peer closed its end (EPIPE or ECONNRESET)."""


class ConnectionEnd(enum.Enum):
    """How a connection ended: only PEER_CLOSED lets a registered process's leases go (the release rule)."""

    PEER_CLOSED = "the peer closed it (EOF or reset)"
    CLOSED_HERE = "a close rule of the daemon"
    FAILED = "an internal error in leased"
    CANCELLED = "the daemon is stopping"


class RateLimitedLog:
    """One error line per ``interval`` seconds for a condition that can repeat thousands of times a second."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = -interval
        self._suppressed = 0

    def note(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more since the last line)"
        log.error(message, *args)
        self._last, self._suppressed = now, 0


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (trio polls with epoll, so no FD_SETSIZE cap); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        *,
        open_storage: Callable[[str], Storage] = FileStorage,
        fencer: Fencer | None = None,
        notifier: Notifier | None = None,
        faultpoints: FaultPoints | None = None,
        watchdog: Watchdog | None = None,
        claim: Claim | None = None,
    ) -> None:
        """``claim``: the run directory already claimed (``leased daemon`` listens before importing this)."""
        self.config = config
        self._claim = claim
        self.state = DaemonState(config)
        if faultpoints is not None:
            self.state.faultpoints = faultpoints
        if watchdog is None and config.use_watchdog:
            watchdog = WdmdWatchdog(config.watchdog_fire_timeout)
        self.state.watchdog = watchdog if config.use_watchdog else None
        self.open_storage = open_storage
        self.fencer: Fencer = fencer or ProcessFencer()
        self.notifier = notifier or Notifier()
        self._stop = trio.Event()
        self._maybe_changed = trio.Event()
        self._connections = 0
        self._refusals = RateLimitedLog()
        self.max_clients = config.max_clients
        self._spawn: Spawner = self._spawn_unavailable

    @staticmethod
    def _spawn_unavailable(what: str, task: object) -> None:
        raise RuntimeError(f"{what}: the daemon is not serving")

    def stop(self) -> None:
        """Stop serving, as SIGTERM does on a daemon with no lockspace (tests, embedding programs)."""
        self._stop.set()

    # -- start-up -------------------------------------------------------

    def _claimed(self) -> Claim:
        if self._claim is not None:
            return self._claim
        try:
            return claim(self.config.run_dir, self.config.uid, self.config.gid)
        except ClaimError as exc:
            raise DaemonError(str(exc)) from None

    # -- serving --------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        claimed = self._claimed()
        listener = claimed.sock
        listener.setblocking(False)
        nofile = raise_fd_limit()
        if not self.max_clients:
            self.max_clients = client_limit(nofile)
        log.info(
            "leased daemon started pid %d socket %s host name %s max_clients %d (RLIMIT_NOFILE %d)",
            os.getpid(),
            self.config.socket_path,
            self.config.our_host_name,
            self.max_clients,
            nofile,
        )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._spawn = nursery_spawner(nursery)
                nursery.start_soon(self._accept_loop, listener)
                nursery.start_soon(self._watch_signals)
                # The socket listens (connections queue in the backlog): only now may systemd start
                # the units ordered after us.
                self.notifier.ready(self.status_line())
                nursery.start_soon(self._report_status)
                task_status.started()
                await self._stop.wait()
                self.notifier.stopping()
                await self._shutdown()
                nursery.cancel_scope.cancel()
        finally:
            claimed.release()
            self.notifier.close()
            log.info("leased daemon stopped")

    def status_line(self) -> str:
        """The one line ``systemctl status`` shows: joined lockspaces and registered processes."""
        joined = sum(1 for ls in self.state.lockspaces if ls.state is LockspaceState.JOINED)
        clients = sum(1 for c in self.state.clients.values() if c.registered and not c.dead)
        return f"serving {joined} lockspaces, {clients} clients"

    async def _report_status(self) -> None:
        """Keep systemd's STATUS line current.

        Re-checked after every request and closed connection, and once a
        second for what background tasks change (an asynchronous join or
        removal, a failed lockspace); only a changed line is sent.
        """
        if not self.notifier.enabled:
            return
        while True:
            with trio.move_on_after(1):
                await self._maybe_changed.wait()
            self._maybe_changed = trio.Event()
            self.notifier.status(self.status_line())

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept connections for ever; neither a full fd table nor a flood of clients stops it.

        Accepts run back to back on the non-blocking listening socket while
        connections are queued, waiting for it to be readable only when
        there are none, and yielding every ``ACCEPT_BATCH`` so the new
        connections are served while a flood lasts.  At ``max_clients`` open
        connections a new one is logged and closed at once, so the
        descriptors the daemon needs for lockspaces and leases stay free.
        EMFILE/ENFILE (and ENOMEM/ENOBUFS) wait 100 ms and try again, as
        ``trio.serve_listeners`` does: closing connections frees
        descriptors, and the backlog holds new clients meanwhile.
        """
        accepted = 0
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                accepted = 0
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    return
                if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                    continue
                self._refusals.note(
                    "accept failed: %s (%d connections open, max_clients %d); retrying in 100 ms",
                    exc.strerror or exc,
                    self._connections,
                    self.max_clients,
                )
                accepted = 0
                await trio.sleep(0.1)
                continue
            if self._connections >= self.max_clients:
                self._refusals.note(
                    "connection refused: %d connections open, max_clients %d", self._connections, self.max_clients
                )
                sock.close()
            else:
                sock.setblocking(False)
                self._connections += 1
                client, peer_pid = self._new_client(sock)
                self._register_waiting(client, sock, peer_pid)
                self.nursery.start_soon(self._connection, sock, client, peer_pid)
            accepted += 1
            if accepted >= ACCEPT_BATCH:
                accepted = 0
                await trio.lowlevel.checkpoint()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if self.state.lockspaces:
                    log.warning("signal %d: ignore shutdown, lockspace exists (use client shutdown -f 1)", signum)
                    continue
                log.info("signal %d: shutting down", signum)
                self._stop.set()

    async def _shutdown(self) -> None:
        """Forced shutdown: SIGKILL lease holders, leave every lockspace."""
        with trio.CancelScope(shield=True):
            for lockspace in list(self.state.lockspaces):
                await remove_lockspace(self.state, lockspace, self.fencer)

    # -- one connection ---------------------------------------------------
    #
    # The release rule.  Releasing a lease on disk lets another host take it, so the daemon
    # releases a registered process's leases only when that process is known to be gone:
    #
    # * its registered connection ended by the peer (EOF, or a reset): the process closed it,
    #   which for sanlock's clients means it exited (wire spec §7.2); or
    # * its exit was seen through its pidfd.
    #
    # Nothing else releases: not an exception in leased's own code (the connection is closed, its
    # process stays registered and its leases held until the pidfd says it exited), not a
    # cancellation (a stopping or crashing daemon leaves the leases on disk, owned by a host id
    # nobody renews any more, for other hosts to time out), not a refused or broken message.
    # A forced shutdown stops the holders first (remove_lockspace's SIGKILL) and releases what
    # their EOFs then show gone.

    def _new_client(self, sock: socket.socket) -> tuple[ClientState, int]:
        """The client record of a connection just accepted, and its peer's pid (-1 when unknown)."""
        try:
            pid, uid, gid = peer_credentials(sock)
        except OSError:
            pid, uid, gid = -1, -1, -1
        client = ClientState(uid=uid, gid=gid, fd=sock.fileno())
        self.state.clients[client.ci] = client
        return client, pid

    def _register_waiting(self, client: ClientState, sock: socket.socket, peer_pid: int) -> None:
        """Register now, in accept order, a connection whose REGISTER is already waiting in it.

        libsanlock's register() returns once its REGISTER is sent, and a
        program may then at once tell another process its pid, which acquires
        on its behalf.  sanlock registers in the order connections came; here
        each connection is served by its own task, and trio runs tasks made
        ready together in no fixed order, so a daemon that fell behind could
        serve the second process's request before the first one's REGISTER:
        -ESRCH (found in CI under load).  Taking a waiting REGISTER here,
        before the next connection is accepted, restores sanlock's order; the
        connection's task then finds it registered and skips its REGISTER.
        """
        if peer_pid <= 0:
            return
        try:
            head = sock.recv(HEADER_SIZE, socket.MSG_PEEK)
        except OSError:
            return
        if len(head) < HEADER_SIZE:
            return
        header = Header.decode(head)
        if header.cmd != Cmd.REGISTER or header_problem(header) is not None:
            return
        if self._take_identity(client, peer_pid):
            mark_registered(client)

    def _take_identity(self, client: ClientState, peer_pid: int) -> bool:
        """A REGISTER's first step: the peer's pid and pidfd; False (logged) when max_clients are registered."""
        registered = sum(1 for c in self.state.clients.values() if c.registered and not c.dead)
        if registered >= self.max_clients:
            log.error(
                "register ci %d pid %d refused: %d processes registered, max_clients %d",
                client.ci,
                peer_pid,
                registered,
                self.max_clients,
            )
            return False
        client.pid = peer_pid
        if client.pidfd < 0 and peer_pid > 0:
            try:
                client.pidfd = os.pidfd_open(peer_pid)
            except OSError as exc:
                log.warning("pidfd_open %d: %s; signals will use the pid", peer_pid, exc)
        return True

    async def _connection(self, sock: socket.socket, client: ClientState, pid: int) -> None:
        """One client's connection, inside its own boundary: whatever happens ends only this connection."""
        end = ConnectionEnd.FAILED
        try:
            with sock:
                end = ConnectionEnd.CANCELLED
                end = await self._serve_client(ClientSocket(sock), client, pid)
        except Exception:
            if end is ConnectionEnd.CANCELLED:
                end = ConnectionEnd.FAILED
            log.exception("client connection ci %d pid %d: internal error; connection closed", client.ci, client.pid)
        finally:
            self._connections -= 1
            if client.tokens:
                with trio.CancelScope(shield=True):  # releasing them waits on the disk: never cut short
                    await self._connection_ended(client, end)
            else:
                await self._connection_ended(client, end)  # nothing to release: it never waits
            self._maybe_changed.set()
            if self.state.shutting_down:
                self._stop.set()

    async def _connection_ended(self, client: ClientState, end: ConnectionEnd) -> None:
        """Apply the release rule to a connection that ended (``end`` says how)."""
        if client.registered and not client.dead and end is not ConnectionEnd.PEER_CLOSED:
            if end is ConnectionEnd.CANCELLED:
                if client.tokens:
                    log.warning(
                        "daemon stopping: pid %d still runs: its %d leases stay on disk", client.pid, len(client.tokens)
                    )
            else:
                # Not known gone: keep it registered, its leases held, until its exit shows on the pidfd.
                self._spawn(f"watch pid {client.pid}", partial(self._release_at_exit, client))
                return
        elif client.registered and not client.dead:
            debug(log, "client_pid_dead ci %d pid %d", client.ci, client.pid)
            await release_client(self.state, client)
        self._forget(client)

    def _forget(self, client: ClientState) -> None:
        client.dead = True
        if client.pidfd >= 0:
            os.close(client.pidfd)
            client.pidfd = -1
        self.state.clients.pop(client.ci, None)

    async def _release_at_exit(self, client: ClientState) -> None:
        """A registered process whose connection broke: release its leases once it has exited."""
        if client.pidfd < 0:
            log.critical(
                "pid %d: connection lost and no pidfd to see its exit: its %d leases stay held "
                "(release them with -p %d, or stop the process)",
                client.pid,
                len(client.tokens),
                client.pid,
            )
            return
        log.error(
            "pid %d: connection lost: keeping its %d leases until the process exits", client.pid, len(client.tokens)
        )
        try:
            await trio.lowlevel.wait_readable(client.pidfd)
            log.info("pid %d exited after its connection was lost: releasing its leases", client.pid)
            with trio.CancelScope(shield=True):
                await release_client(self.state, client)
        finally:
            self._forget(client)
            self._maybe_changed.set()

    async def _serve_client(self, conn: ClientSocket, client: ClientState, peer_pid: int) -> ConnectionEnd:
        """Read and answer requests until the peer closes or a close rule ends the connection."""
        reader = MessageReader()
        while True:
            try:
                data = await conn.receive(max(1, min(RECV_CHUNK, reader.room())))
            except PeerGone:
                return ConnectionEnd.PEER_CLOSED  # ECONNRESET: the peer closed with our reply unread
            if not data:
                bad = reader.eof()
                if bad is not None:
                    self._log_bad(client, bad)
                return ConnectionEnd.PEER_CLOSED
            reader.feed(data)
            while (event := reader.next_event()) is not None:
                if isinstance(event, BadMessage):
                    self._log_bad(client, event)
                    if event.rc is not None and event.header is not None:
                        sent = await self._send(conn, event.header.reply(event.rc).encode())
                        if not sent:
                            return ConnectionEnd.PEER_CLOSED
                else:
                    end = await self._request(conn, client, peer_pid, event)
                    self._maybe_changed.set()
                    if end is not None:
                        return end
                await conn.share()
            if self.state.shutting_down:
                self._stop.set()

    @staticmethod
    async def _send(conn: ClientSocket, data: bytes) -> bool:
        """Send a reply; False when the peer has closed (EPIPE, ECONNRESET), the only way a send may fail."""
        try:
            await conn.send_all(data)
        except PeerGone:
            return False
        return True

    async def _request(
        self, conn: ClientSocket, client: ClientState, peer_pid: int, request: Request
    ) -> ConnectionEnd | None:
        """Run one request; returns how the connection ends, or None while it stays open."""
        header = request.header
        if client.restrict & RESTRICT_ALL:
            log.error(
                "client connection ci %d pid %d cmd %d len %d restrict all",
                client.ci,
                client.pid,
                header.cmd,
                header.length,
            )
            return None
        if header.cmd == Cmd.REGISTER and client.registered:
            return None  # registered already (at accept, or twice): sanlock does nothing more, and never replies
        if header.cmd == Cmd.REGISTER:
            if not self._take_identity(client, peer_pid):
                return ConnectionEnd.CLOSED_HERE
        elif not client.registered:
            client.name = Cmd(header.cmd).name.lower().encode()  # as sanlock names one-shot clients in status
        handler = HANDLERS.get(header.cmd, cmd_unsupported)
        command = Command(self.state, client, header, request.body, self._spawn, self.open_storage, self.fencer)
        try:
            reply = await handler(command)
        except LeaseError as exc:
            log.error("%s ci %d pid %d: %s", command.name, client.ci, client.pid, exc)
            reply = command.reply(exc.rc)
        except MemoryError as exc:
            # Handlers fail before their commit point, so the client keeps what it had; it may retry.
            log.error("%s ci %d pid %d: out of memory: %s", command.name, client.ci, client.pid, exc)
            reply = command.reply(ResultCode.ENOMEM)
        except Exception:
            # A handler bug must not take the connection (and a registered client's leases) down.
            log.exception("%s ci %d pid %d: internal error", command.name, client.ci, client.pid)
            reply = command.reply(-1)
        if reply.data and not await self._send(conn, reply.data):
            return ConnectionEnd.PEER_CLOSED
        if reply.channel is not None:
            return await self._event_channel(conn, client, reply.channel)
        if reply.close or header.cmd in INLINE_CLOSERS:
            if client.registered:
                log.debug("client_free ci %d live pid %d: keep registered connection", client.ci, client.pid)
                return None
            return ConnectionEnd.CLOSED_HERE
        return None

    async def _event_channel(
        self, conn: ClientSocket, client: ClientState, open_channel: Callable[[socket.socket], EventChannel]
    ) -> ConnectionEnd | None:
        """REG_EVENT, LEASED_HEALTH: from now on the daemon only writes records on this connection.

        The channel ends at END_EVENT, on a failed write, or when the peer
        closes (watched here, so a closed channel frees its slot at once and
        a registered client's exit is not missed).  A registered connection
        is served again after END_EVENT; any other connection closes.
        """
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.sock.fileno()))
        channel = open_channel(raw)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_channel, channel)
                await channel.ended.wait()
                nursery.cancel_scope.cancel()
        finally:
            raw.close()
        if channel.peer_closed:
            return ConnectionEnd.PEER_CLOSED
        return None if client.registered else ConnectionEnd.CLOSED_HERE

    @staticmethod
    async def _watch_channel(channel: EventChannel) -> None:
        while not channel.ended.is_set():
            await trio.lowlevel.wait_readable(channel.sock)
            channel.poll()

    def _log_bad(self, client: ClientState, bad: BadMessage) -> None:
        cmd = bad.header.cmd if bad.header else 0
        length = bad.header.length if bad.header else 0
        log.error(
            "client connection ci %d pid %d cmd %d len %d: %s (discarded %d bytes)",
            client.ci,
            client.pid,
            cmd,
            length,
            bad.reason,
            bad.discarded,
        )


async def run_daemon(
    config: DaemonConfig,
    log_settings: LogSettings | None = None,
    *,
    notifier: Notifier | None = None,
    notes: Sequence[tuple[int, str]] = (),
    faultpoints: FaultPoints | None = None,
    claim: Claim | None = None,
) -> None:
    """Run the daemon with its log sinks; ``notes`` (level, line) are logged once the sinks are up.

    ``faultpoints`` is for the test-only entry point (leased.torture.armed_daemon).
    """
    daemon = Daemon(config, notifier=notifier, faultpoints=faultpoints, claim=claim)
    ring = LogRing(config.log_ring_bytes)
    daemon.state.log_ring = ring
    try:
        setup_logging(log_settings or LogSettings(foreground=True), ring)
    except LogSetupError as exc:
        raise DaemonError(str(exc)) from None
    for level, note in notes:
        log.log(level, "%s", note)
    use_io_engine(config.io_engine)
    log.info("lease I/O through %s (io_engine %s)", io_engine_in_use(), config.io_engine)
    if not keep_freed_memory():
        log.info("no glibc mallopt: every large read result is fresh memory from the kernel")
    if faultpoints is not None and faultpoints.armed:
        log.warning("TEST FAULT POINTS ARMED: allocation failures will be injected: %s", faultpoints.armed)
    await daemon.serve()
