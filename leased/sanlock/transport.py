"""How leased.sanlock reaches the daemon: one-shot connections, the program's own fds, kept connections.

Every exchange runs on :class:`leased.client.blocking._SyncConnection`
without a timeout (the binding has none).  A one-shot call connects to
``$SANLOCK_RUN_DIR/sanlock.sock`` (read at every call), runs and closes; an
``slkfd`` call adopts the program's fd, runs on it and gives it back open, in
the blocking mode it had; ``register`` and ``reg_event`` hand the connection's
fd to the program, inheritable as libsanlock leaves it.  Every failure
becomes ``SanlockException(..., message, ...)`` with the caller's message.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import threading
from contextlib import suppress
from typing import TypeVar

from leased.client.blocking import _SyncConnection
from leased.client.exchanges import _Exchange
from leased.client.results import socket_path
from leased.errors import LeaseError
from leased.protocol import TARGET_SELF
from leased.sanlock.results import _error

_T = TypeVar("_T")


def _connect(message: str, exchange: _Exchange[_T]) -> _SyncConnection:
    """A connection to ``$SANLOCK_RUN_DIR``'s daemon; a failure closes ``exchange`` and raises with ``message``."""
    try:
        return _SyncConnection.open(socket_path(), None)
    except LeaseError as exc:
        exchange.close()
        raise _error(exc.rc, message) from None


def _one_shot(message: str, exchange: _Exchange[_T]) -> _T:
    """Connect, run one exchange, close; any failure is ``SanlockException(..., message, ...)``."""
    conn = _connect(message, exchange)
    try:
        return conn.run("sanlock", exchange)
    except LeaseError as exc:
        raise _error(exc.rc, message) from None
    finally:
        conn.sock.close()


_FD_LOCKS: dict[int, threading.Lock] = {}
_FD_LOCKS_GUARD = threading.Lock()


def _fd_lock(fd: int) -> threading.Lock:
    """The lock of fd number ``fd`` in this process (made on first use, kept: one per fd number)."""
    with _FD_LOCKS_GUARD:
        return _FD_LOCKS.setdefault(fd, threading.Lock())


def _on_fd(fd: int, message: str, exchange: _Exchange[_T]) -> _T:
    """Run an exchange on a socket the program owns (``slkfd``); it stays open.

    Unlike libsanlock, calls on one fd from several threads take turns (a
    lock per fd number, held from the first byte sent to the last byte
    read): two threads interleaving header and body on one registered
    connection is how a sanlock client once lost leases it still believed
    it held.  An fd number reused after a close shares the lock, which only
    serialises.
    """
    with _fd_lock(fd):
        sock = _adopt(fd, message, exchange)
        blocking = os.get_blocking(fd)
        try:
            return _SyncConnection.adopt(sock, None).run("slkfd", exchange)
        except LeaseError as exc:
            raise _error(exc.rc, message) from None
        finally:
            _give_back(sock, blocking)


def _give_back(sock: socket.socket, blocking: bool) -> None:
    """Leave the program's fd open and in the blocking mode it had (a call blocks on it meanwhile)."""
    with suppress(OSError):
        os.set_blocking(sock.fileno(), blocking)
    sock.detach()


def _adopt(fd: int, message: str, exchange: _Exchange[object] | None = None) -> socket.socket:
    """The socket object around ``fd``; a bad fd fails as libsanlock's send on it would."""
    failure: OSError | None = None
    if fd < 0:
        failure = OSError(_errno.EBADF, os.strerror(_errno.EBADF))
    else:
        try:
            return socket.socket(fileno=fd)
        except OSError as exc:
            failure = exc
    if exchange is not None:
        exchange.close()
    raise _error(-(failure.errno or _errno.EBADF), message) from None


def _target(slkfd: int, pid: int) -> tuple[int | None, int]:
    """(fd to use, data2): the registered fd and TARGET_SELF, else a one-shot connection and ``pid``."""
    if slkfd != -1:
        return slkfd, TARGET_SELF
    return None, pid


def _targeted(slkfd: int, pid: int, message: str, exchange: _Exchange[_T]) -> _T:
    fd, _ = _target(slkfd, pid)
    if fd is None:
        return _one_shot(message, exchange)
    return _on_fd(fd, message, exchange)


def _kept(message: str, exchange: _Exchange[None]) -> int:
    """Connect, run ``exchange`` and hand the connection's fd to the program (registration, event fd).

    The fd is inheritable, as libsanlock's ``socket()`` leaves it.
    """
    conn = _connect(message, exchange)
    try:
        conn.run("sanlock", exchange)
    except BaseException as exc:
        conn.sock.close()
        if isinstance(exc, LeaseError):
            raise _error(exc.rc, message) from None
        raise
    conn.sock.set_inheritable(True)
    return conn.sock.detach()
