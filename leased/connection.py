"""Sans-I/O reader for one client connection: bytes in, requests and complaints out.

The daemon hands this reader whatever ``recv()`` returned and asks it for
events: a :class:`Request` (one header with exactly the body its command
carries) or a :class:`BadMessage` (bytes the daemon must log at error level
and otherwise ignore, replying only when the message says so).  The reader
owns every framing decision for a connection and nothing else: no sockets,
no clocks, no logging, no knowledge of what a request means.  That makes a
split, interleaved or hostile byte stream a plain unit test.

Rules, and why:

* **Frame by command, never by ``length``.**  libsanlock sends ``length`` 32
  for HOST_STATUS and RENEWAL although a 1104-byte lockspace follows, and
  overstates LOOKUP_RINDEX by 64 (wire spec §1.5, §2.1).  sanlock's handlers
  read exactly the structs they expect, so a compatible reader asks
  :func:`leased.protocol.body_size` how much body the command carries.
  ``length`` is consulted only inside ``body_size`` (SET_LVB, REL_ALL) and to
  decide how far to skip after a :class:`~leased.protocol.FramingError`.

* **Resynchronise instead of drifting.**  sanlock 3.8.5 drops a bad header
  32 bytes at a time and parses whatever follows as the next header, which
  turns one stray body into a burst of "magic" errors (§8).  This reader
  instead searches forward for the next offset where 32 bytes form a header
  that could start a request (right magic, usable version, known command,
  plausible ``length``), drops everything before it and reports the whole
  run as one :class:`BadMessage`.  While hunting through garbage it also
  insists on a plausible ``length``; at an ordinary message boundary it
  trusts a header exactly as far as sanlock does (``header_problem``).

* **A body that is another header.**  Two unlocked threads on one socket can
  write header 1, header 2, body 1, body 2.  When the first 32 body bytes of
  a pending request form a valid header, the pending header is dropped (with
  no reply: its body is lost) and parsing restarts at the second header.
  Every body is either empty or at least one 128-byte struct long, so this
  test never looks past a body's end.

* **A rejected body is skipped, but not past a header.**  When ``body_size``
  raises :class:`FramingError` (too many resources, too many disks, an LVB
  too long) the daemon replies ``rc`` and the reader skips the body the
  header declares, at most ``MAX_BODY`` bytes, stopping early at the first
  valid header so a lying ``length`` cannot swallow the next request.  Bytes
  of that body arriving after the event are dropped silently: the event that
  explains them has already been given.

* **Decisions depend on bytes, not on how they were split.**  Each decision
  is taken at the first byte offset that settles it (a header at 32 bytes,
  the body-is-a-header test at 32 body bytes, each resource's disk count at
  its 128th byte) and a candidate header cut off by the end of the buffer is
  kept until it can be judged.  So the requests, and the replies owed, are
  the same whether the stream arrives whole or a byte at a time; only the
  number of garbage reports may differ (at most one per feed).

* **Bounded memory.**  The buffer never holds more than ``max_buffer`` bytes
  (:meth:`MessageReader.feed` refuses more; the caller reads at most
  :meth:`MessageReader.room`).  A request needs at most ``32 + MAX_BODY``
  bytes, garbage is dropped as soon as it is recognised, and a possible
  header cut off at the end keeps at most 31 bytes, so a full buffer always
  yields an event and the caller can never deadlock by respecting ``room()``.

* **Fields checked before any handler.**  A complete request whose body
  names a disk path with no NUL in its 1024 bytes, or a disk offset past
  2^63 - 1, is a :class:`BadMessage` with the reply code
  (:func:`leased.protocol.body_problem`): handlers never see such values.

* **Nothing raises on input.**  Any byte sequence becomes events; an
  exception out of :meth:`MessageReader.next_event` is a bug in leased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from leased.errors import ResultCode
from leased.protocol import (
    HEADER_SIZE,
    MAX_BODY,
    SM_MAGIC,
    SM_PROTO,
    FramingError,
    Header,
    body_problem,
    body_size,
    header_problem,
)

MAGIC: Final = SM_MAGIC.to_bytes(4, "little")
"""The first four bytes of every header: what resynchronisation searches for."""

MAX_PLAUSIBLE_LENGTH: Final = HEADER_SIZE + MAX_BODY + 4096
"""The largest ``length`` a real client sends, with slack for LOOKUP_RINDEX's overstatement."""

DEFAULT_MAX_BUFFER: Final = HEADER_SIZE + MAX_BODY + 65536
"""One largest request plus room for a typical ``recv()`` of what follows it."""


@dataclass(frozen=True)
class Request:
    """One complete request: its header and exactly the body its command carries."""

    header: Header
    body: bytes


@dataclass(frozen=True)
class BadMessage:
    """Bytes the daemon must log at error level and otherwise ignore.

    ``rc`` is set only when a valid header's body could not be framed; the
    daemon then replies with it, as sanlock does.  ``discarded`` counts the
    bytes thrown away when the event was made (header included).
    """

    reason: str
    header: Header | None
    rc: int | None
    discarded: int


Event: TypeAlias = Request | BadMessage


def _length_problem(header: Header) -> str | None:
    if HEADER_SIZE <= header.length <= MAX_PLAUSIBLE_LENGTH:
        return None
    return f"length {header.length} not in {HEADER_SIZE}..{MAX_PLAUSIBLE_LENGTH}"


def _could_start_request(header: Header) -> bool:
    """Evidence enough to stop skipping bytes here: a usable header with a plausible length."""
    return header_problem(header) is None and _length_problem(header) is None


def _framed_size(header: Header, body: bytes) -> int:
    """``body_size``, refusing any answer that would break the buffer bound."""
    need = body_size(header, body)
    if need > MAX_BODY:
        raise FramingError(ResultCode.E2BIG, f"body of {need} bytes exceeds {MAX_BODY}")
    return need


class MessageReader:
    """Framing state of one connection; see the module docstring for the rules.

    Use: ``feed()`` at most ``room()`` bytes, call ``next_event()`` until it
    returns None, repeat; when the peer closes, drain once more and call
    ``eof()``.
    """

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < HEADER_SIZE + MAX_BODY:
            # Smaller and a legal request could never complete: the reader would stall.
            raise ValueError(f"max_buffer {max_buffer} smaller than the largest request {HEADER_SIZE + MAX_BODY}")
        self._max_buffer = max_buffer
        self._buf = bytearray()
        self._pending: Header | None = None  # header at the start of _buf, awaiting its body
        self._need = 0  # body bytes the pending header needs, as far as known
        self._body_checked = False  # the body-is-another-header test has been made
        self._skip = 0  # body bytes of a rejected request still to drop
        self._hunting = False  # resynchronising: want a plausible length too

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def room(self) -> int:
        return self._max_buffer - len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append received bytes; raises ValueError if they exceed :meth:`room`.

        Refusing (rather than growing) keeps memory bounded; draining events
        always makes room again.
        """
        if len(data) > self.room():
            raise ValueError(f"{len(data)} bytes fed with room for {self.room()}: drain next_event() first")
        self._buf += data

    def next_event(self) -> Event | None:
        """The next request or complaint, or None when more bytes are needed.

        Every event removes at least one byte from the buffer.
        """
        if self._skip:
            self._skip_body()
            if self._skip:
                return None
        if self._pending is not None:
            return self._body_event(self._pending)
        return self._header_event()

    def eof(self) -> BadMessage | None:
        """The peer closed: report leftover bytes (a truncated message) and forget them.

        Call after ``next_event()`` returned None.  sanlock ignores such a
        fragment and processes the close, so no reply is owed.
        """
        left, pending, need = len(self._buf), self._pending, self._need
        self._buf.clear()
        self._pending, self._need, self._skip, self._hunting = None, 0, 0, False
        if not left:
            return None
        if pending is not None:
            reason = f"truncated body at EOF (got {left - HEADER_SIZE} of at least {need} bytes)"
        elif left < HEADER_SIZE:
            reason = f"truncated header at EOF (got {left} of {HEADER_SIZE} bytes)"
        else:
            reason = f"{left} unread bytes at EOF"
        return BadMessage(reason, pending, None, left)

    # ----------------------------------------------------------------------

    def _header_event(self) -> Event | None:
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        header = Header.decode(bytes(buf[:HEADER_SIZE]))
        problem = header_problem(header)
        if problem is None and self._hunting:
            problem = _length_problem(header)
        if problem is not None:
            end = self._scan(1, len(buf))
            del buf[:end]
            self._hunting = True
            return BadMessage(problem, header, None, end)
        self._hunting = False
        try:
            need = _framed_size(header, b"")
        except FramingError as exc:
            return self._reject(header, exc)
        if need == 0:
            del buf[:HEADER_SIZE]
            return Request(header, b"")
        self._pending, self._need = header, need
        # A body shorter than a header could end before 32 bytes: then it cannot be "another header".
        self._body_checked = need < HEADER_SIZE
        return self._body_event(header)

    def _body_event(self, header: Header) -> Event | None:
        buf = self._buf
        if not self._body_checked and len(buf) >= 2 * HEADER_SIZE:
            self._body_checked = True
            second = Header.decode(bytes(buf[HEADER_SIZE : 2 * HEADER_SIZE]))
            if _could_start_request(second) and second.version in (0, SM_PROTO):
                del buf[:HEADER_SIZE]
                self._pending = None
                return BadMessage("body is another header", header, None, HEADER_SIZE)
        # body_size's answer cannot change until the bytes it asked for are here.
        while len(buf) - HEADER_SIZE >= self._need:
            try:
                need = _framed_size(header, bytes(buf[HEADER_SIZE : HEADER_SIZE + self._need]))
            except FramingError as exc:
                return self._reject(header, exc)
            if need <= self._need:
                body = bytes(buf[HEADER_SIZE : HEADER_SIZE + need])
                del buf[: HEADER_SIZE + need]
                self._pending = None
                problem = body_problem(header, body)
                if problem is not None:
                    return BadMessage(problem.detail, header, problem.rc, HEADER_SIZE + need)
                return Request(header, body)
            self._need = need
        return None

    def _reject(self, header: Header, exc: FramingError) -> BadMessage:
        """Drop a header whose body cannot be framed, and start skipping the body it declares."""
        del self._buf[:HEADER_SIZE]
        self._pending = None
        self._skip = min(max(header.length - HEADER_SIZE, 0), MAX_BODY)
        return BadMessage(exc.detail, header, exc.rc, HEADER_SIZE + self._skip_body())

    def _skip_body(self) -> int:
        """Drop up to ``_skip`` bytes, stopping at a header; returns how many were dropped."""
        limit = min(self._skip, len(self._buf))
        end = self._scan(0, limit)
        del self._buf[:end]
        self._skip -= end
        if end < limit and len(self._buf) >= HEADER_SIZE:
            self._skip = 0  # a complete, plausible header: the rest was not this body
        return end

    def _scan(self, start: int, limit: int) -> int:
        """The first offset in ``[start, limit)`` where a request could start, else ``limit``.

        A candidate is a plausible header, or bytes cut off by the end of the
        buffer that still match the magic so far: those are kept until the
        rest arrives and they can be judged.
        """
        buf = self._buf
        pos = start
        while (found := buf.find(MAGIC, pos, limit + len(MAGIC) - 1)) >= 0:
            if found + HEADER_SIZE > len(buf):
                return found
            if _could_start_request(Header.decode(bytes(buf[found : found + HEADER_SIZE]))):
                return found
            pos = found + 1
        for size in range(len(MAGIC) - 1, 0, -1):
            found = len(buf) - size
            if start <= found < limit and buf.endswith(MAGIC[:size]):
                return found
        return limit
