"""Claim the run directory and listen on the socket: the first thing a starting daemon does.

sanlock listens a few milliseconds after exec; a Python daemon needs a
few hundred to import its event loop and lease code.  Harnesses and units
that start a daemon and connect at once (sanlock's own tests give it half a
second) must not see ECONNREFUSED meanwhile.  So ``leased daemon`` takes the
pid-file lock and binds and listens here, with the standard library only,
before it imports trio or anything heavy: from then on connections wait in
the backlog and are served once the daemon is up, as with systemd socket
activation.

The lock comes first, so a second daemon on the same run directory fails
before it can unlink the first one's socket.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket

SOCKET_NAME = "sanlock.sock"
PID_NAME = "sanlock.pid"
BACKLOG = 128
MAX_SOCKET_PATH = 106
"""Bytes of a Unix socket path, leaving sun_path's terminating NUL."""


class ClaimError(Exception):
    """The run directory cannot be claimed (another daemon, a path too long, no permission): one line."""


class Claim:
    """The locked pid file and the listening socket of one daemon, until :meth:`release`."""

    __slots__ = ("pid_fd", "pid_path", "released", "sock", "socket_path")

    def __init__(self, pid_fd: int, pid_path: str, sock: socket.socket, socket_path: str) -> None:
        self.pid_fd = pid_fd
        self.pid_path = pid_path
        self.sock = sock
        self.socket_path = socket_path
        self.released = False

    def release(self) -> None:
        """Stop listening, remove the socket, unlock the pid file (the daemon is leaving); idempotent."""
        if self.released:
            return
        self.released = True
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        os.close(self.pid_fd)


def claim(run_dir: str, uid: int, gid: int) -> Claim:
    """Lock ``run_dir/sanlock.pid`` (writing our pid), then listen on ``run_dir/sanlock.sock`` (0660, uid:gid)."""
    pid_fd, pid_path = _lock_pid_file(run_dir)
    socket_path = os.path.join(run_dir, SOCKET_NAME)
    try:
        sock = _listen(socket_path, uid, gid)
    except BaseException:
        os.close(pid_fd)
        raise
    return Claim(pid_fd, pid_path, sock, socket_path)


def _lock_pid_file(run_dir: str) -> tuple[int, str]:
    pid_path = os.path.join(run_dir, PID_NAME)
    try:
        os.makedirs(run_dir, mode=0o775, exist_ok=True)
        fd = os.open(pid_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ClaimError(f"cannot create {pid_path}: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise ClaimError(f"another daemon is running in {run_dir} ({pid_path} is locked)") from None
        raise ClaimError(f"cannot lock {pid_path}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd, pid_path


def _listen(path: str, uid: int, gid: int) -> socket.socket:
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise ClaimError(f"socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes")
    try:
        os.unlink(path)  # a socket left by a daemon that died: we hold the lock, so it is nobody's
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ClaimError(f"cannot listen on {path}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)
        os.chown(path, uid, gid)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ClaimError(f"cannot listen on {path}: {exc.strerror}") from None
    return sock
