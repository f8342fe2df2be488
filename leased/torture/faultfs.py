"""A fault-injecting FUSE passthrough filesystem: storage that fails *below* a daemon.

:mod:`faulty_storage` fails I/O inside a leased process, through the
``Storage`` seam.  That cannot reach a real sanlock daemon, nor a leased
daemon running as a separate process, nor the code path a daemon really
takes (``O_DIRECT`` ``preadv``/``pwritev``, sanlock's libaio, abandoned I/O
threads).  This module fails the *filesystem* instead: a test mounts a
passthrough of a backing directory, points the daemon at a lease file on the
mount, and at run time makes reads and/or writes fail with ``EIO`` or stall
(block) past the daemon's ``io_timeout``, then heals.

What it owns, and its rules:

* **Its own process.**  The filesystem runs in a child process (this file run
  as a script) so that a stalled FUSE request never blocks the test process,
  and a wedged filesystem can always be ended by killing it: the kernel then
  aborts the connection and every request still waiting fails
  (``ENOTCONN``/``ECONNABORTED``).  libfuse serves requests on up to
  :data:`MAX_THREADS` threads, so a stall in one range does not hold up
  I/O elsewhere.
* **No caching.**  The mount uses ``direct_io`` (every open gets
  ``FOPEN_DIRECT_IO``) and zero attribute/entry timeouts, so every client
  read and write, ``O_DIRECT`` or not, reaches the filesystem as a request
  and goes to the backing file with ``pread``/``pwrite`` at its offset.
  Clients may open with ``O_DIRECT``; the backing file is opened without it
  (the backing directory may be on tmpfs), so alignment is never checked
  below the mount.  ``allow_other`` lets a daemon running as another user
  (``sanlock -U sanlock``) use the mount.
* **Race-free control.**  The test talks to the child over a socketpair (no
  path, no polling): :meth:`FaultFS.set` returns only once the new rules are
  installed, so the next request sees them.  :meth:`FaultFS.wait_stalled`
  returns once a request is really held by the filesystem, so tests wait on
  that instead of sleeping.
* **Nothing left behind.**  :func:`fault_fs` heals (failing what is stalled),
  unmounts (``fusermount3 -u``, then ``-uz`` when a file is still open), then
  ends the child, whatever the test did.  If the test process dies instead,
  the child sees its death signal (``PR_SET_PDEATHSIG``, sent when the
  *thread* that called :func:`fault_fs` exits: call it from a thread that
  outlives the mount, as pytest's main thread does) or EOF on the socket,
  and fails what is stalled, detaches the mount and exits.

Fault rules are matched per FUSE request: a rule hits a request when the
path matches (or the rule has none) and the request's byte range
``[offset, offset + size)`` *overlaps* ``[start, end)``.  The kernel sends an
``O_DIRECT`` transfer of up to 1 MiB as one request (libfuse 3 negotiates
``max_pages`` 256); a larger one is split, and when only a later piece fails
the caller sees a short transfer rather than ``EIO``, as from a real device.
Only ``read`` and ``write`` requests are faulted; ``open``, ``fsync`` and
metadata always pass.

What a stall does to its caller, which is the point of it:

* a synchronous ``pread``/``pwrite`` (leased's I/O threads) waits in the
  kernel uninterruptibly once the filesystem has the request: the thread,
  and so its process, cannot be killed, not even by SIGKILL, until the
  request is released by :meth:`FaultFS.heal` or the filesystem process
  ends.  leased's storage gives up on it at its deadline (``AIO_TIMEOUT``)
  and abandons the thread, which returns when healed;
* an asynchronous ``O_DIRECT`` read or write (sanlock's libaio) does not
  block the submitter: sanlock times out after ``io_timeout`` but keeps
  waiting for the abandoned I/O before a ``sanlock direct`` command exits,
  and a process exiting with such I/O in flight waits for it in the kernel.

So heal before stopping a daemon whose I/O is stalled (``fail_stalled=True``
if what it was writing must not land).  Released requests run then: a
stalled write released with ``fail_stalled=False`` lands on the backing file
at that moment, long after its caller gave up, like an I/O that was stuck in
a controller queue.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import errno
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

log = logging.getLogger("faultfs")

Mode = Literal["ok", "eio", "stall"]
MODES: tuple[Mode, ...] = ("ok", "eio", "stall")

MOUNT_TIMEOUT = 15.0
"""Seconds for the child to mount (interpreter start-up plus mount(2)); generous for a loaded CI machine."""

CONTROL_TIMEOUT = 10.0
"""Seconds for the child to answer one control message: it never does I/O while answering."""

EXIT_TIMEOUT = 5.0
"""Seconds for the child to exit after unmounting, or after EOF on its control socket, before it is killed."""

MAX_THREADS = 1024
"""libfuse worker threads.  Each stalled request holds one until healed; when all are held, every further
request (even the ``stat`` of ``os.path.ismount``) queues in the kernel, so keep this far above any test's stalls."""

_PR_SET_PDEATHSIG = 1
_UTIME_NOW, _UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
_PARENT_DIED = signal.SIGUSR1

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")


class FaultFSUnavailable(RuntimeError):
    """The filesystem cannot run here (not root, no /dev/fuse, no mfusepy, or the mount failed); tests skip."""


@dataclass(frozen=True)
class Rule:
    """What happens to reads and writes of ``path`` (every file if None) that overlap ``[start, end)``."""

    read: Mode = "ok"
    write: Mode = "ok"
    path: str | None = None
    start: int = 0
    end: int | None = None

    def mode(self, kind: str, path: str, offset: int, size: int) -> Mode:
        if self.path is not None and self.path != path:
            return "ok"
        if offset + max(size, 1) <= self.start or (self.end is not None and offset >= self.end):
            return "ok"
        return self.read if kind == "read" else self.write


# -- availability ------------------------------------------------------------


@cache
def unavailable_reason() -> str | None:
    """Why the filesystem cannot run here, or None; cheap checks only (a failing mount is seen by :func:`fault_fs`)."""
    if os.geteuid() != 0:
        return "faultfs needs root (mount with allow_other, daemons of other users on the mount)"
    if not os.path.exists("/dev/fuse"):
        return "faultfs needs /dev/fuse"
    if FUSERMOUNT is None:
        return "faultfs needs fusermount3 (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "faultfs needs mfusepy (pip install -e '.[test]')"
    if ctypes.util.find_library("fuse3") is None and ctypes.util.find_library("fuse") is None:
        return "faultfs needs libfuse (apt-get install fuse3)"
    return None


def faultfs_available() -> bool:
    return unavailable_reason() is None


# -- test side -----------------------------------------------------------------


class FaultFS:
    """Handle on a running fault filesystem: change its faults, release stalls, read its counters.

    Thread-safe: one control message at a time, each answered before the
    call returns.  A call fails with :class:`RuntimeError` when the child
    refuses the message and with :class:`OSError` when it is gone.
    """

    def __init__(self, mountpoint: Path, backing: Path, control: socket.socket, pid: int) -> None:
        self.mountpoint = mountpoint
        self.backing = backing
        self.pid = pid
        self._control = control
        self._reader = control.makefile("rb")
        self._lock = threading.Lock()

    def set(
        self,
        *,
        read: Mode = "ok",
        write: Mode = "ok",
        path: str | os.PathLike[str] | None = None,
        start: int = 0,
        end: int | None = None,
        add: bool = False,
    ) -> None:
        """Replace the fault rules by this one (or add it, first match wins); requests from now on obey it.

        ``path`` names a file relative to the mount (``"leases"``) or by its
        absolute path through the mount; any other absolute path is a
        ``ValueError``.  Requests already stalled stay stalled until
        :meth:`heal`.
        """
        for mode in (read, write):
            if mode not in MODES:
                raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad range [{start}, {end})")
        rule = Rule(read=read, write=write, path=self._fs_path(path), start=start, end=end)
        self._call({"op": "set", "rules": [asdict(rule)], "add": add})

    def heal(self, *, fail_stalled: bool = False) -> int:
        """Clear every rule and release stalled requests; they complete (or fail with EIO); returns how many."""
        return int(self._call({"op": "heal", "fail_stalled": fail_stalled})["released"])

    def release(self) -> int:
        """Let the requests stalled now complete, keeping the rules for new ones; returns how many."""
        return int(self._call({"op": "heal", "fail_stalled": False, "keep_rules": True})["released"])

    def counts(self) -> dict[str, int]:
        """Requests seen (``read``, ``write``), failed (``*_eio``), stalled (``*_stall``, ``stalled_now``), ``open``."""
        return cast(dict[str, int], self._call({"op": "counts"})["counts"])

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> None:
        """Return once at least ``count`` requests are held stalled; :class:`TimeoutError` after ``timeout``."""
        reply = self._call({"op": "wait_stalled", "count": count, "timeout": timeout}, extra=timeout)
        if not reply["reached"]:
            raise TimeoutError(f"{count} stalled requests not seen in {timeout}s: {reply['counts']}")

    def _fs_path(self, path: str | os.PathLike[str] | None) -> str | None:
        if path is None:
            return None
        p = Path(path)
        if p.is_absolute():
            p = p.relative_to(self.mountpoint)  # ValueError: a path outside the mount would never match
        return "/" + str(p).strip("/")

    def _call(self, message: dict[str, Any], extra: float = 0.0) -> dict[str, Any]:
        with self._lock:
            self._control.settimeout(CONTROL_TIMEOUT + extra)
            self._control.sendall(json.dumps(message).encode() + b"\n")
            line = self._reader.readline()
        if not line:
            raise ConnectionError("faultfs process is gone")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"faultfs refused {message}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        self._reader.close()
        self._control.close()


@contextlib.contextmanager
def fault_fs(tmp: Path) -> Iterator[FaultFS]:
    """Mount a passthrough of ``tmp/"backing"`` at ``tmp/"mnt"`` served by a child process.

    Raises :class:`FaultFSUnavailable` when it cannot run here or the mount
    does not come up (the child's output is in the message and in
    ``tmp/"faultfs.log"``).  On exit, whatever happened, stalled requests
    are failed, the mount is removed and the child is ended.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise FaultFSUnavailable(reason)
    tmp = tmp.resolve()  # the mount table holds real paths: teardown must find the mount there
    backing, mountpoint, log_path = tmp / "backing", tmp / "mnt", tmp / "faultfs.log"
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    ours, theirs = socket.socketpair()
    env = dict(os.environ, FUSE_LIBRARY_NAME="fuse3")  # mfusepy prefers libfuse 2 when both are installed
    argv = [sys.executable, __file__, str(backing), str(mountpoint), "--control-fd", str(theirs.fileno())]
    try:
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [*argv, "--parent-pid", str(os.getpid())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    fs = FaultFS(mountpoint, backing, ours, proc.pid)
    try:
        _wait_mounted(proc, mountpoint, log_path)
        yield fs
    finally:
        _teardown(fs, proc, mountpoint)


def _wait_mounted(proc: subprocess.Popen[bytes], mountpoint: Path, log_path: Path) -> None:
    """Poll until the mount answers; a child that exits first means the mount failed."""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not os.path.ismount(mountpoint):
        try:
            proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise FaultFSUnavailable(f"faultfs mount at {mountpoint} not up after {MOUNT_TIMEOUT}s") from None
            continue
        output = log_path.read_text(errors="replace").strip()
        raise FaultFSUnavailable(f"faultfs mount failed (exit {proc.returncode}): {output[-2000:]}")


def is_mounted(mountpoint: Path) -> bool:
    """Is anything mounted there, even a dead FUSE mount that ``os.path.ismount`` cannot stat?"""
    target = str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            field = line.split()[4]
            for code in ("\\040", "\\011", "\\012", "\\134"):
                field = field.replace(code, chr(int(code[1:], 8)))
            if field == target:
                return True
    return False


def _unmount(mountpoint: Path) -> bool:
    """Unmount; when busy (a daemon still has a file open) detach lazily.  True when it was a clean unmount."""
    assert FUSERMOUNT is not None
    for args in (["-u"], ["-u", "-z"]):
        if not is_mounted(mountpoint):
            return args == ["-u"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            done = subprocess.run(
                [FUSERMOUNT, *args, str(mountpoint)], capture_output=True, timeout=CONTROL_TIMEOUT, check=False
            )
            if done.returncode == 0:
                return args == ["-u"]
            log.warning("fusermount %s %s failed: %s", " ".join(args), mountpoint, done.stderr.decode().strip())
    if is_mounted(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=CONTROL_TIMEOUT, check=False)
    return False


def _teardown(fs: FaultFS, proc: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """Heal, unmount, end the child; each step runs even when an earlier one failed.

    Healing comes first: libfuse waits for its busy worker threads before it
    exits, and the callers of stalled requests could not be stopped.  A
    clean unmount ends the child's FUSE loop by itself; after a lazy one
    (files still open) closing the control socket makes the child exit,
    which fails whatever I/O those files still get with ``ENOTCONN``.
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                fs.heal(fail_stalled=True)
        if _unmount(mountpoint):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=EXIT_TIMEOUT)
    finally:
        fs.close()
        try:
            proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if is_mounted(mountpoint):  # the child died without unmounting: a dead "transport endpoint" mount
            _unmount(mountpoint)


# -- filesystem side (the child process) ---------------------------------------------


class _Faults:
    """The rules and counters, shared by the FUSE worker threads and the control thread.

    One condition variable guards everything: a stalled request waits on it
    until :meth:`heal` marks it released, and :meth:`wait_stalled` waits on
    it for stalls to appear.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rules: list[Rule] = []
        self._stalled: list[dict[str, bool]] = []
        self._counts = dict.fromkeys(("read", "write", "read_eio", "write_eio", "read_stall", "write_stall", "open"), 0)

    def set_rules(self, rules: list[Rule], add: bool) -> None:
        with self._cond:
            self._rules = [*self._rules, *rules] if add else rules

    def heal(self, fail_stalled: bool, keep_rules: bool = False) -> int:
        with self._cond:
            released = len(self._stalled)
            for waiter in self._stalled:
                waiter["fail"] = fail_stalled
                waiter["released"] = True
            self._stalled = []
            if not keep_rules:
                self._rules = []
            self._cond.notify_all()
        return released

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {**self._counts, "stalled_now": len(self._stalled)}

    def wait_stalled(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._stalled) >= count, timeout)

    def opened(self, delta: int) -> None:
        with self._cond:
            self._counts["open"] += delta

    def check(self, kind: str, path: str, offset: int, size: int) -> None:
        """Pass, raise EIO, or block until healed, as the first rule with a fault for this request says."""
        with self._cond:
            self._counts[kind] += 1
            mode: Mode = "ok"
            for rule in self._rules:
                mode = rule.mode(kind, path, offset, size)
                if mode != "ok":
                    break
            if mode == "stall":
                self._counts[f"{kind}_stall"] += 1
                waiter = {"released": False, "fail": False}
                self._stalled.append(waiter)
                self._cond.notify_all()
                self._cond.wait_for(lambda: waiter["released"])
                if waiter["fail"]:
                    mode = "eio"
            if mode == "eio":
                self._counts[f"{kind}_eio"] += 1
                raise OSError(errno.EIO, os.strerror(errno.EIO))


class _Passthrough:
    """mfusepy operations mirroring a backing directory; reads and writes pass :class:`_Faults` first.

    Not a subclass of ``mfusepy.Operations``: mfusepy registers only the
    callbacks an object has, so the kernel gets ENOSYS for the rest.
    Exceptions are ``OSError`` and become ``-errno`` replies.
    """

    use_ns = True  # nanosecond timestamps (mfusepy warns without it)

    def __init__(self, backing: Path, faults: _Faults) -> None:
        self._root = str(backing)
        self._faults = faults

    def _full(self, path: str) -> str:
        return self._root + path

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        attrs = {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        attrs.update(st_blocks=st.st_blocks, st_blksize=st.st_blksize)
        return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._full(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")
        return {key: getattr(sv, key) for key in (*keys, "f_flag", "f_namemax")}

    def open(self, path: str, flags: int) -> int:
        fd = os.open(self._full(path), flags & ~(os.O_DIRECT | os.O_CREAT | os.O_EXCL))
        self._faults.opened(+1)
        return fd

    def create(self, path: str, mode: int, flags: int) -> int:
        fd = os.open(self._full(path), (flags & ~os.O_DIRECT) | os.O_CREAT, mode)
        self._faults.opened(+1)
        return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._faults.check("read", path, offset, size)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._faults.check("write", path, offset, len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        (os.fdatasync if datasync else os.fsync)(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        self._faults.opened(-1)
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._full(path))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._full(old), self._full(new))
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        """Set times; mfusepy folds ``UTIME_NOW``/``UTIME_OMIT`` into nanoseconds, so unfold them here."""
        full = self._full(path)
        if times is None:
            os.utime(full)
            return 0
        st, now = os.stat(full), time.time_ns()
        old = (st.st_atime_ns, st.st_mtime_ns)
        new = [
            now if t % 10**9 == _UTIME_NOW - 10**9 else old[i] if t % 10**9 == _UTIME_OMIT - 10**9 else t
            for i, t in enumerate(times)
        ]
        os.utime(full, ns=(new[0], new[1]))
        return 0


def _serve_control(sock: socket.socket, faults: _Faults, mountpoint: str) -> None:
    """Answer control messages, one JSON line each; on EOF (the test is gone) release, unmount and exit."""
    with sock, sock.makefile("rb") as reader:
        for line in reader:
            try:
                message = json.loads(line)
                reply: dict[str, Any] = {"ok": True}
                op = message["op"]
                if op == "set":
                    faults.set_rules([Rule(**rule) for rule in message["rules"]], bool(message.get("add")))
                elif op == "heal":
                    reply["released"] = faults.heal(
                        bool(message["fail_stalled"]), keep_rules=bool(message.get("keep_rules"))
                    )
                elif op == "counts":
                    reply["counts"] = faults.counts()
                elif op == "wait_stalled":
                    reply["reached"] = faults.wait_stalled(int(message["count"]), float(message["timeout"]))
                    reply["counts"] = faults.counts()
                else:
                    reply = {"ok": False, "error": f"unknown op {op!r}"}
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": repr(exc)}
            sock.sendall(json.dumps(reply).encode() + b"\n")
    _orphaned(faults, mountpoint, "control socket closed")


def _watch_parent(faults: _Faults, mountpoint: str) -> None:
    """Wait for the parent's death signal (``PR_SET_PDEATHSIG``), then clean up and exit.

    EOF on the control socket is not enough: a test process killed while
    one of its threads is stalled in this filesystem cannot finish exiting
    (that thread is in an uninterruptible wait), so its socket never closes.
    The thread that started us exits first, though, and that sends the
    signal.
    """
    signal.sigwait({_PARENT_DIED})
    _orphaned(faults, mountpoint, "parent died")


def _orphaned(faults: _Faults, mountpoint: str, why: str) -> None:
    """Fail what is stalled, detach the mount and exit at once: the test that owned us is gone."""
    log.warning("%s: unmounting %s and exiting", why, mountpoint)
    faults.heal(fail_stalled=True)
    if FUSERMOUNT is not None:
        subprocess.run([FUSERMOUNT, "-u", "-z", mountpoint], capture_output=True, timeout=CONTROL_TIMEOUT, check=False)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Child entry point: mount, serve FUSE in the foreground (multithreaded) until unmounted."""
    parser = argparse.ArgumentParser(description="fault-injecting FUSE passthrough (tests only)")
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="faultfs: %(levelname)s %(name)s: %(message)s")

    import mfusepy  # here only: the test process never loads libfuse (typed by stubs/mfusepy.pyi)

    faults = _Faults()
    # Blocked before any thread starts, so every thread (libfuse's too) inherits the mask and only sigwait sees it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {_PARENT_DIED})
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, _PARENT_DIED, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != args.parent_pid:
        return  # the parent died before the death signal was armed
    control = socket.socket(fileno=args.control_fd)
    for target, name, extra in (
        (_serve_control, "faultfs-control", (control,)),
        (_watch_parent, "faultfs-parent", ()),
    ):
        threading.Thread(target=target, args=(*extra, faults, args.mountpoint), name=name, daemon=True).start()
    mfusepy.FUSE(
        _Passthrough(Path(args.backing), faults),
        args.mountpoint,
        foreground=True,
        allow_other=True,  # a daemon running as another user (sanlock -U sanlock) must see the mount
        direct_io=True,  # FOPEN_DIRECT_IO: no page cache, clients may use O_DIRECT, every I/O is a request
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        max_threads=MAX_THREADS,
        fsname="faultfs",
    )


if __name__ == "__main__":
    main()
