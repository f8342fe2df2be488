"""Where the daemon's log lines go, and at which priority.

Priorities are syslog's numbers, as in sanlock's ``-L``/``-S`` and
sanlock.conf: 3 err, 4 warning, 6 info, 7 debug; a sink set to ``p`` gets
every line at ``p`` or more urgent, and ``-1`` turns it off.  The sinks:

* the in-memory ring for ``client log_dump`` (:class:`LogRing`): always,
  everything (debug included), because it is what an operator asks for
  after the fact; the daemon's per-connection debug lines reach it through
  :func:`debug`, which builds no ``LogRecord`` when no other sink wants them;
* the log file (default ``/var/log/leased.log``, sanlock's is
  ``/var/log/sanlock.log``) at ``logfile_priority``;
* syslog at ``syslog_priority``: the ``/dev/log`` socket when it exists;
  under systemd, when ``JOURNAL_STREAM`` names our stderr, stderr *is* the
  journal, so lines go there with a ``<N>`` priority prefix (which journald
  reads) instead, and not to ``/dev/log`` as well, which would log each line
  twice;
* stderr with ``-D``, at info, as before.

A sink that cannot be opened must not stop a lease daemon that was started
on defaults (a non-root ``leased daemon -D`` cannot write ``/var/log``): it
is reported on stderr and skipped.  A log file the operator named explicitly
is different: not being able to write it is a start-up error.
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

OFF = -1

# The lowest logging level each syslog priority lets through.  5 (notice) sits
# between warning and info: leased logs nothing at notice, so it means "warning
# and more urgent".
_THRESHOLD = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING}
_THRESHOLD |= {5: logging.INFO + 5, 6: logging.INFO, 7: logging.DEBUG}


def threshold(priority: int) -> int | None:
    """The logging level a sink at syslog ``priority`` starts at; None for -1 (off)."""
    if priority < 0:
        return None
    return _THRESHOLD[min(priority, 7)]


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a record: the number journald and syslog file it under."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


_TEXT = (str, bytes)
_PLAIN = (int, float, str, bytes, bool, type(None))
"""Argument types a record may keep unformatted: their text cannot change before the dump."""


class LogRing(logging.Handler):
    """The last ``capacity`` bytes of log text, for ``client log_dump``.

    Every record goes here, debug ones included, and almost none is ever
    read: formatting each one as it came (the time stamp above all) was a
    good part of what a short-lived client cost the daemon.  So a record is
    kept as its parts (times, thread, message and arguments) and formatted
    when dumped.  Only arguments whose text cannot change are kept as they
    are; a record with any other argument is formatted at once.  Sizes are
    estimated as records come (so the ring stays bounded) and the dump is
    cut to ``capacity`` exactly.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(logging.DEBUG)
        self.capacity = capacity
        self.entries: collections.deque[tuple[float, int, int, str, tuple[object, ...], int]] = collections.deque()
        self.size = 0

    def emit(self, record: logging.LogRecord) -> None:
        self._keep(record.created, record.thread or 0, record.msg, record.args)

    def note(self, message: str, args: tuple[object, ...]) -> None:
        """Keep a line as :meth:`emit` keeps a record's, with no record built (:func:`debug`)."""
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._keep(time.time(), threading.get_ident(), message, args)

    def _keep(self, created: float, thread: int, message: object, args: object) -> None:
        try:
            text, values, estimate = _entry_parts(message, args)
        except Exception:  # a bad log call must not break the daemon
            return
        self.entries.append((created, int(time.monotonic()), thread, text, values, estimate))
        self.size += estimate
        while self.size > self.capacity and self.entries:
            self.size -= self.entries.popleft()[5]

    def dump(self) -> bytes:
        lines: list[str] = []
        for created, monotonic, thread, message, args, _ in self.entries:
            try:
                text = message % args if args else message
            except Exception:  # a bad format shows as it was written, not as a broken dump
                text = f"{message} {args!r}"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
            lines.append(f"{stamp} {monotonic} [{thread}]: {text}")
        kept, size = [], 0
        for line in reversed(lines):
            size += len(line) + 1
            if size > self.capacity:
                break
            kept.append(line)
        return "\n".join(reversed(kept)).encode(errors="replace")


def _entry_parts(message: object, args: object) -> tuple[str, tuple[object, ...], int]:
    """What the ring keeps of a log call (its format and plain arguments, else its text) and a size estimate."""
    if isinstance(message, str) and isinstance(args, tuple):
        estimate = 40 + len(message)
        for arg in args:
            if isinstance(arg, _TEXT):
                estimate += len(arg)
            elif isinstance(arg, _PLAIN):
                estimate += 20
            else:
                break
        else:
            return message, args, estimate
    text = _formatted(message, args)
    return text, (), 40 + len(text)


def _formatted(message: object, args: object) -> str:
    """The text of a log call, as ``LogRecord.getMessage`` makes it."""
    text = str(message)
    return text % args if args else text


def debug(logger: logging.Logger, message: str, *args: object) -> None:
    """``logger.debug(message, *args)``, with no LogRecord built when only the ring takes debug lines.

    The daemon writes a debug line or two for every connection, and almost
    never does any sink but the ring want them: building and handing round
    a full ``LogRecord`` for each was a good part of what a short-lived
    client cost.  When the ring is the one handler on the logger's way to
    the root that takes debug records, and no filter anywhere could want to
    see them, the line goes straight into the ring (the same entry, the
    same ``log_dump`` output).  Otherwise (a log file or syslog at priority
    7, a test's capture handler) it is an ordinary ``logger.debug``.
    """
    ring = _sole_debug_sink(logger)
    if ring is None:
        logger.debug(message, *args)
    else:
        ring.note(message, args)


def _sole_debug_sink(logger: logging.Logger) -> LogRing | None:
    if not logger.isEnabledFor(logging.DEBUG):
        return None
    found: LogRing | None = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        for handler in node.handlers:
            if handler.level > logging.DEBUG:
                continue
            if found is None and isinstance(handler, LogRing) and not handler.filters:
                found = handler
            else:
                return None
        if not node.propagate:
            break
        node = node.parent
    return found


class LogSetupError(Exception):
    """A log sink the operator asked for cannot be opened: one line, the daemon does not start."""


@dataclass(frozen=True)
class LogSettings:
    foreground: bool = False  # -D: everything at info and up to stderr
    logfile: str = "/var/log/leased.log"
    logfile_priority: int = 4
    logfile_required: bool = False
    """The log file was named by the operator: failing to open it stops the start."""
    logfile_use_utc: bool = False
    syslog_priority: int = 3
    syslog_socket: str = "/dev/log"
    journal_stream: str | None = None
    """$JOURNAL_STREAM ("DEVICE:INODE" of the journal's stream), as systemd sets it."""


class JournalFormatter(logging.Formatter):
    """``<N>message``: journald files the line under priority N (SyslogLevelPrefix=yes is its default)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{record.name}: {super().format(record)}"


def stream_is_journal(journal_stream: str | None, stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd announced (and not, say, a redirect we inherited)."""
    if not journal_stream:
        return False
    device, _, inode = journal_stream.partition(":")
    try:
        info = os.fstat(stream.fileno())
        return stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def file_formatter(use_utc: bool) -> logging.Formatter:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if use_utc:
        formatter.converter = time.gmtime
    return formatter


def setup_logging(settings: LogSettings, ring: logging.Handler, *, stderr: TextIO | None = None) -> None:
    """Replace the root logger's handlers with the daemon's sinks; raises LogSetupError (see the module)."""
    stderr = stderr or sys.stderr
    root = logging.getLogger()
    for old in list(root.handlers):  # the CLI's plain stderr handler
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.DEBUG)
    root.addHandler(ring)
    # A sink that fails later (syslog gone, disk full) must not print a traceback per line.
    logging.raiseExceptions = False
    # No sink prints where a line was logged from or which process logged it, and every record is
    # built (the ring takes debug): skip the stack walk and process lookups each record would cost
    # (logging's documented optimisations).
    logging._srcfile = None
    logging.logProcesses = False
    logging.logMultiprocessing = False

    journal = stream_is_journal(settings.journal_stream, stderr)
    stderr_level = logging.INFO if settings.foreground else None
    if journal:
        syslog_level = threshold(settings.syslog_priority)
        if syslog_level is not None:
            stderr_level = syslog_level if stderr_level is None else min(stderr_level, syslog_level)
    if stderr_level is not None:
        handler = logging.StreamHandler(stderr)
        handler.setLevel(stderr_level)
        handler.setFormatter(
            JournalFormatter() if journal else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        root.addHandler(handler)

    problems: list[str] = []
    file_level = threshold(settings.logfile_priority)
    if file_level is not None:
        try:
            file_handler = logging.FileHandler(settings.logfile, encoding="utf-8")
        except OSError as exc:
            message = f"cannot open log file {settings.logfile}: {exc.strerror}"
            if settings.logfile_required:
                raise LogSetupError(message) from None
            problems.append(message + "; not logging to a file")
        else:
            file_handler.setLevel(file_level)
            file_handler.setFormatter(file_formatter(settings.logfile_use_utc))
            root.addHandler(file_handler)

    syslog_level = threshold(settings.syslog_priority)
    if syslog_level is not None and not journal and os.path.exists(settings.syslog_socket):
        try:
            syslog = logging.handlers.SysLogHandler(settings.syslog_socket, logging.handlers.SysLogHandler.LOG_DAEMON)
        except OSError as exc:
            problems.append(f"cannot connect to syslog at {settings.syslog_socket}: {exc.strerror}; not using syslog")
        else:
            syslog.ident = "leased: "
            syslog.setLevel(syslog_level)
            syslog.setFormatter(logging.Formatter("%(name)s %(message)s"))
            root.addHandler(syslog)

    for problem in problems:
        print(f"leased: {problem}", file=stderr, flush=True)
        logging.getLogger(__name__).warning("%s", problem)
