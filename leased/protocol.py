"""sanlock's client/daemon wire protocol: structs, command table and body framing.

Every message is a 32-byte ``sm_header`` followed by a body whose shape is set
by the command, not by the header's ``length`` (libsanlock sends wrong lengths
for HOST_STATUS, RENEWAL and LOOKUP_RINDEX; wire spec §2.1).  This module holds
one construct schema per C struct (§3), typed views of them and the
per-command body framing (:func:`body_size`); the text forms the wire
carries (state strings, §6) are :mod:`leased.text_forms`'.  It does no I/O;
:mod:`leased.connection` feeds it bytes.

Names on the wire are 48-byte NUL-padded fields; here they are ``bytes``
without the padding (python3-sanlock uses bytes too).  Paths are ``str``,
decoded with ``surrogateescape`` so any byte string round-trips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, TypeVar

from construct import Bytes, Int32ul, Int64ul, Padding, Struct

from leased.errors import LeaseError, ResultCode
from leased.schema import Parsed, build, parse_exact

SM_MAGIC: Final = 0x04282010
SM_PROTO: Final = 0x00000001
SM_PROTO_MAJOR_MASK: Final = 0xFFFF0000
SM_CB_PROTO: Final = 1
SM_CB_GET_EVENT: Final = 1
VERSION_NUM: Final = 0x03080500
"""The sanlock release we speak for: 3.8.5 (``major<<24 | minor<<16 | patch<<8``)."""
VERSION_STR: Final = "3.8.5"

HEADER_SIZE: Final = 32
DISK_SIZE: Final = 1040
RESOURCE_SIZE: Final = 128
OPTIONS_SIZE: Final = 56
LOCKSPACE_SIZE: Final = 1104
HOST_SIZE: Final = 32
HOST_EVENT_SIZE: Final = 32
STATE_SIZE: Final = 80
KILLPATH_SIZE: Final = 256
RENTRY_SIZE: Final = 64
HEALTH_NOTICE_SIZE: Final = 96
"""A leased health notice: header, lockspace name, three u32 and padding."""

NAME_LEN: Final = 48
PATH_LEN: Final = 1024
MAX_DISKS: Final = 4
MAX_RESOURCES: Final = 8
MAX_LVB: Final = 4096
STATE_MAXSTR: Final = 4096
MAX_RES_STR: Final = 4400
MAX_BODY: Final = MAX_RESOURCES * (RESOURCE_SIZE + MAX_DISKS * DISK_SIZE) + OPTIONS_SIZE
"""The largest body any command can carry (a full ACQUIRE): bounds what a reader buffers."""

TARGET_SELF: Final = 0xFFFFFFFF
"""``data2`` of a registered-type command meaning "the client registered on this connection"."""


class Cmd(IntEnum):
    REGISTER = 1
    ADD_LOCKSPACE = 2
    REM_LOCKSPACE = 3
    SHUTDOWN = 4
    STATUS = 5
    LOG_DUMP = 6
    ACQUIRE = 7
    RELEASE = 8
    INQUIRE = 9
    RESTRICT = 10
    REQUEST = 11
    ALIGN = 12
    EXAMINE_LOCKSPACE = 13
    EXAMINE_RESOURCE = 14
    HOST_STATUS = 15
    INQ_LOCKSPACE = 16
    KILLPATH = 17
    WRITE_LOCKSPACE = 18
    WRITE_RESOURCE = 19
    READ_LOCKSPACE = 20
    READ_RESOURCE = 21
    GET_LOCKSPACES = 22
    GET_HOSTS = 23
    READ_RESOURCE_OWNERS = 24
    SET_LVB = 25
    GET_LVB = 26
    CONVERT = 27
    VERSION = 28
    SHUTDOWN_WAIT = 29
    REG_EVENT = 30
    END_EVENT = 31
    SET_EVENT = 32
    SET_CONFIG = 33
    RENEWAL = 34
    FORMAT_RINDEX = 35
    UPDATE_RINDEX = 36
    LOOKUP_RINDEX = 37
    CREATE_RESOURCE = 38
    DELETE_RESOURCE = 39
    REBUILD_RINDEX = 40
    # leased extensions.  Numbers far above sanlock's range (1..40 in 3.8.5; later releases
    # add a few more), so a future sanlock command cannot collide; libsanlock never sends
    # them, and a sanlock daemon ignores them without a reply (wire spec §8).
    LEASED_METRICS = 0x4C000001
    """Header only; reply: header (data 0, length 32 + n) and n bytes of Prometheus text; closes."""
    LEASED_HEALTH = 0x4C000002
    """Header only; reply: header (data 0 or -ENOCSI, data2 = notices that follow at once); from then
    on the connection carries only health notices (:func:`encode_health_notice`).  The client sends a
    VERSION header right after it: leased never answers that one, sanlock answers only that one."""


LEASED_CMD_BASE: Final = 0x4C000000
"""First command number of leased's private extensions (``L`` in the top byte)."""


# Flags (wire spec §4.1)
ACQUIRE_LVB: Final = 0x1
ACQUIRE_ORPHAN: Final = 0x2
ACQUIRE_ORPHAN_ONLY: Final = 0x4
ACQUIRE_OWNER_NOWAIT: Final = 0x8
REL_ALL: Final = 0x1
REL_RENAME: Final = 0x2
REL_ORPHAN: Final = 0x4
CONVERT_OWNER_NOWAIT: Final = 0x8
REQUEST_NEXT_LVER: Final = 0x1
RESTRICT_ALL: Final = 0x1
RESTRICT_SIGKILL: Final = 0x2
RESTRICT_SIGTERM: Final = 0x4
KILLPATH_PID: Final = 0x1
ADD_ASYNC: Final = 0x1
REM_ASYNC: Final = 0x1
REM_UNUSED: Final = 0x2
INQ_WAIT: Final = 0x1
WRITE_CLEAR: Final = 0x1
SETEV_CUR_GENERATION: Final = 0x1
SETEV_CLEAR_HOSTID: Final = 0x2
SETEV_CLEAR_EVENT: Final = 0x4
SETEV_REPLACE_EVENT: Final = 0x8
SETEV_ALL_HOSTS: Final = 0x10
LSF_ADD: Final = 0x1
LSF_REM: Final = 0x2

RES_LVER: Final = 0x001
RES_NUM_HOSTS: Final = 0x002
RES_SHARED: Final = 0x004
RES_PERSISTENT: Final = 0x008
RES_ALIGN1M: Final = 0x010
RES_ALIGN2M: Final = 0x020
RES_ALIGN4M: Final = 0x040
RES_ALIGN8M: Final = 0x080
RES_SECTOR512: Final = 0x100
RES_SECTOR4K: Final = 0x200
RES_ALIGN_MASK: Final = 0x0F0
RES_SECTOR_MASK: Final = 0x300


HOST_STATE_MASK: Final = 0x0F
"""The bits of ``sanlk_host.flags`` that hold a :class:`HostState` (``SANLK_HOST_MASK``)."""


class HostState(IntEnum):
    """Host states as sanlock numbers them on the wire (``SANLK_HOST_*``, GET_HOSTS' ``flags``)."""

    UNKNOWN = 1
    FREE = 2
    LIVE = 3
    FAIL = 4
    DEAD = 5


class StateType(IntEnum):
    DAEMON = 1
    CLIENT = 2
    LOCKSPACE = 3
    RESOURCE = 4
    HOST = 5
    RENEWAL = 6


# --------------------------------------------------------------------------
# Schemas

sm_header = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "cmd" / Int32ul,
    "cmd_flags" / Int32ul,
    "length" / Int32ul,
    "seq" / Int32ul,
    "data" / Int32ul,
    "data2" / Int32ul,
)
sanlk_disk = Struct("path" / Bytes(PATH_LEN), "offset" / Int64ul, "pad1" / Int32ul, "pad2" / Int32ul)
sanlk_resource = Struct(
    "lockspace_name" / Bytes(NAME_LEN),
    "name" / Bytes(NAME_LEN),
    "lver" / Int64ul,
    "data64" / Int64ul,
    "data32" / Int32ul,
    "unused" / Int32ul,
    "flags" / Int32ul,
    "num_disks" / Int32ul,
)
sanlk_options = Struct("owner_name" / Bytes(NAME_LEN), "flags" / Int32ul, "len" / Int32ul)
sanlk_lockspace = Struct(
    "name" / Bytes(NAME_LEN),
    "host_id" / Int64ul,
    "flags" / Int32ul,
    Padding(4),
    "host_id_disk" / sanlk_disk,
)
sanlk_host = Struct(
    "host_id" / Int64ul, "generation" / Int64ul, "timestamp" / Int64ul, "io_timeout" / Int32ul, "flags" / Int32ul
)
sanlk_host_event = Struct("host_id" / Int64ul, "generation" / Int64ul, "event" / Int64ul, "data" / Int64ul)
sanlk_state = Struct(
    "type" / Int32ul,
    "flags" / Int32ul,
    "data32" / Int32ul,
    Padding(4),
    "data64" / Int64ul,
    "name" / Bytes(NAME_LEN),
    "str_len" / Int32ul,
    Padding(4),
)
event_cb = Struct("h" / sm_header, "he" / sanlk_host_event, "from_host_id" / Int64ul, "from_generation" / Int64ul)
killpath_payload = Struct("path" / Bytes(128), "args" / Bytes(128))
health_notice = Struct(
    "h" / sm_header,
    "name" / Bytes(NAME_LEN),
    "renewal_gap" / Int32ul,
    "warn_after" / Int32ul,
    "fail_after" / Int32ul,
    Padding(4),
)
"""A leased health notice: header (cmd LEASED_HEALTH, seq = the channel's notice number, data = the
:class:`HealthState`, data2 = our host_id), the lockspace name, seconds since its last successful
renewal, and the gaps (6N, 8N) at which it warns and fails."""

for _schema, _size in (
    (sm_header, HEADER_SIZE),
    (sanlk_disk, DISK_SIZE),
    (sanlk_resource, RESOURCE_SIZE),
    (sanlk_options, OPTIONS_SIZE),
    (sanlk_lockspace, LOCKSPACE_SIZE),
    (sanlk_host, HOST_SIZE),
    (sanlk_host_event, HOST_EVENT_SIZE),
    (sanlk_state, STATE_SIZE),
    (event_cb, 80),
    (health_notice, HEALTH_NOTICE_SIZE),
    (killpath_payload, KILLPATH_SIZE),
):
    assert _schema.sizeof() == _size


def to_signed(value: int) -> int:
    """A u32 field read as the i32 sanlock means (results, pids)."""
    return value - (1 << 32) if value & 0x80000000 else value


def to_unsigned(value: int) -> int:
    return value & 0xFFFFFFFF


def pack_name(name: bytes | str) -> bytes:
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if len(raw) > NAME_LEN:
        raise LeaseError(ResultCode.ENAMETOOLONG, f"name {raw!r} longer than {NAME_LEN} bytes")
    return raw.ljust(NAME_LEN, b"\0")


def unpack_name(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def pack_path(path: str) -> bytes:
    raw = path.encode(errors="surrogateescape")
    if len(raw) >= PATH_LEN:
        raise LeaseError(ResultCode.ENAMETOOLONG, f"path longer than {PATH_LEN - 1} bytes")
    return raw.ljust(PATH_LEN, b"\0")


def unpack_path(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode(errors="surrogateescape")


# --------------------------------------------------------------------------
# Typed views


@dataclass(frozen=True)
class Header:
    cmd: int
    cmd_flags: int = 0
    length: int = HEADER_SIZE
    seq: int = 0
    data: int = 0
    data2: int = 0
    magic: int = SM_MAGIC
    version: int = SM_PROTO

    @classmethod
    def decode(cls, raw: bytes) -> Header:
        key = bytes(raw)
        header = _DECODED.get(key)
        if header is None:
            header = cls(**parse_exact(sm_header, key).numbers())
            _remember(_DECODED, key, header)
        return header

    def encode(self) -> bytes:
        raw = _ENCODED.get(self)
        if raw is None:
            values = {name: to_unsigned(getattr(self, name)) for name in _HEADER_FIELDS}
            raw = bytes(build(sm_header, values))
            _remember(_ENCODED, self, raw)
        return raw

    @property
    def result(self) -> int:
        return to_signed(self.data)

    @property
    def target_pid(self) -> int:
        """``data2`` of a registered-type command: -1 means this connection's client."""
        return to_signed(self.data2)

    def reply(self, result: int, *, data2: int = 0, payload_length: int = 0) -> Header:
        """The default reply (§2.3): request echoed, version 1, result in data."""
        return Header(
            self.cmd, self.cmd_flags, HEADER_SIZE + payload_length, self.seq, to_unsigned(result), data2, self.magic
        )


_HEADER_FIELDS = ("magic", "version", "cmd", "cmd_flags", "length", "seq", "data", "data2")

HEADER_MEMO: Final = 256
"""Headers kept parsed and built: libsanlock sends the same few headers (``seq`` 0) on every
connection, so a short-lived client's REGISTER, INQUIRE and reply header are parsed and built
once, not once per connection.  Only exact 32-byte images that parsed are kept (a memo never
turns bytes into a header that ``parse_exact`` would refuse), and a full memo starts over, so
a client that sends ever new headers costs memory no more than this many entries."""

_K = TypeVar("_K")
_V = TypeVar("_V")
_DECODED: dict[bytes, Header] = {}
_ENCODED: dict[Header, bytes] = {}


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> None:
    if len(memo) >= HEADER_MEMO:
        memo.clear()
    memo[key] = value


@dataclass(frozen=True)
class Disk:
    path: str
    offset: int = 0
    pad1: int = 0
    pad2: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> Disk:
        return cls.from_parsed(parse_exact(sanlk_disk, raw))

    @classmethod
    def from_parsed(cls, parsed: Parsed) -> Disk:
        """From a parsed ``sanlk_disk``, on its own or inside another struct (``sanlk_lockspace``)."""
        return cls(
            unpack_path(parsed.raw("path")), parsed.number("offset"), parsed.number("pad1"), parsed.number("pad2")
        )

    def encode(self) -> bytes:
        return bytes(
            build(sanlk_disk, dict(path=pack_path(self.path), offset=self.offset, pad1=self.pad1, pad2=self.pad2))
        )


@dataclass(frozen=True)
class Resource:
    """sanlk_resource plus the disks that follow it for commands that carry them."""

    lockspace: bytes
    name: bytes
    lver: int = 0
    data64: int = 0
    data32: int = 0
    flags: int = 0
    num_disks: int = 0
    disks: tuple[Disk, ...] = field(default=())

    @classmethod
    def decode(cls, raw: bytes, disks: tuple[Disk, ...] = ()) -> Resource:
        parsed = parse_exact(sanlk_resource, raw[:RESOURCE_SIZE])
        return cls(
            unpack_name(parsed.raw("lockspace_name")),
            unpack_name(parsed.raw("name")),
            parsed.number("lver"),
            parsed.number("data64"),
            parsed.number("data32"),
            parsed.number("flags"),
            parsed.number("num_disks"),
            disks,
        )

    def encode(self, with_disks: bool = True) -> bytes:
        head = build(
            sanlk_resource,
            dict(
                lockspace_name=pack_name(self.lockspace),
                name=pack_name(self.name),
                lver=self.lver,
                data64=self.data64,
                data32=self.data32,
                unused=0,
                flags=self.flags,
                num_disks=self.num_disks if self.num_disks or not self.disks else len(self.disks),
            ),
        )
        if not with_disks:
            return bytes(head)
        return bytes(head) + b"".join(disk.encode() for disk in self.disks)

    @property
    def shared(self) -> bool:
        return bool(self.flags & RES_SHARED)


@dataclass(frozen=True)
class Options:
    owner_name: bytes = b""
    flags: int = 0
    len: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> Options:
        parsed = parse_exact(sanlk_options, raw)
        return cls(unpack_name(parsed.raw("owner_name")), parsed.number("flags"), parsed.number("len"))

    def encode(self) -> bytes:
        return bytes(build(sanlk_options, dict(owner_name=pack_name(self.owner_name), flags=self.flags, len=self.len)))


@dataclass(frozen=True)
class Lockspace:
    name: bytes
    host_id: int = 0
    flags: int = 0
    disk: Disk = Disk("")

    @classmethod
    def decode(cls, raw: bytes) -> Lockspace:
        parsed = parse_exact(sanlk_lockspace, raw[:LOCKSPACE_SIZE])
        return cls(
            unpack_name(parsed.raw("name")),
            parsed.number("host_id"),
            parsed.number("flags"),
            Disk.from_parsed(parsed.struct("host_id_disk")),
        )

    def encode(self) -> bytes:
        disk = self.disk
        return bytes(
            build(
                sanlk_lockspace,
                dict(
                    name=pack_name(self.name),
                    host_id=self.host_id,
                    flags=self.flags,
                    host_id_disk=dict(path=pack_path(disk.path), offset=disk.offset, pad1=disk.pad1, pad2=disk.pad2),
                ),
            )
        )


@dataclass(frozen=True)
class Host:
    host_id: int
    generation: int = 0
    timestamp: int = 0
    io_timeout: int = 0
    flags: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> Host:
        return cls(**parse_exact(sanlk_host, raw).numbers())

    def encode(self) -> bytes:
        return bytes(build(sanlk_host, vars(self)))


@dataclass(frozen=True)
class HostEvent:
    host_id: int = 0
    generation: int = 0
    event: int = 0
    data: int = 0

    @classmethod
    def decode(cls, raw: bytes) -> HostEvent:
        return cls(**parse_exact(sanlk_host_event, raw).numbers())

    def encode(self) -> bytes:
        return bytes(build(sanlk_host_event, vars(self)))


class HealthState(IntEnum):
    """A joined lockspace's renewal health, as a leased health notice reports it."""

    OK = 0
    """Renewing: the last successful renewal is less than 6N ago (or renewals recovered)."""
    WARNING = 1
    """No successful renewal for 6N (sanlock's check_our_lease warning): stop starting new writes."""
    FAILING = 2
    """No successful renewal for 8N: the lockspace failed; its lease holders are being killed."""
    REMOVED = 3
    """The lockspace was left (or its join failed): no more notices for it."""


@dataclass(frozen=True)
class HealthNotice:
    """One notice of a health channel (:data:`health_notice`)."""

    lockspace: bytes
    host_id: int
    state: HealthState
    renewal_gap: int
    """Seconds since the last successful renewal when the notice was written."""
    warn_after: int
    fail_after: int
    seq: int = 0

    def encode(self) -> bytes:
        header = dict(
            magic=SM_MAGIC,
            version=SM_PROTO,
            cmd=Cmd.LEASED_HEALTH,
            cmd_flags=0,
            length=HEALTH_NOTICE_SIZE,
            seq=self.seq,
            data=int(self.state),
            data2=self.host_id,
        )
        fields = dict(
            h=header,
            name=self.lockspace[:NAME_LEN].ljust(NAME_LEN, b"\0"),
            renewal_gap=self.renewal_gap,
            warn_after=self.warn_after,
            fail_after=self.fail_after,
        )
        return bytes(build(health_notice, fields))

    @classmethod
    def decode(cls, raw: bytes) -> HealthNotice:
        """A notice from its bytes; a record that is not one (size, magic, command, state) is a LeaseError."""
        try:
            parsed = parse_exact(health_notice, raw)
        except ValueError:
            raise LeaseError(ResultCode.EPROTO, f"health notice of {len(raw)} bytes") from None
        header = parsed.struct("h")
        if header.number("magic") != SM_MAGIC or header.number("cmd") != Cmd.LEASED_HEALTH:
            raise LeaseError(ResultCode.EPROTO, f"not a health notice: {raw[:HEADER_SIZE].hex()}")
        try:
            state = HealthState(header.number("data"))
        except ValueError:
            raise LeaseError(ResultCode.EPROTO, f"health notice with state {header.number('data')}") from None
        return cls(
            parsed.raw("name").split(b"\0", 1)[0],
            header.number("data2"),
            state,
            parsed.number("renewal_gap"),
            parsed.number("warn_after"),
            parsed.number("fail_after"),
            header.number("seq"),
        )


@dataclass(frozen=True)
class StateRecord:
    """One sanlk_state record of a STATUS/HOST_STATUS/RENEWAL stream, with its text."""

    type: int
    data32: int = 0
    data64: int = 0
    name: bytes = b""
    text: str = ""

    def encode(self) -> bytes:
        text = self.text.encode(errors="surrogateescape")[: STATE_MAXSTR - 1] + b"\0"
        head = build(
            sanlk_state,
            dict(
                type=self.type,
                flags=0,
                data32=to_unsigned(self.data32),
                data64=self.data64,
                name=pack_name(self.name[:NAME_LEN]),
                str_len=len(text),
            ),
        )
        return bytes(head) + text

    @classmethod
    def decode_head(cls, raw: bytes) -> tuple[StateRecord, int]:
        """The fixed part and the text length that follows it."""
        parsed = parse_exact(sanlk_state, raw)
        return cls(
            parsed.number("type"),
            to_signed(parsed.number("data32")),
            parsed.number("data64"),
            unpack_name(parsed.raw("name")),
        ), parsed.number("str_len")


@dataclass(frozen=True)
class Killpath:
    path: str
    args: str = ""

    @classmethod
    def decode(cls, raw: bytes) -> Killpath:
        parsed = parse_exact(killpath_payload, raw)
        return cls(unpack_path(parsed.raw("path")[:127]), unpack_path(parsed.raw("args")[:127]))

    def encode(self) -> bytes:
        path = self.path.encode()[:127].ljust(128, b"\0")
        args = self.args.encode()[:127].ljust(128, b"\0")
        return bytes(build(killpath_payload, dict(path=path, args=args)))


def encode_event_cb(event: HostEvent, from_host_id: int, from_generation: int) -> bytes:
    header = dict(
        magic=SM_MAGIC, version=SM_CB_PROTO, cmd=SM_CB_GET_EVENT, cmd_flags=0, length=80, seq=0, data=0, data2=0
    )
    return bytes(
        build(event_cb, dict(h=header, he=vars(event), from_host_id=from_host_id, from_generation=from_generation))
    )


# --------------------------------------------------------------------------
# Framing


class FramingError(Exception):
    """A well-formed header whose body cannot be framed (count or size out of range).

    ``rc`` is the result a sanlock daemon would reply; the reader then skips
    the body by ``length`` (bounded) and resynchronises.
    """

    def __init__(self, rc: int, detail: str) -> None:
        super().__init__(rc, detail)
        self.rc = rc
        self.detail = detail


_FIXED_BODY: dict[int, int] = {
    Cmd.REGISTER: 0,
    Cmd.ADD_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.REM_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.SHUTDOWN: 0,
    Cmd.STATUS: 0,
    Cmd.LOG_DUMP: 0,
    Cmd.INQUIRE: 0,
    Cmd.RESTRICT: 0,
    Cmd.ALIGN: DISK_SIZE,
    Cmd.EXAMINE_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.EXAMINE_RESOURCE: RESOURCE_SIZE,
    Cmd.HOST_STATUS: LOCKSPACE_SIZE,
    Cmd.INQ_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.KILLPATH: KILLPATH_SIZE,
    Cmd.WRITE_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.READ_LOCKSPACE: LOCKSPACE_SIZE,
    Cmd.GET_LOCKSPACES: 0,
    Cmd.GET_HOSTS: LOCKSPACE_SIZE,
    Cmd.GET_LVB: RESOURCE_SIZE,
    Cmd.CONVERT: RESOURCE_SIZE,
    Cmd.VERSION: 0,
    Cmd.SHUTDOWN_WAIT: 0,
    Cmd.REG_EVENT: LOCKSPACE_SIZE + HOST_EVENT_SIZE,
    Cmd.END_EVENT: LOCKSPACE_SIZE,
    Cmd.SET_EVENT: LOCKSPACE_SIZE + HOST_EVENT_SIZE,
    Cmd.SET_CONFIG: LOCKSPACE_SIZE,
    Cmd.RENEWAL: LOCKSPACE_SIZE,
    Cmd.FORMAT_RINDEX: LOCKSPACE_SIZE,
    Cmd.UPDATE_RINDEX: LOCKSPACE_SIZE + RENTRY_SIZE,
    Cmd.LOOKUP_RINDEX: LOCKSPACE_SIZE + RENTRY_SIZE,
    Cmd.CREATE_RESOURCE: LOCKSPACE_SIZE + RENTRY_SIZE,
    Cmd.DELETE_RESOURCE: LOCKSPACE_SIZE + RENTRY_SIZE,
    Cmd.REBUILD_RINDEX: LOCKSPACE_SIZE,
    Cmd.LEASED_METRICS: 0,
    Cmd.LEASED_HEALTH: 0,
}

_ONE_RESOURCE_WITH_DISKS = frozenset({Cmd.REQUEST, Cmd.WRITE_RESOURCE, Cmd.READ_RESOURCE, Cmd.READ_RESOURCE_OWNERS})


def is_known_command(cmd: int) -> bool:
    return cmd in _FIXED_BODY or cmd in _ONE_RESOURCE_WITH_DISKS or cmd in (Cmd.ACQUIRE, Cmd.RELEASE, Cmd.SET_LVB)


def header_problem(header: Header) -> str | None:
    """Why a header cannot start a request (None when it can): magic, version, command."""
    if header.magic != SM_MAGIC:
        return f"magic 0x{header.magic:x} vs 0x{SM_MAGIC:x}"
    if header.version != 0 and header.cmd != Cmd.VERSION and header.version & SM_PROTO_MAJOR_MASK:
        return f"version 0x{header.version:x}"
    if not is_known_command(header.cmd):
        return f"cmd {header.cmd} unknown"
    return None


def _resources_with_disks(body: bytes, offset: int, count: int) -> tuple[int, bool]:
    """Bytes used by ``count`` resources each followed by its disks, from ``offset``.

    Returns ``(end, exact)``: ``exact`` is false while a resource header that
    decides the size has not arrived, and ``end`` is then a lower bound.
    """
    for _ in range(count):
        if len(body) < offset + RESOURCE_SIZE:
            return offset + RESOURCE_SIZE, False
        num_disks = int.from_bytes(body[offset + 124 : offset + 128], "little")
        if not 1 <= num_disks <= MAX_DISKS:
            raise FramingError(ResultCode.ERANGE, f"num_disks {num_disks} not in 1..{MAX_DISKS}")
        offset += RESOURCE_SIZE + num_disks * DISK_SIZE
    return offset, True


def body_size(header: Header, body: bytes) -> int:
    """How many body bytes this request carries, judging from ``body`` read so far.

    A result larger than ``len(body)`` means "read at least that much and ask
    again"; when it is ``<= len(body)`` the request is complete.  Raises
    :class:`FramingError` for counts and sizes outside sanlock's limits.
    """
    cmd = header.cmd
    fixed = _FIXED_BODY.get(cmd)
    if fixed is not None:
        return fixed
    if cmd in _ONE_RESOURCE_WITH_DISKS:
        return _resources_with_disks(body, 0, 1)[0]
    if cmd == Cmd.ACQUIRE:
        count = header.data
        if not 1 <= count <= MAX_RESOURCES:
            raise FramingError(ResultCode.E2BIG if count else ResultCode.EINVAL, f"resource count {count}")
        end, exact = _resources_with_disks(body, 0, count)
        return end + OPTIONS_SIZE if exact else end
    if cmd == Cmd.RELEASE:
        flags, count = header.cmd_flags, header.data
        if flags & REL_ALL:
            # sanlock reads no body here, but libsanlock still sends `count` structs: take them
            # when the length says so, so they are not misread as headers.
            return (
                count * RESOURCE_SIZE
                if count <= MAX_RESOURCES and header.length == HEADER_SIZE + count * RESOURCE_SIZE
                else 0
            )
        if flags & REL_RENAME:
            return 2 * RESOURCE_SIZE
        if flags & REL_ORPHAN:
            return RESOURCE_SIZE
        if not 1 <= count <= MAX_RESOURCES:
            raise FramingError(ResultCode.E2BIG if count else ResultCode.EINVAL, f"resource count {count}")
        return count * RESOURCE_SIZE
    if cmd == Cmd.SET_LVB:
        lvb_len = header.length - HEADER_SIZE - RESOURCE_SIZE
        if lvb_len < 0 or lvb_len > MAX_LVB:
            raise FramingError(ResultCode.E2BIG, f"lvb length {lvb_len} not in 0..{MAX_LVB}")
        return RESOURCE_SIZE + lvb_len
    raise FramingError(ResultCode.EINVAL, f"cmd {cmd} unknown")


MAX_DISK_OFFSET: Final = (1 << 63) - 1
"""The largest disk offset a request may name: ``off_t`` is signed, the wire field is u64."""

_LOCKSPACE_DISK_AT: Final = NAME_LEN + 8 + 4 + 4
"""Where ``host_id_disk`` starts inside a sanlk_lockspace."""

_LOCKSPACE_FIRST = frozenset(cmd for cmd, size in _FIXED_BODY.items() if size >= LOCKSPACE_SIZE and cmd != Cmd.KILLPATH)
"""Commands whose body starts with a sanlk_lockspace."""


def _disk_offsets(header: Header, body: bytes) -> list[int]:
    """Where each sanlk_disk of a complete, framed body starts."""
    cmd = header.cmd
    if cmd in _LOCKSPACE_FIRST:
        return [_LOCKSPACE_DISK_AT]
    if cmd == Cmd.ALIGN:
        return [0]
    if cmd == Cmd.ACQUIRE or cmd in _ONE_RESOURCE_WITH_DISKS:
        offsets, at = [], 0
        for _ in range(header.data if cmd == Cmd.ACQUIRE else 1):
            num_disks = int.from_bytes(body[at + 124 : at + 128], "little")
            offsets += [at + RESOURCE_SIZE + i * DISK_SIZE for i in range(num_disks)]
            at += RESOURCE_SIZE + num_disks * DISK_SIZE
        return offsets
    return []


def body_problem(header: Header, body: bytes) -> FramingError | None:
    """Why a complete, framed body must not reach a handler (None when it may).

    Checked once per request before any handler runs, so no handler meets
    these: a disk path that fills all 1024 bytes with no NUL (sanlock's
    paths end inside the field; such a path could never be written back
    into a STATUS record), and a disk offset no ``pread`` can address.
    """
    for at in _disk_offsets(header, body):
        if b"\0" not in body[at : at + PATH_LEN]:
            detail = f"disk path at body offset {at} has no NUL in {PATH_LEN} bytes"
            return FramingError(ResultCode.ENAMETOOLONG, detail)
        offset = int.from_bytes(body[at + PATH_LEN : at + PATH_LEN + 8], "little")
        if offset > MAX_DISK_OFFSET:
            return FramingError(ResultCode.EINVAL, f"disk offset {offset} above {MAX_DISK_OFFSET}")
    return None


def split_resources(body: bytes, count: int, with_disks: bool) -> tuple[list[Resource], int]:
    """Decode ``count`` resources from a framed body; returns them and the bytes used."""
    resources, offset = [], 0
    for _ in range(count):
        head = body[offset : offset + RESOURCE_SIZE]
        offset += RESOURCE_SIZE
        disks: tuple[Disk, ...] = ()
        if with_disks:
            num_disks = int.from_bytes(head[124:128], "little")
            disks = tuple(
                Disk.decode(body[offset + i * DISK_SIZE : offset + (i + 1) * DISK_SIZE]) for i in range(num_disks)
            )
            offset += num_disks * DISK_SIZE
        resources.append(Resource.decode(head, disks))
    return resources, offset
