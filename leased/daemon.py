"""The leased daemon: a trio server on sanlock's Unix socket.

This is the thin I/O shell around the sans-I/O parts: it binds
``$SANLOCK_RUN_DIR/sanlock.sock`` (mode 0660, owner from ``-U/-G``), takes a
lock on ``sanlock.pid`` so only one daemon serves a run directory, accepts
connections, reads each peer's credentials (``SO_PEERCRED``), and runs one
task per connection that feeds a :class:`~leased.connection.MessageReader`
and hands each framed request to its handler (:mod:`leased.commands`).

What it promises:

* a bad message is logged (connection id, pid, command, what was wrong) and
  otherwise ignored: the connection stays open and no lease is dropped for
  it; the reader resynchronises on the next valid header;
* a registered connection that closes means its process exited: its leases
  are released on disk (shielded from cancellation, so shutdown cannot cut
  a release in half);
* nothing blocks the event loop: disk I/O runs in worker threads, and a slow
  or silent client stalls only its own task.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable, Sequence

import trio

from leased import faultpoints
from leased.commands import HANDLERS, INLINE_CLOSERS, Command, cmd_unsupported, release_client, remove_lockspace
from leased.connection import BadMessage, MessageReader, Request
from leased.errors import LeaseError, ResultCode
from leased.fencing import Fencer, ProcessFencer
from leased.lockspace import EventChannel, LockspaceState
from leased.logsetup import LogSettings, LogSetupError, setup_logging
from leased.notify import Notifier
from leased.protocol import RESTRICT_ALL, Cmd
from leased.state import ClientState, DaemonConfig, DaemonState, LogRing
from leased.storage import FileStorage

log = logging.getLogger(__name__)

RECV_CHUNK = 65536


class DaemonError(Exception):
    """The daemon cannot start (socket, lock file, permissions): one line for the operator."""


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        *,
        open_storage: Callable[[str], FileStorage] = FileStorage,
        fencer: Fencer | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.state = DaemonState(config)
        self.open_storage = open_storage
        self.fencer: Fencer = fencer or ProcessFencer()
        self.notifier = notifier or Notifier()
        self._pid_file: int | None = None
        self._stop = trio.Event()
        self._maybe_changed = trio.Event()

    # -- start-up -------------------------------------------------------

    def _lock_pid_file(self) -> None:
        os.makedirs(self.config.run_dir, mode=0o775, exist_ok=True)
        fd = os.open(self.config.pid_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DaemonError(
                    f"another daemon is running in {self.config.run_dir} ({self.config.pid_path} is locked)"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._pid_file = fd

    def _bind(self) -> trio.SocketListener:
        path = self.config.socket_path
        if len(path.encode()) > 106:
            raise DaemonError(f"socket path {path!r} is longer than 106 bytes")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # Bound and set up as a plain socket (quick local syscalls), then handed to trio.
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            raw.bind(path)
            os.chmod(path, 0o660)
            os.chown(path, self.config.uid, self.config.gid)
            raw.listen(128)
        except BaseException:
            raw.close()
            raise
        return trio.SocketListener(trio.socket.from_stdlib_socket(raw))

    # -- serving --------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._lock_pid_file()
        try:
            listener = self._bind()
        except OSError as exc:
            raise DaemonError(f"cannot listen on {self.config.socket_path}: {exc.strerror}") from exc
        log.info(
            "leased daemon started pid %d socket %s host name %s",
            os.getpid(),
            self.config.socket_path,
            self.config.our_host_name,
        )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._accept_loop, listener, nursery)
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
            await listener.aclose()
            with contextlib.suppress(OSError):
                os.unlink(self.config.socket_path)
            if self._pid_file is not None:
                os.close(self._pid_file)
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

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            nursery.start_soon(self._connection, stream)

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

    async def _connection(self, stream: trio.SocketStream) -> None:
        sock = stream.socket
        try:
            pid, uid, gid = peer_credentials(sock)
        except OSError:
            pid, uid, gid = -1, -1, -1
        client = ClientState(uid=uid, gid=gid, fd=sock.fileno())
        peer_pid = pid
        self.state.clients[client.ci] = client
        reader = MessageReader()
        try:
            async with stream:
                while True:
                    try:
                        data = await stream.receive_some(max(1, min(RECV_CHUNK, reader.room())))
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        break
                    if not data:
                        bad = reader.eof()
                        if bad is not None:
                            self._log_bad(client, bad)
                        break
                    reader.feed(data)
                    keep_open = True
                    while keep_open and (event := reader.next_event()) is not None:
                        if isinstance(event, BadMessage):
                            self._log_bad(client, event)
                            if event.rc is not None and event.header is not None:
                                await stream.send_all(event.header.reply(event.rc).encode())
                            continue
                        keep_open = await self._request(stream, client, peer_pid, event)
                        self._maybe_changed.set()
                    if not keep_open:
                        break
                    if self.state.shutting_down:
                        self._stop.set()
        finally:
            if client.registered:
                with trio.CancelScope(shield=True):
                    log.debug("client_pid_dead ci %d pid %d", client.ci, client.pid)
                    await release_client(self.state, client)
            client.dead = True
            if client.pidfd >= 0:
                os.close(client.pidfd)
                client.pidfd = -1
            self.state.clients.pop(client.ci, None)
            self._maybe_changed.set()
            if self.state.shutting_down:
                self._stop.set()

    async def _request(self, stream: trio.SocketStream, client: ClientState, peer_pid: int, request: Request) -> bool:
        """Run one request; returns whether the connection stays open."""
        header = request.header
        if client.restrict & RESTRICT_ALL:
            log.error(
                "client connection ci %d pid %d cmd %d len %d restrict all",
                client.ci,
                client.pid,
                header.cmd,
                header.length,
            )
            return True
        if header.cmd == Cmd.REGISTER:
            client.pid = peer_pid
            if client.pidfd < 0 and peer_pid > 0:
                try:
                    client.pidfd = os.pidfd_open(peer_pid)
                except OSError as exc:
                    log.warning("pidfd_open %d: %s; signals will use the pid", peer_pid, exc)
        elif not client.registered:
            client.name = Cmd(header.cmd).name.lower().encode()  # as sanlock names one-shot clients in status
        handler = HANDLERS.get(header.cmd, cmd_unsupported)
        command = Command(self.state, client, header, request.body, self.nursery, self.open_storage, self.fencer)
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
        if reply.data:
            try:
                await stream.send_all(reply.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        if reply.event_channel is not None:
            # REG_EVENT: from now on the daemon only writes event records here; the task keeps the
            # socket open until END_EVENT (or a failed write) ends the channel.
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(stream.socket.fileno()))
            channel = EventChannel(raw)
            reply.event_channel.event_channels.append(channel)
            try:
                await channel.ended.wait()
            finally:
                raw.close()
            return False
        if reply.close or header.cmd in INLINE_CLOSERS:
            if client.registered:
                log.debug("client_free ci %d live pid %d: keep registered connection", client.ci, client.pid)
                return True
            return False
        return True

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
) -> None:
    """Run the daemon with its log sinks; ``notes`` (level, line) are logged once the sinks are up."""
    daemon = Daemon(config, notifier=notifier)
    ring = LogRing(config.log_ring_bytes)
    daemon.state.log_ring = ring
    try:
        setup_logging(log_settings or LogSettings(foreground=True), ring)
    except LogSetupError as exc:
        raise DaemonError(str(exc)) from None
    for level, note in notes:
        log.log(level, "%s", note)
    try:
        faultpoints.arm_from_environment()
    except faultpoints.FaultPointError as exc:
        raise DaemonError(str(exc)) from None
    await daemon.serve()
