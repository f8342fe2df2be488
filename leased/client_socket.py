"""One accepted client connection, below the daemon's serving logic: its peer, its socket, its record.

* **Who is on the other end**: the peer's pid, uid and gid from
  ``SO_PEERCRED`` (:func:`peer_credentials`), and a pidfd of the process
  that connected (:func:`peer_pidfd`, ``SO_PEERPIDFD``, Linux 6.5), which
  names that process even after its pid was reused;
* **the socket of a connection served by a task** (:class:`ClientSocket`):
  the system call first, trio's wait only when it would block, with a
  checkpoint every :data:`FAIR_SHARE` operations; the peer's close is
  :class:`PeerGone`;
* **the record** (:class:`Connection`): socket, client record and framing,
  whether the connection is served inline from the idle watch or by a task,
  and **how it ended** (:class:`ConnectionEnd`): only the peer's close lets
  a registered process's leases go (the release rule, :mod:`leased.daemon`).

Why apart from :mod:`leased.daemon`: these parts of a connection do not
depend on how the daemon serves it (inline from the idle watch, or by a
task of its own); the daemon keeps the serving decisions and the release
rule that acts on a :class:`ConnectionEnd`.
"""

from __future__ import annotations

import _socket
import enum
import functools
import logging
import os
import socket
import struct

import trio

from leased.connection import MessageReader
from leased.state import ClientState

log = logging.getLogger(__name__)

FAIR_SHARE = 16
"""Receives and events a connection handles without blocking before it yields to other tasks.

Inline, a connection that sent more requests than this at once is promoted
to a task of its own; a task's socket (see ``ClientSocket``) only reaches
trio's scheduler when it would block, so it checkpoints every this many
operations.  A client that never stops sending would otherwise keep the
event loop for itself, and a cancelled daemon would never see it.
"""


_UCRED = struct.Struct("3i")


def peer_credentials(sock: _socket.socket | trio.socket.SocketType) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
"""A pidfd of a Unix socket's peer (Linux 6.5; Python names it from 3.13)."""


@functools.cache
def peer_pidfd_supported() -> bool:
    """Whether this kernel names a socket's peer by a pidfd (asked once, of a socket pair)."""
    left, right = socket.socketpair()
    try:
        os.close(left.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:
        return False
    finally:
        left.close()
        right.close()
    return True


def peer_pidfd(sock: _socket.socket, pid: int) -> int:
    """A pidfd of the process that connected ``sock``, or -1 (logged: signals will use ``pid``)."""
    try:
        fd: int = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError as exc:
        log.warning("pidfd of pid %d: %s; signals will use the pid", pid, exc)
        return -1
    return fd


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

    def __init__(self, sock: _socket.socket) -> None:
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


class Connection:
    """One accepted connection: its socket, client record and framing, wherever it is served."""

    __slots__ = ("client", "fd", "peer_pid", "reader", "sock")

    def __init__(self, sock: _socket.socket, client: ClientState, peer_pid: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.client = client
        self.peer_pid = peer_pid
        """From SO_PEERCRED at accept, -1 when unknown; a REGISTER makes it the client's pid."""
        self.reader = MessageReader()
