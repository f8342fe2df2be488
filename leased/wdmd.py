"""wdmd's wire format: the messages a lease manager sends the watchdog multiplexing daemon.

wdmd (shipped with sanlock) owns ``/dev/watchdog`` and pets it only while
every registered client says it is alive.  A client is one connection to
``/run/wdmd/wdmd.sock`` (the path is compiled into wdmd).  Every message,
both ways, is the same fixed 176-byte header in the host's byte order:

======  =====  ==================================================
offset  size   field
======  =====  ==================================================
0       u32    magic (wdmd 3.8.5 neither sets nor checks it)
4       u32    cmd
8       u32    len
12      u32    flags
16      u32    test_interval (STATUS reply: seconds between tests)
20      u32    fire_timeout (STATUS reply: the device's timeout)
24      u64    last_keepalive (STATUS reply: monotonic seconds)
32      u64    renewal_time (TEST_LIVE: the lease's last renewal)
40      u64    expire_time (TEST_LIVE: when wdmd must stop petting)
48      128    name (REGISTER: the client's name, NUL-padded)
======  =====  ==================================================

Only STATUS (and DUMP_DEBUG) are answered; REGISTER takes the client's pid
from the socket's credentials.  Later wdmd versions add command 7 (open the
device); 3.8.5 ignores it and never replies, so this module offers commands
1 to 5 only.  Times are CLOCK_MONOTONIC seconds, the clock sanlock's (and
leased's) delta-lease timestamps use, so a renewal's timestamp is the
``renewal_time`` as it is.  Pure: no sockets here (:mod:`leased.watchdog`
does the I/O).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from construct import Bytes, Int32un, Int64un, Struct

from leased.schema import build, parse_exact, sizeof

WDMD_SOCKET: Final = "/run/wdmd/wdmd.sock"
"""Where wdmd listens; not configurable in wdmd 3.8.5."""

NAME_SIZE: Final = 128


class WdmdCmd(enum.IntEnum):
    REGISTER = 1
    REFCOUNT_SET = 2
    REFCOUNT_CLEAR = 3
    TEST_LIVE = 4
    STATUS = 5


wdmd_header = Struct(
    "magic" / Int32un,
    "cmd" / Int32un,
    "len" / Int32un,
    "flags" / Int32un,
    "test_interval" / Int32un,
    "fire_timeout" / Int32un,
    "last_keepalive" / Int64un,
    "renewal_time" / Int64un,
    "expire_time" / Int64un,
    "name" / Bytes(NAME_SIZE),
)

HEADER_SIZE: Final = sizeof(wdmd_header)


@dataclass(frozen=True)
class WdmdStatus:
    """wdmd's answer to STATUS."""

    test_interval: int
    fire_timeout: int
    last_keepalive: int


def message(cmd: WdmdCmd, *, name: bytes = b"", renewal_time: int = 0, expire_time: int = 0) -> bytes:
    """One request: the header with only what ``cmd`` uses filled in (the rest zero, as wdmd's own client)."""
    if len(name) >= NAME_SIZE:
        raise ValueError(f"wdmd client name of {len(name)} bytes: at most {NAME_SIZE - 1}")
    return build(
        wdmd_header,
        dict(
            magic=0,
            cmd=cmd,
            len=0,
            flags=0,
            test_interval=0,
            fire_timeout=0,
            last_keepalive=0,
            renewal_time=renewal_time,
            expire_time=expire_time,
            name=name.ljust(NAME_SIZE, b"\0"),
        ),
    )


def register(name: bytes) -> bytes:
    return message(WdmdCmd.REGISTER, name=name)


def alive(renewal_time: int, expire_time: int) -> bytes:
    """Alive as of ``renewal_time``; wdmd stops petting at ``expire_time``.  (0, 0) disarms this client."""
    return message(WdmdCmd.TEST_LIVE, renewal_time=renewal_time, expire_time=expire_time)


def decode_status(raw: bytes) -> WdmdStatus:
    """A STATUS reply (exactly :data:`HEADER_SIZE` bytes, else ValueError)."""
    parsed = parse_exact(wdmd_header, raw)
    return WdmdStatus(parsed.number("test_interval"), parsed.number("fire_timeout"), parsed.number("last_keepalive"))


def client_name(lockspace: bytes, host_id: int) -> bytes:
    """sanlock's name for a lockspace's wdmd client, ``sanlock_<lockspace>:<host_id>`` (wdmd logs it)."""
    return f"sanlock_{lockspace.decode(errors='replace')}:{host_id}".encode()[: NAME_SIZE - 1]
