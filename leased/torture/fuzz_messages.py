"""What the fuzzer sends: seeded streams of well-shaped, mutated and random sanlock wire messages.

Sans-I/O: a :class:`MessageFactory` turns a seeded ``random.Random`` and a
:class:`Vocabulary` into byte streams, one per connection (a
:class:`SessionPlan`); :mod:`leased.torture.fuzz` sends them.  Same seed,
same streams, so a finding can be replayed from its seed.

A message starts well shaped (a real header and the structs its command
carries, naming the fuzz lockspace, its resources and its file) because
only such messages reach the handlers; then fields are overwritten with
"interesting" numbers (0, -1, 2^31, 2^63, 2^64-1, ...) at random aligned
words, which hits every numeric field of every struct without the
generator knowing their offsets; then, sometimes, bytes are flipped,
inserted, cut or repeated.  Some streams are plain garbage, floods or
messages cut off where the peer vanishes.

The fuzzer must not do through legitimate commands what would harm the
victim (the process whose leases the run checks): shut the daemon down,
remove or overwrite the victim's lockspace, or act on the victim's pid.
:func:`sanitize` enforces that on the final stream, after every mutation:
no window of it that starts with the magic names SHUTDOWN or
SHUTDOWN_WAIT or targets a protected pid, and no protected byte string
(the victim's padded lockspace name, its NUL-terminated paths) occurs
anywhere in it.  Everything else is allowed, including removing and
overwriting the fuzz lockspace, which makes the daemon fence the fuzz
workers.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from leased.protocol import (
    HEADER_SIZE,
    HOST_EVENT_SIZE,
    LOCKSPACE_SIZE,
    RENTRY_SIZE,
    RESOURCE_SIZE,
    SM_MAGIC,
    TARGET_SELF,
    Cmd,
    Disk,
    Header,
    HostEvent,
    Killpath,
    Lockspace,
    Options,
    Resource,
    pack_name,
)

MiB: Final = 1 << 20

FORBIDDEN_COMMANDS: Final = frozenset({Cmd.SHUTDOWN, Cmd.SHUTDOWN_WAIT})
"""Commands the fuzzer never sends: they stop the daemon on purpose."""

REPLACEMENT_COMMAND: Final = Cmd.VERSION

MAGIC_BYTES: Final = struct.pack("<I", SM_MAGIC)

INTERESTING_32: Final = (0, 1, 2, 4, 8, 9, 31, 32, 127, 128, 255, 256, 4096, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF)
INTERESTING_64: Final = (
    0,
    1,
    512,
    4096,
    MiB,
    (1 << 31),
    (1 << 32),
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
    (1 << 64) - 512,
)


@dataclass(frozen=True)
class Vocabulary:
    """The names, paths and numbers messages are built from, and what they must never contain."""

    lockspaces: tuple[bytes, ...]
    """Lockspaces the fuzzer may name; the first is the joined fuzz lockspace."""
    resources: tuple[bytes, ...]
    path: str
    """The fuzz lease file: lockspace at 0, resource i at (i + 1) MiB."""
    host_id: int
    protected_strings: tuple[bytes, ...] = ()
    protected_pids: tuple[int, ...] = ()

    def offset(self, resource: bytes) -> int:
        return (self.resources.index(resource) + 1) * MiB if resource in self.resources else MiB


def protected_lockspace(name: bytes) -> bytes:
    """How a lockspace or resource name appears in every struct that names it: padded to 48 bytes."""
    return pack_name(name)


def protected_path(path: str) -> bytes:
    """How a disk path appears in a sanlk_disk: its bytes, then the NUL that ends it."""
    return path.encode() + b"\0"


class SessionKind(Enum):
    ONESHOT = "oneshot"
    BURST = "burst"
    REGISTERED = "registered"
    VANISH = "vanish"
    GARBAGE = "garbage"
    FLOOD = "flood"
    TRICKLE = "trickle"
    EVENTS = "events"


SESSION_WEIGHTS: Final = {
    SessionKind.ONESHOT: 20,
    SessionKind.BURST: 15,
    SessionKind.REGISTERED: 25,
    SessionKind.VANISH: 15,
    SessionKind.GARBAGE: 8,
    SessionKind.FLOOD: 2,
    SessionKind.TRICKLE: 5,
    SessionKind.EVENTS: 10,
}


@dataclass
class SessionPlan:
    """One connection's whole stream, and how its peer behaves."""

    kind: SessionKind
    stream: bytes
    messages: int
    linger: float
    """Seconds to keep the connection open after the stream is sent (reading replies), then close."""
    chunk: int
    """Largest send: 1-3 for a trickle, the whole stream otherwise."""
    cut_at: int | None = None
    """Close after sending this many bytes, mid-message: the peer vanishes."""
    registered: bool = False


@dataclass
class MessageFactory:
    """Seeded messages and sessions over a vocabulary (sans-I/O: bytes out, nothing else)."""

    rng: random.Random
    vocabulary: Vocabulary
    flood_bytes: int = 4 * MiB
    _commands: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._commands = [cmd for cmd in Cmd if cmd not in FORBIDDEN_COMMANDS]

    # ------------------------------------------------------------------ sessions

    def session(self) -> SessionPlan:
        kinds = list(SESSION_WEIGHTS)
        kind = self.rng.choices(kinds, weights=[SESSION_WEIGHTS[k] for k in kinds])[0]
        rng = self.rng
        linger = rng.choice((0.0, 0.0, 0.01, 0.05, 0.2, 1.0))
        if kind is SessionKind.GARBAGE:
            stream = rng.randbytes(rng.randint(1, 8192))
            return self._plan(kind, stream, 0, linger)
        if kind is SessionKind.FLOOD:
            parts: list[bytes] = []
            size = 0
            while size < self.flood_bytes:
                part = self.message() if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 65536))
                parts.append(part)
                size += len(part)
            return self._plan(kind, b"".join(parts), len(parts), 0.0)
        if kind is SessionKind.REGISTERED:
            body = [Header(Cmd.REGISTER).encode()]
            body += [self.lease_message() if rng.random() < 0.5 else self.message() for _ in range(rng.randint(1, 12))]
            return self._plan(kind, b"".join(body), len(body), rng.choice((0.05, 0.2, 0.5, 2.0)), registered=True)
        if kind is SessionKind.EVENTS:
            messages = [self.event_message() for _ in range(rng.randint(1, 3))]
            return self._plan(kind, b"".join(messages), len(messages), linger)
        count = 1 if kind in (SessionKind.ONESHOT, SessionKind.VANISH) else rng.randint(2, 10)
        messages = [self.message() for _ in range(count)]
        stream = b"".join(messages)
        plan = self._plan(kind, stream, count, linger)
        if kind is SessionKind.VANISH:
            plan.cut_at = rng.randint(1, max(1, len(plan.stream) - 1))
            plan.linger = 0.0
        if kind is SessionKind.TRICKLE:
            plan.chunk = rng.randint(1, 3)
        return plan

    def _plan(
        self, kind: SessionKind, stream: bytes, messages: int, linger: float, registered: bool = False
    ) -> SessionPlan:
        stream = sanitize(stream, self.vocabulary)
        return SessionPlan(kind, stream, messages, linger, chunk=len(stream) or 1, registered=registered)

    # ------------------------------------------------------------------ messages

    def message(self) -> bytes:
        """One message of any command, well shaped, then perhaps mutated."""
        rng = self.rng
        cmd = rng.choice(self._commands) if rng.random() < 0.97 else rng.getrandbits(32)
        raw = self._well_shaped(cmd)
        roll = rng.random()
        if roll < 0.45:
            raw = self._mutate_words(raw)
        elif roll < 0.6:
            raw = self._mutate_bytes(raw)
        return raw

    def lease_message(self) -> bytes:
        """What a registered client of the fuzz lockspace does: acquire, inquire, convert, release."""
        rng = self.rng
        cmd = rng.choice((Cmd.ACQUIRE, Cmd.ACQUIRE, Cmd.INQUIRE, Cmd.CONVERT, Cmd.RELEASE, Cmd.RELEASE, Cmd.SET_LVB))
        raw = self._well_shaped(cmd, data2=TARGET_SELF)
        return self._mutate_words(raw, words=1) if rng.random() < 0.2 else raw

    def event_message(self) -> bytes:
        rng = self.rng
        cmd = rng.choice((Cmd.REG_EVENT, Cmd.REG_EVENT, Cmd.END_EVENT, Cmd.SET_EVENT))
        raw = self._well_shaped(cmd)
        return self._mutate_words(raw, words=1) if rng.random() < 0.3 else raw

    def _well_shaped(self, cmd: int, data2: int | None = None) -> bytes:
        rng = self.rng
        flags = rng.choice((0, 0, 0, 1, 2, 4, 8, 0x10, rng.getrandbits(32)))
        data = 0
        if cmd in (Cmd.ACQUIRE, Cmd.RELEASE):
            count = rng.choice((1, 1, 1, 2, 3, 8))
            resources = [self._resource(with_disks=cmd == Cmd.ACQUIRE) for _ in range(count)]
            body = b"".join(resources) + (self._options() if cmd == Cmd.ACQUIRE else b"")
            data = count
        elif cmd in (Cmd.REQUEST, Cmd.WRITE_RESOURCE, Cmd.READ_RESOURCE, Cmd.READ_RESOURCE_OWNERS):
            body = self._resource(with_disks=True)
        elif cmd in (Cmd.EXAMINE_RESOURCE, Cmd.GET_LVB, Cmd.CONVERT):
            body = self._resource(with_disks=False)
        elif cmd == Cmd.SET_LVB:
            body = self._resource(with_disks=False) + rng.randbytes(rng.choice((0, 8, 512, 4096)))
        elif cmd == Cmd.ALIGN:
            body = self._disk()
        elif cmd == Cmd.KILLPATH:
            body = Killpath(rng.choice(("/bin/true", "", "/nonexistent")), "x").encode()
        elif cmd in (Cmd.REG_EVENT, Cmd.SET_EVENT):
            body = (
                self._lockspace() + HostEvent(rng.randint(0, 3), 0, rng.getrandbits(64), rng.getrandbits(64)).encode()
            )
        elif cmd in (Cmd.UPDATE_RINDEX, Cmd.LOOKUP_RINDEX, Cmd.CREATE_RESOURCE, Cmd.DELETE_RESOURCE):
            body = self._lockspace() + pack_name(self._resource_name()) + rng.randbytes(RENTRY_SIZE - 48)
        elif cmd in _LOCKSPACE_COMMANDS:
            body = self._lockspace()
        else:
            body = b""
        if data2 is None:
            data2 = rng.choice((0, 0, TARGET_SELF, TARGET_SELF, 1, rng.getrandbits(32)))
        header = Header(cmd, flags, HEADER_SIZE + len(body), rng.getrandbits(32), data, data2)
        return header.encode() + body

    def _lockspace(self) -> bytes:
        rng = self.rng
        name = rng.choice(self.vocabulary.lockspaces) if rng.random() < 0.9 else self._random_name()
        host_id = rng.choice((self.vocabulary.host_id, self.vocabulary.host_id, 0, 1, 2, 2000, 2001))
        return Lockspace(name, host_id, 0, Disk(self._path(), rng.choice((0, 0, 0, MiB, 512)))).encode()

    def _resource(self, *, with_disks: bool) -> bytes:
        rng = self.rng
        lockspace = self.vocabulary.lockspaces[0] if rng.random() < 0.8 else rng.choice(self.vocabulary.lockspaces)
        name = self._resource_name()
        num_disks = rng.choice((1, 1, 1, 2)) if with_disks else 0
        flags = rng.choice((0, 0, 4, 4, 8, 1))  # none, SHARED, PERSISTENT, LVER
        disks = tuple(Disk(self._path(), self.vocabulary.offset(name)) for _ in range(num_disks))
        resource = Resource(
            lockspace, name, lver=rng.choice((0, 0, 1, 7)), flags=flags, num_disks=num_disks, disks=disks
        )
        return resource.encode(with_disks=with_disks)

    def _disk(self) -> bytes:
        return Disk(self._path(), self.rng.choice((0, MiB))).encode()

    def _options(self) -> bytes:
        return Options(b"fuzz", 0, 0).encode()

    def _resource_name(self) -> bytes:
        return self.rng.choice(self.vocabulary.resources) if self.rng.random() < 0.9 else self._random_name()

    def _random_name(self) -> bytes:
        return bytes(self.rng.randint(1, 255) for _ in range(self.rng.randint(1, 48)))

    def _path(self) -> str:
        roll = self.rng.random()
        if roll < 0.85:
            return self.vocabulary.path
        if roll < 0.9:
            return "/nonexistent/leases"
        if roll < 0.95:
            return ""
        return "/dev/null"

    # ------------------------------------------------------------------ mutations

    def _mutate_words(self, raw: bytes, words: int | None = None) -> bytes:
        """Overwrite random aligned 4- or 8-byte words with interesting numbers."""
        out = bytearray(raw)
        rng = self.rng
        for _ in range(words if words is not None else rng.randint(1, 4)):
            if len(out) < 8:
                break
            if rng.random() < 0.5 or len(out) < HEADER_SIZE + 8:
                at = rng.randrange(0, min(len(out), HEADER_SIZE) - 3, 4)  # a header field
            else:
                at = rng.randrange(HEADER_SIZE, len(out) - 7, 4)
            if rng.random() < 0.5 and at + 8 <= len(out):
                out[at : at + 8] = struct.pack("<Q", rng.choice(INTERESTING_64))
            else:
                out[at : at + 4] = struct.pack("<I", rng.choice(INTERESTING_32))
        return bytes(out)

    def _mutate_bytes(self, raw: bytes) -> bytes:
        rng = self.rng
        out = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(4)
            at = rng.randrange(len(out) + 1)
            if op == 0 and out:
                out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                out[at:at] = rng.randbytes(rng.randint(1, 64))
            elif op == 2:
                del out[at : at + rng.randint(1, 256)]
            else:
                out[at:at] = out[max(0, at - 128) : at] * rng.randint(1, 4)
        return bytes(out)


_LOCKSPACE_COMMANDS: Final = frozenset(
    {
        Cmd.ADD_LOCKSPACE,
        Cmd.REM_LOCKSPACE,
        Cmd.EXAMINE_LOCKSPACE,
        Cmd.HOST_STATUS,
        Cmd.INQ_LOCKSPACE,
        Cmd.WRITE_LOCKSPACE,
        Cmd.READ_LOCKSPACE,
        Cmd.GET_HOSTS,
        Cmd.END_EVENT,
        Cmd.SET_CONFIG,
        Cmd.RENEWAL,
        Cmd.FORMAT_RINDEX,
        Cmd.REBUILD_RINDEX,
    }
)
assert LOCKSPACE_SIZE > HOST_EVENT_SIZE and RESOURCE_SIZE == 128  # the shapes above assume sanlock's sizes


def sanitize(stream: bytes, vocabulary: Vocabulary) -> bytes:
    """The stream with every way of harming the victim through a legitimate command taken out.

    Protected strings are broken by changing their first byte; every 32-byte
    window that starts with the magic (any of them could be parsed as a
    header, the reader resynchronises on the magic) gets VERSION for a
    forbidden command and TARGET_SELF for a protected pid.  Repeated until
    nothing changes, since a fix could in principle create a new match.
    """
    out = bytearray(stream)
    for _ in range(8):
        changed = _break_strings(out, vocabulary.protected_strings)
        changed |= _fix_headers(out, vocabulary.protected_pids)
        if not changed:
            return bytes(out)
    raise AssertionError("sanitize did not settle")  # pragma: no cover: each pass removes matches


def _break_strings(out: bytearray, protected: Sequence[bytes]) -> bool:
    changed = False
    for needle in protected:
        at = out.find(needle)
        while at >= 0:
            out[at] = (out[at] + 1) % 256 or 1
            changed = True
            at = out.find(needle, at + 1)
    return changed


def _fix_headers(out: bytearray, protected_pids: Sequence[int]) -> bool:
    changed = False
    pids = {pid & 0xFFFF_FFFF for pid in protected_pids}
    at = out.find(MAGIC_BYTES)
    while at >= 0:
        if at + 12 <= len(out) and struct.unpack_from("<I", out, at + 8)[0] in FORBIDDEN_COMMANDS:
            struct.pack_into("<I", out, at + 8, REPLACEMENT_COMMAND)
            changed = True
        if at + 32 <= len(out) and struct.unpack_from("<I", out, at + 28)[0] in pids:
            struct.pack_into("<I", out, at + 28, TARGET_SELF)
            changed = True
        at = out.find(MAGIC_BYTES, at + 1)
    return changed


def is_clean(stream: bytes, vocabulary: Vocabulary) -> bool:
    """No protected string, and no magic window naming a forbidden command or a protected pid."""
    return sanitize(stream, vocabulary) == stream
