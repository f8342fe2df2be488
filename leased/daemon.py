"""The leased daemon: a trio server on sanlock's Unix socket.

This is the thin I/O shell around the sans-I/O parts: it binds
``$SANLOCK_RUN_DIR/sanlock.sock`` (mode 0660, owner from ``-U/-G``), takes a
lock on ``sanlock.pid`` so only one daemon serves a run directory, accepts
connections, reads each peer's credentials (``SO_PEERCRED``), feeds each
connection's :class:`~leased.connection.MessageReader` and hands each framed
request to its handler (:mod:`leased.commands`).  A connection is served
inline from the idle watch (:mod:`leased.socket_watch`) while its commands
are answered from memory, and by a task of its own from its first command
that may wait (see "Where a connection is served" below).

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
  it a new connection is logged and closed), accepting that waits out
  EMFILE, a bounded read buffer per connection (the reader's), at most 32
  event channels per lockspace, and a bounded renewal history;
* nothing blocks the event loop: disk I/O runs through io_uring or worker
  threads, inline serving never waits (a reply the socket will not take
  goes to a task), and a slow or silent client stalls only its own task;
* **fair turns on a fast path**: one accept per report of the watch, a
  connection that sends more than ``FAIR_SHARE`` requests at once gets its
  own task, and a task's raw non-blocking socket
  (:class:`~leased.client_socket.ClientSocket`) reaches trio's scheduler
  when it would block and every ``FAIR_SHARE`` operations: a client that
  never stops sending starves no other
  (docs/architecture.md, "The fast path").
"""

from __future__ import annotations

import _socket
import contextlib
import enum
import errno
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from leased.client_socket import (
    FAIR_SHARE,
    ClientSocket,
    Connection,
    ConnectionEnd,
    PeerGone,
    peer_credentials,
    peer_pidfd,
    peer_pidfd_supported,
)
from leased.commands import HANDLERS, IMMEDIATE_HANDLERS, INLINE_CLOSERS, Command, Reply, cmd_unsupported
from leased.connection import BadMessage, Request
from leased.errors import LeaseError, ResultCode
from leased.faultpoints import FaultPoints
from leased.fencing import Fencer, ProcessFencer
from leased.lifecycle import remove_lockspace
from leased.listener import Claim, ClaimError, claim
from leased.lockspace import EventChannel, LockspaceState
from leased.logsetup import LogRing, LogSettings, LogSetupError, debug, setup_logging
from leased.notify import Notifier
from leased.protocol import RESTRICT_ALL, Cmd, Header
from leased.socket_watch import SocketWatch
from leased.state import ClientState, DaemonConfig, DaemonState, client_limit
from leased.storage import FileStorage, Storage, io_engine_in_use, keep_freed_memory, use_io_engine
from leased.tasks import Spawner, nursery_spawner
from leased.transactions import release_client
from leased.watchdog import Watchdog, WdmdWatchdog

log = logging.getLogger(__name__)

RECV_CHUNK = 65536

BUSY_POLL_ROUNDS = 16
"""Rounds of inline serving one wake-up of the idle watch may run through busy polls, at most."""

_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
_IGNORED_ACCEPT_ERRNOS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})
"""accept() failures about the one connection being accepted, not the listener (as trio's SocketListener)."""


class DaemonError(Exception):
    """The daemon cannot start (socket, lock file, permissions): one line for the operator."""


@dataclass(slots=True)
class Promotion:
    """A connection leaves inline serving for a task of its own; the task starts where inline serving stopped."""

    first: Request | None = None
    """A command that may wait, read but not yet run."""
    unsent: bytes = b""
    """The rest of a reply the socket would not take at once."""
    end: ConnectionEnd | None = None
    """How the connection ends once ``unsent`` is sent (the reply's close rule)."""


class Admission(enum.Enum):
    """Whether a request runs (see ``Daemon._admit``)."""

    RUN = "run it"
    SKIP = "ignore it, no reply"
    CLOSE = "close the connection"


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
        self._watch: SocketWatch[Connection | socket.socket]
        """The idle connections, served inline (made by ``serve``)."""

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
            "leased daemon started pid %d socket %s host name %s max_clients %d (RLIMIT_NOFILE %d) busy_poll %d us",
            os.getpid(),
            self.config.socket_path,
            self.config.our_host_name,
            self.max_clients,
            nofile,
            self.config.busy_poll,
        )
        try:
            self._watch = SocketWatch()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._spawn = nursery_spawner(nursery)
                nursery.start_soon(self._serve_idle, listener)
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

    def _note_change(self) -> None:
        """Something the STATUS line shows may have changed (only systemd reads it: no wake-up without it)."""
        if self.notifier.enabled:
            self._maybe_changed.set()

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

    def _accept_waiting(self, listener: socket.socket) -> None:
        """Accept one connection queued on the listener, and serve it inline at once.

        One per report of the (level-triggered) watch, which reports the
        listener again in its next round while connections are queued: a
        client that connects, asks and closes costs no accept that fails
        with EAGAIN, and a flood of connections takes its turns with the
        connections already open.
        Neither a full fd table nor a flood stops the daemon accepting: at
        ``max_clients`` open connections a new one is logged and closed at
        once, so the descriptors the daemon needs for lockspaces and leases
        stay free.  EMFILE/ENFILE (and ENOMEM/ENOBUFS) take the listener out
        of the idle watch for 100 ms, as ``trio.serve_listeners`` waits:
        closing connections frees descriptors, and the backlog holds new
        clients meanwhile.
        """
        try:
            # The C socket type on the raw descriptor: socket.socket's accept() adds Python-level
            # work (address family and type as enums, __init__) that a short-lived client pays.
            fd, _ = listener._accept()  # type: ignore[attr-defined]  # the C method accept() wraps
            sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                self._watch.remove(listener.fileno())
                return
            if exc.errno in _IGNORED_ACCEPT_ERRNOS:
                return
            self._refusals.note(
                "accept failed: %s (%d connections open, max_clients %d); retrying in 100 ms",
                exc.strerror or exc,
                self._connections,
                self.max_clients,
            )
            self._watch.remove(listener.fileno())
            self.nursery.start_soon(self._accept_later, listener)
            return
        if self._connections >= self.max_clients:
            self._refusals.note(
                "connection refused: %d connections open, max_clients %d", self._connections, self.max_clients
            )
            sock.close()
        else:
            try:
                conn = self._new_connection(sock)
            except Exception:
                sock.close()
                raise
            self._connections += 1
            self._serve_inline(conn, watched=False)

    async def _accept_later(self, listener: socket.socket) -> None:
        """The listener back in the idle watch after an accept failure's 100 ms."""
        await trio.sleep(0.1)
        self._watch.add(listener.fileno(), listener)

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
    #
    # Where a connection is served.  A connection starts in the idle watch (``_serve_idle``): what
    # it sends is read and answered there, inline, as long as every command is an immediate one
    # (answered from memory: REGISTER, INQUIRE, STATUS, ...), so a short-lived client costs no
    # task at all.  The first command that may wait (ACQUIRE, ADD_LOCKSPACE, a channel), a reply
    # the socket will not take at once, or more than a fair share of requests at once promotes it:
    # it leaves the watch for a task of its own (``_connection``), which starts exactly where the
    # inline serving stopped.  Promoted for a command that may wait, it goes back into the watch
    # once that command is answered and nothing more is waiting (the task lives only while a
    # command waits); promoted because it kept sending or does not read its replies, it keeps the
    # task.  Both ways end in ``_settle``.

    def _new_connection(self, sock: _socket.socket) -> Connection:
        """The connection just accepted, with its client record and its peer's pid (-1 when unknown)."""
        try:
            pid, uid, gid = peer_credentials(sock)
        except OSError:
            pid, uid, gid = -1, -1, -1
        client = ClientState(uid=uid, gid=gid, fd=sock.fileno())
        self.state.clients[client.ci] = client
        return Connection(sock, client, pid)

    def _take_identity(self, conn: Connection) -> bool:
        """A REGISTER's first step: the peer's pid and pidfd; False (logged) when max_clients are registered.

        Where the kernel names the peer by a pidfd (SO_PEERPIDFD, Linux 6.5)
        the pidfd is opened only when first used (``ClientState.pidfd``):
        it names the process that connected even if that pid has since been
        reused.  Elsewhere it is opened from the pid here, at once.
        """
        client, peer_pid = conn.client, conn.peer_pid
        clients = self.state.clients
        # This client is in the table unregistered, so fewer than max_clients are registered
        # unless the table holds more than max_clients: count only then.
        registered = len(clients) - 1
        if registered >= self.max_clients:
            registered = sum(1 for c in clients.values() if c.registered and not c.dead)
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
            if peer_pidfd_supported():
                client.pidfd_source = partial(peer_pidfd, conn.sock, peer_pid)
            else:
                try:
                    client.pidfd = os.pidfd_open(peer_pid)
                except OSError as exc:
                    log.warning("pidfd_open %d: %s; signals will use the pid", peer_pid, exc)
        return True

    # -- served inline, from the idle watch

    async def _serve_idle(self, listener: socket.socket) -> None:
        """Accept connections and serve the idle ones as their input arrives; at the end, close them (cancelled).

        The listener is a member of the idle watch too: one wait of this
        task covers new connections and input on idle ones alike.
        """
        watch = self._watch
        watch.add(listener.fileno(), listener)
        busy_poll = self.config.busy_poll / 1e6
        try:
            while True:
                members = await watch.ready()
                for _ in range(BUSY_POLL_ROUNDS):
                    for member in members:
                        self._serve_member(member)
                    if not busy_poll or trio.lowlevel.current_statistics().tasks_runnable:
                        break
                    members = watch.ready_within(busy_poll)
                    if not members:
                        break
        finally:
            for member in watch.take_all():
                if isinstance(member, Connection):
                    self._close_inline(member, ConnectionEnd.CANCELLED)
            watch.close()

    def _serve_member(self, member: Connection | socket.socket) -> None:
        """One ready member of the watch: accept on the listener, serve a connection; a bug ends only that one.

        ``_serve_inline`` is each connection's boundary; this one catches
        what breaks around it (watching, closing), so the one task that
        serves every idle connection never dies of one.
        """
        try:
            if isinstance(member, Connection):
                self._serve_inline(member, watched=True)
            else:
                self._accept_waiting(member)
        except Exception:
            if not isinstance(member, Connection):
                log.exception("accepting a connection: internal error")
                return
            log.exception(
                "client connection ci %d: internal error in the idle watch; connection closed", member.client.ci
            )
            with contextlib.suppress(Exception):
                self._watch.remove(member.fd)
            with contextlib.suppress(Exception):
                self._close_inline(member, ConnectionEnd.FAILED)

    def _serve_inline(self, conn: Connection, *, watched: bool) -> None:
        """Serve what ``conn`` has sent, inside the connection's boundary; then watch, promote or close it.

        Accepted connections come here first (``watched`` False), which also
        takes a REGISTER already waiting in accept order: libsanlock's
        register() returns once its REGISTER is sent, and a program may then
        at once tell another process its pid, which acquires on its behalf.
        """
        try:
            outcome = self._answer_waiting(conn)
        except Exception:
            log.exception(
                "client connection ci %d pid %d: internal error; connection closed", conn.client.ci, conn.client.pid
            )
            outcome = ConnectionEnd.FAILED
        if outcome is None:
            if not watched:
                try:
                    self._watch.add(conn.fd, conn)
                except OSError as exc:  # no room in the epoll set (ENOMEM, max_user_watches): a task waits instead
                    log.warning("ci %d: idle watch full (%s): served by its own task", conn.client.ci, exc)
                    self.nursery.start_soon(self._connection, conn, Promotion())
            return
        if isinstance(outcome, Promotion):
            if watched:
                self._watch.remove(conn.fd)
            self.nursery.start_soon(self._connection, conn, outcome)
        else:
            if watched:
                self._watch.forget_closing(conn.fd)
            self._close_inline(conn, outcome)

    def _answer_waiting(self, conn: Connection) -> ConnectionEnd | Promotion | None:
        """Read and answer what has arrived, without waiting; None when the connection is idle again.

        One receive per call unless it filled what was asked: the watch is
        level-triggered, so input left in the socket is reported again, and
        an idle socket costs no receive that would fail with EAGAIN.

        Requests are read with MSG_PEEK, answered, and only then taken off
        the socket.  Taking bytes off a Unix socket frees them, and freeing
        wakes whatever waits on the sender's socket, which for a client
        blocked on its reply is a wake-up for nothing: a cross-CPU wake-up
        (costly on a virtual machine) in the middle of every request.
        Answered first, the client is woken once, by its reply.
        """
        reader, client = conn.reader, conn.client
        handled = 0
        drained = False
        peeked = 0
        try:
            while True:
                while (event := reader.next_event()) is not None:
                    handled += 1
                    if isinstance(event, BadMessage):
                        self._log_bad(client, event)
                        if event.rc is not None and event.header is not None:
                            unsent = self._send_now(conn, event.header.reply(event.rc).encode())
                            if unsent is not None:
                                return unsent
                    else:
                        outcome = self._request_now(conn, event)
                        if outcome is not None:
                            return outcome
                    if self.state.shutting_down:
                        self._stop.set()
                    if handled >= FAIR_SHARE:
                        return Promotion()  # a client that keeps sending is served by its own task, in fair turns
                if drained:
                    return None
                if peeked:
                    self._consume(conn, peeked)
                    peeked = 0
                asked = max(1, min(RECV_CHUNK, reader.room()))
                try:
                    data = conn.sock.recv(asked, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return None
                except ConnectionError:
                    return ConnectionEnd.PEER_CLOSED  # ECONNRESET: the peer closed with our reply unread
                if not data:
                    return self._peer_closed(conn)
                reader.feed(data)
                peeked = len(data)
                drained = len(data) < asked
        finally:
            if peeked:
                self._consume(conn, peeked)

    def _peer_closed(self, conn: Connection) -> ConnectionEnd:
        """EOF: what the reader still held is logged (a truncated request owes no reply), and the peer is gone."""
        bad = conn.reader.eof()
        if bad is not None:
            self._log_bad(conn.client, bad)
        return ConnectionEnd.PEER_CLOSED

    @staticmethod
    def _consume(conn: Connection, count: int) -> None:
        """Take the ``count`` bytes already read with MSG_PEEK off the socket."""
        taken = len(conn.sock.recv(count, socket.MSG_DONTWAIT))
        if taken != count:  # only this task reads the socket: the bytes peeked are there
            raise RuntimeError(f"{taken} of {count} peeked bytes taken")

    def _send_now(self, conn: Connection, data: bytes) -> ConnectionEnd | Promotion | None:
        """Send a reply without waiting; what the socket will not take now makes the connection a task's."""
        try:
            sent = conn.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            return ConnectionEnd.PEER_CLOSED
        if sent == len(data):
            return None
        return Promotion(unsent=data[sent:])

    def _request_now(self, conn: Connection, request: Request) -> ConnectionEnd | Promotion | None:
        """Run an immediate command and send its reply; a command that may wait promotes the connection."""
        header = request.header
        if header.cmd in HANDLERS:
            return Promotion(first=request)
        handler = IMMEDIATE_HANDLERS.get(header.cmd, cmd_unsupported)
        admission = self._admit(conn, header)
        if admission is not Admission.RUN:
            return ConnectionEnd.CLOSED_HERE if admission is Admission.CLOSE else None
        command = self._command(conn.client, request)
        try:
            reply = handler(command)
        except Exception as exc:
            reply = self._reply_to_failure(command, exc)
        self._note_change()
        end = self._end_after(conn.client, header, reply)
        if reply.data:
            unsent = self._send_now(conn, reply.data)
            if isinstance(unsent, Promotion):
                unsent.end = end
            if unsent is not None:
                return unsent
        return end

    def _close_inline(self, conn: Connection, end: ConnectionEnd) -> None:
        """Close a connection that has no task, and apply the release rule (a disk release gets a task)."""
        self._before_close(conn.client, end)
        conn.sock.close()
        self._connections -= 1
        client = conn.client
        if not self._settle(client, end):
            self._spawn(f"release pid {client.pid}", partial(self._release_closed, client))
        self._note_change()
        if self.state.shutting_down:
            self._stop.set()

    async def _release_closed(self, client: ClientState) -> None:
        with trio.CancelScope(shield=True):  # releasing them waits on the disk: never cut short
            await release_client(self.state, client)
        self._forget(client)

    # -- served by a task of its own

    async def _connection(self, conn: Connection, promotion: Promotion) -> None:
        """A promoted connection, inside its own boundary: whatever happens ends only this connection.

        Promoted for a command that may wait, the connection goes back into
        the idle watch once that command is answered and nothing more is
        waiting in its reader: the task lives only while a command waits.
        A connection promoted because it kept sending, or because it does
        not read its replies, keeps its task.
        """
        client = conn.client
        end = ConnectionEnd.FAILED
        parked = False
        try:
            try:
                end = ConnectionEnd.CANCELLED
                conn.sock.setblocking(False)  # served inline it was read and written with MSG_DONTWAIT
                stream = ClientSocket(conn.sock)
                ended = await self._serve_promoted(stream, conn, promotion)
                if ended is None:
                    parked = self._park(conn)
                    if parked:
                        return
                    ended = await self._serve_client(stream, conn, park_when_idle=False)
                end = ended if ended is not None else ConnectionEnd.FAILED  # never None without parking
            finally:
                if not parked:
                    self._before_close(client, end)
                    conn.sock.close()
        except Exception:
            if end is ConnectionEnd.CANCELLED:
                end = ConnectionEnd.FAILED
            log.exception("client connection ci %d pid %d: internal error; connection closed", client.ci, client.pid)
        finally:
            if not parked:
                self._connections -= 1
                if not self._settle(client, end):
                    await self._release_closed(client)
            self._note_change()
            if self.state.shutting_down:
                self._stop.set()

    def _park(self, conn: Connection) -> bool:
        """Put a promoted connection back into the idle watch; False (it keeps its task) when there is no room."""
        try:
            self._watch.add(conn.fd, conn)
        except OSError as exc:
            log.warning("ci %d: idle watch full (%s): kept by its own task", conn.client.ci, exc)
            return False
        return True

    async def _serve_promoted(
        self, stream: ClientSocket, conn: Connection, promotion: Promotion
    ) -> ConnectionEnd | None:
        """Carry on where inline serving stopped: the unsent reply, its close, the waiting command; then serve.

        None: the waiting command is answered and the connection is idle,
        ready to go back into the watch.
        """
        if promotion.unsent and not await self._send(stream, promotion.unsent):
            return ConnectionEnd.PEER_CLOSED
        if promotion.end is not None:
            return promotion.end
        if promotion.first is not None:
            end = await self._request(stream, conn, promotion.first)
            self._note_change()
            if end is not None:
                return end
        return await self._serve_client(stream, conn, park_when_idle=promotion.first is not None)

    async def _serve_client(
        self, stream: ClientSocket, conn: Connection, *, park_when_idle: bool
    ) -> ConnectionEnd | None:
        """Read and answer requests until the peer closes or a close rule ends the connection.

        With ``park_when_idle``, return None as soon as every request read
        is answered (the connection is idle: the watch can take it back).
        """
        reader, client = conn.reader, conn.client
        while True:
            while (event := reader.next_event()) is not None:
                if isinstance(event, BadMessage):
                    self._log_bad(client, event)
                    if event.rc is not None and event.header is not None:
                        sent = await self._send(stream, event.header.reply(event.rc).encode())
                        if not sent:
                            return ConnectionEnd.PEER_CLOSED
                else:
                    end = await self._request(stream, conn, event)
                    self._note_change()
                    if end is not None:
                        return end
                await stream.share()
            if self.state.shutting_down:
                self._stop.set()
            if park_when_idle:
                return None
            try:
                data = await stream.receive(max(1, min(RECV_CHUNK, reader.room())))
            except PeerGone:
                return ConnectionEnd.PEER_CLOSED  # ECONNRESET: the peer closed with our reply unread
            if not data:
                return self._peer_closed(conn)
            reader.feed(data)

    @staticmethod
    async def _send(stream: ClientSocket, data: bytes) -> bool:
        """Send a reply; False when the peer has closed (EPIPE, ECONNRESET), the only way a send may fail."""
        try:
            await stream.send_all(data)
        except PeerGone:
            return False
        return True

    async def _request(self, stream: ClientSocket, conn: Connection, request: Request) -> ConnectionEnd | None:
        """Run one request; returns how the connection ends, or None while it stays open."""
        header, client = request.header, conn.client
        admission = self._admit(conn, header)
        if admission is not Admission.RUN:
            return ConnectionEnd.CLOSED_HERE if admission is Admission.CLOSE else None
        command = self._command(client, request)
        try:
            handler = HANDLERS.get(header.cmd)
            if handler is None:
                reply = IMMEDIATE_HANDLERS.get(header.cmd, cmd_unsupported)(command)
            else:
                reply = await handler(command)
        except Exception as exc:
            reply = self._reply_to_failure(command, exc)
        if reply.data and not await self._send(stream, reply.data):
            return ConnectionEnd.PEER_CLOSED
        if reply.channel is not None:
            return await self._event_channel(stream, client, reply.channel)
        return self._end_after(client, header, reply)

    # -- what both ways share

    def _admit(self, conn: Connection, header: Header) -> Admission:
        """Whether a request runs: a restricted client's, a second REGISTER, a REGISTER past max_clients do not."""
        client = conn.client
        if client.restrict & RESTRICT_ALL:
            log.error(
                "client connection ci %d pid %d cmd %d len %d restrict all",
                client.ci,
                client.pid,
                header.cmd,
                header.length,
            )
            return Admission.SKIP
        if header.cmd == Cmd.REGISTER:
            if client.registered:
                return Admission.SKIP  # registered already: sanlock does nothing more, and never replies
            if not self._take_identity(conn):
                return Admission.CLOSE
        elif not client.registered:
            client.name = Cmd(header.cmd).name.lower().encode()  # as sanlock names one-shot clients in status
        return Admission.RUN

    def _command(self, client: ClientState, request: Request) -> Command:
        return Command(self.state, client, request.header, request.body, self._spawn, self.open_storage, self.fencer)

    @staticmethod
    def _reply_to_failure(command: Command, exc: Exception) -> Reply:
        """The reply to a handler that raised (called in its ``except``): the client keeps what it had."""
        client = command.client
        if isinstance(exc, LeaseError):
            log.error("%s ci %d pid %d: %s", command.name, client.ci, client.pid, exc)
            return command.reply(exc.rc)
        if isinstance(exc, MemoryError):
            # Handlers fail before their commit point, so the client keeps what it had; it may retry.
            log.error("%s ci %d pid %d: out of memory: %s", command.name, client.ci, client.pid, exc)
            return command.reply(ResultCode.ENOMEM)
        # A handler bug must not take the connection (and a registered client's leases) down.
        log.exception("%s ci %d pid %d: internal error", command.name, client.ci, client.pid)
        return command.reply(-1)

    @staticmethod
    def _end_after(client: ClientState, header: Header, reply: Reply) -> ConnectionEnd | None:
        """Whether the connection closes after this reply: sanlock's close rules, never a registered one."""
        if reply.close or header.cmd in INLINE_CLOSERS:
            if client.registered:
                log.debug("client_free ci %d live pid %d: keep registered connection", client.ci, client.pid)
                return None
            return ConnectionEnd.CLOSED_HERE
        return None

    @staticmethod
    def _before_close(client: ClientState, end: ConnectionEnd) -> None:
        """A registered process kept after its connection ends is watched through its pidfd: open it now.

        Its connection's socket is what names the process (SO_PEERPIDFD);
        once closed it cannot be asked.
        """
        if client.registered and not client.dead and end in (ConnectionEnd.FAILED, ConnectionEnd.CLOSED_HERE):
            client.open_pidfd()

    def _settle(self, client: ClientState, end: ConnectionEnd) -> bool:
        """Apply the release rule to a connection that ended (``end`` says how).

        False when the client's leases must first be released on disk
        (:meth:`_release_closed` does that, and forgets it).
        """
        if client.registered and not client.dead and end is not ConnectionEnd.PEER_CLOSED:
            if end is ConnectionEnd.CANCELLED:
                if client.tokens:
                    log.warning(
                        "daemon stopping: pid %d still runs: its %d leases stay on disk", client.pid, len(client.tokens)
                    )
            else:
                # Not known gone: keep it registered, its leases held, until its exit shows on the pidfd.
                self._spawn(f"watch pid {client.pid}", partial(self._release_at_exit, client))
                return True
        elif client.registered and not client.dead:
            debug(log, "client_pid_dead ci %d pid %d", client.ci, client.pid)
            if client.tokens:
                return False
            client.dead = True
        self._forget(client)
        return True

    def _forget(self, client: ClientState) -> None:
        client.dead = True
        client.pidfd_source = None  # not opened just to be closed
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
            self._note_change()

    async def _event_channel(
        self, stream: ClientSocket, client: ClientState, open_channel: Callable[[socket.socket], EventChannel]
    ) -> ConnectionEnd | None:
        """REG_EVENT, LEASED_HEALTH: from now on the daemon only writes records on this connection.

        The channel ends at END_EVENT, on a failed write, or when the peer
        closes (watched here, so a closed channel frees its slot at once and
        a registered client's exit is not missed).  A registered connection
        is served again after END_EVENT; any other connection closes.
        """
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(stream.sock.fileno()))
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
