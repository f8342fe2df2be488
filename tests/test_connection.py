"""The per-connection reader against the spec's byte traces (§12.1), malformed input (§8) and random streams.

Every stream is fed three ways, as h11's tests do: whole, one byte at a time,
and followed by the start of the next message.  The reader must give the same
requests each way and never raise, whatever it is fed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leased.connection import DEFAULT_MAX_BUFFER, MAGIC, BadMessage, Event, MessageReader, Request
from leased.errors import ResultCode
from leased.protocol import (
    ACQUIRE_LVB,
    DISK_SIZE,
    HEADER_SIZE,
    LOCKSPACE_SIZE,
    MAX_BODY,
    NAME_LEN,
    OPTIONS_SIZE,
    RES_LVER,
    RES_SHARED,
    RESOURCE_SIZE,
    TARGET_SELF,
    Cmd,
    Disk,
    Header,
    HostEvent,
    Killpath,
    Lockspace,
    Options,
    Resource,
)

MiB = 1 << 20
ANOTHER_HEADER = "body is another header"

# --------------------------------------------------------------------------
# Helpers


def words(*hex_words: str) -> bytes:
    return b"".join(bytes.fromhex(w) for w in hex_words)


def wire(header: Header, body: bytes = b"", length: int | None = None) -> tuple[bytes, Request]:
    """A request as libsanlock would send it (``length`` = 32 + body unless given) and the event it must give."""
    header = replace(header, length=HEADER_SIZE + len(body) if length is None else length)
    raw = header.encode() + body
    return raw, Request(Header.decode(raw[:HEADER_SIZE]), body)


def drain(reader: MessageReader) -> list[Event]:
    """Every event now available; each must consume bytes, so this cannot spin."""
    events: list[Event] = []
    while True:
        before = reader.buffered
        event = reader.next_event()
        if event is None:
            # A stalled reader with a full buffer would deadlock the daemon.
            assert reader.buffered < HEADER_SIZE + MAX_BODY
            return events
        assert reader.buffered < before
        events.append(event)


def run(chunks: Iterable[bytes], reader: MessageReader | None = None) -> list[Event]:
    """Feed ``chunks`` the way the daemon does: never more than room(), draining after each feed."""
    reader = MessageReader() if reader is None else reader
    events: list[Event] = []
    for chunk in chunks:
        while chunk:
            room = reader.room()
            assert room > 0
            reader.feed(chunk[:room])
            chunk = chunk[room:]
            assert reader.buffered <= DEFAULT_MAX_BUFFER
            events += drain(reader)
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def requests_of(events: list[Event]) -> list[Request]:
    return [event for event in events if isinstance(event, Request)]


def bad(events: list[Event]) -> list[BadMessage]:
    return [event for event in events if isinstance(event, BadMessage)]


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    edges = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


VERSION_RAW, VERSION_REQ = wire(Header(Cmd.VERSION))
INQUIRE_RAW, INQUIRE_REQ = wire(Header(Cmd.INQUIRE, data2=TARGET_SELF))

# --------------------------------------------------------------------------
# Requests from python3-sanlock 3.8.5 (§12.1), headers verbatim

R1 = Resource(b"LS", b"R1", disks=(Disk("/tmp/x y", MiB),))
R1_SHARED = Resource(
    b"LS", b"R1", lver=5, flags=RES_LVER | RES_SHARED, disks=(Disk("/tmp/x y", MiB), Disk("/tmp/z", 4096))
)
LS = Lockspace(b"LS", 1, disk=Disk("/tmp/d", 0))
ACQUIRE_BODY = R1.encode() + Options().encode()
RES_ONLY = R1.encode(with_disks=False)


def trace(*hex_words: str) -> Header:
    return Header.decode(words(*hex_words))


TRACES: dict[str, tuple[Header, bytes]] = {
    "register": (
        trace("10202804", "01000000", "01000000", "00000000", "20000000", "00000000", "00000000", "00000000"),
        b"",
    ),
    "acquire": (
        trace("10202804", "01000000", "07000000", "00000000", "e8040000", "00000000", "01000000", "ffffffff"),
        ACQUIRE_BODY,
    ),
    "acquire-2-disks": (
        trace("10202804", "01000000", "07000000", "01000000", "f8080000", "00000000", "01000000", "ffffffff"),
        R1_SHARED.encode() + Options().encode(),
    ),
    "acquire-pid": (
        trace("10202804", "01000000", "07000000", "00000000", "e8040000", "00000000", "01000000", "92100000"),
        ACQUIRE_BODY,
    ),
    "inquire": (
        trace("10202804", "01000000", "09000000", "00000000", "20000000", "00000000", "00000000", "ffffffff"),
        b"",
    ),
    "inquire-pid": (
        trace("10202804", "01000000", "09000000", "00000000", "20000000", "00000000", "00000000", "92100000"),
        b"",
    ),
    "release": (
        trace("10202804", "01000000", "08000000", "00000000", "a0000000", "00000000", "01000000", "ffffffff"),
        RES_ONLY,
    ),
    "killpath": (
        trace("10202804", "01000000", "11000000", "00000000", "20010000", "00000000", "00000000", "ffffffff"),
        Killpath("/usr/bin/killer", "-9 x").encode(),
    ),
    "add_lockspace": (
        trace("10202804", "01000000", "02000000", "00000000", "70040000", "00000000", "00000000", "00000000"),
        LS.encode(),
    ),
    "inq_lockspace": (
        trace("10202804", "01000000", "10000000", "01000000", "70040000", "00000000", "00000000", "00000000"),
        LS.encode(),
    ),
    "get_lockspaces": (
        trace("10202804", "01000000", "16000000", "00000000", "20000000", "00000000", "00000000", "00000000"),
        b"",
    ),
    "get_hosts": (
        trace("10202804", "01000000", "17000000", "00000000", "70040000", "00000000", "00000000", "00000000"),
        Lockspace(b"LS", 7).encode(),
    ),
    "read_resource": (
        trace("10202804", "01000000", "15000000", "00000000", "b0040000", "00000000", "00000000", "00000000"),
        Resource(b"", b"", flags=0x110, disks=(Disk("/tmp/d", MiB),)).encode(),
    ),
    "write_resource": (
        trace("10202804", "01000000", "13000000", "01000000", "b0040000", "00000000", "03000000", "02000000"),
        R1.encode(),
    ),
    "request": (
        trace("10202804", "01000000", "0b000000", "00000000", "b0040000", "00000000", "01000000", "00000000"),
        replace(R1, lver=9, flags=RES_LVER).encode(),
    ),
    "set_lvb": (
        trace("10202804", "01000000", "19000000", "00000000", "a3000000", "00000000", "00000000", "00000000"),
        RES_ONLY + b"abc",
    ),
    "get_lvb": (
        trace("10202804", "01000000", "1a000000", "00000000", "a0000000", "00000000", "00000000", "00000000"),
        RES_ONLY,
    ),
    "set_event": (
        trace("10202804", "01000000", "20000000", "01000000", "90040000", "00000000", "00000000", "00000000"),
        Lockspace(b"LS").encode() + HostEvent(3, 4, 5, 6).encode(),
    ),
    "reg_event": (
        trace("10202804", "01000000", "1e000000", "00000000", "90040000", "00000000", "00000000", "00000000"),
        Lockspace(b"LS").encode() + bytes(32),
    ),
    "end_event": (
        trace("10202804", "01000000", "1f000000", "00000000", "70040000", "00000000", "00000000", "00000000"),
        Lockspace(b"LS").encode(),
    ),
    # Not in §12.1's table but described in §2.1: length 32, yet a 1104-byte lockspace follows.
    "host_status": (Header(Cmd.HOST_STATUS, length=HEADER_SIZE), Lockspace(b"LS").encode()),
    "renewal": (Header(Cmd.RENEWAL, length=HEADER_SIZE), Lockspace(b"LS").encode()),
    # LOOKUP_RINDEX declares 32 + 1104 + 128 but sends 1104 + 64.
    "lookup_rindex": (
        Header(Cmd.LOOKUP_RINDEX, length=HEADER_SIZE + LOCKSPACE_SIZE + 128),
        Lockspace(b"LS").encode() + bytes(64),
    ),
    "version": (Header(Cmd.VERSION), b""),
}


def test_trace_bodies_have_the_sizes_the_spec_gives() -> None:
    sizes = {name: len(body) for name, (_, body) in TRACES.items()}
    assert sizes["acquire"] == 1224
    assert sizes["acquire-2-disks"] == 2264
    assert sizes["release"] == 128
    assert sizes["read_resource"] == 1168
    assert sizes["set_lvb"] == 131
    assert sizes["host_status"] == LOCKSPACE_SIZE
    for name, (header, body) in TRACES.items():
        if name not in ("host_status", "renewal", "lookup_rindex"):
            assert header.length == HEADER_SIZE + len(body), name


@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize("mode", ["whole", "bytewise", "trailing"])
def test_trace_request_is_framed_by_command(name: str, mode: str) -> None:
    header, body = TRACES[name]
    raw = header.encode() + body
    expected: list[Event] = [Request(header, body)]
    reader = MessageReader()
    if mode == "whole":
        events = run([raw], reader)
    elif mode == "bytewise":
        events = run(bytewise(raw), reader)
    else:
        # The next request whole and the start of a third: only the first two come out.
        events = run([raw + VERSION_RAW + INQUIRE_RAW[:10]], reader)
        expected.append(VERSION_REQ)
        assert reader.buffered == 10
    assert events == expected
    if mode == "trailing":
        assert reader.eof() == BadMessage("truncated header at EOF (got 10 of 32 bytes)", None, None, 10)
    else:
        assert reader.eof() is None


def test_every_trace_back_to_back_in_one_stream() -> None:
    stream = b"".join(header.encode() + body for header, body in TRACES.values())
    expected = [Request(header, body) for header, body in TRACES.values()]
    assert run([stream]) == expected
    assert run(bytewise(stream)) == expected


def test_commands_without_body_are_complete_at_the_header() -> None:
    reader = MessageReader()
    reader.feed(VERSION_RAW)
    assert reader.next_event() == VERSION_REQ
    assert reader.buffered == 0


def test_release_all_takes_the_structs_its_length_announces() -> None:
    raw, request = wire(Header(Cmd.RELEASE, cmd_flags=0x1, data=2, data2=TARGET_SELF), RES_ONLY * 2)
    assert run([raw + VERSION_RAW]) == [request, VERSION_REQ]
    raw, request = wire(Header(Cmd.RELEASE, cmd_flags=0x1, data=0, data2=TARGET_SELF))
    assert run([raw + VERSION_RAW]) == [request, VERSION_REQ]


def test_version_request_with_a_newer_major_is_accepted() -> None:
    """§2.2: VERSION is never rejected, so a newer client can always ask; version 0 is accepted too."""
    raw, request = wire(Header(Cmd.VERSION, version=0x20000))
    assert run([raw]) == [request]
    raw, request = wire(Header(Cmd.GET_LOCKSPACES, version=0))
    assert run([raw]) == [request]


# --------------------------------------------------------------------------
# Bad headers (§8): one complaint, then the next request


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (Header(Cmd.VERSION, magic=0), "magic 0x0 vs 0x4282010"),
        (Header(Cmd.GET_LOCKSPACES, version=0x20000), "version 0x20000"),
        (Header(99), "cmd 99 unknown"),
        (Header(0), "cmd 0 unknown"),
    ],
)
@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_bad_header_is_reported_once_and_the_next_request_recovered(header: Header, reason: str, mode: str) -> None:
    raw = header.encode() + VERSION_RAW + INQUIRE_RAW
    events = run([raw] if mode == "whole" else bytewise(raw))
    assert events == [BadMessage(reason, header, None, HEADER_SIZE), VERSION_REQ, INQUIRE_REQ]


def test_bad_header_and_its_body_are_one_complaint() -> None:
    """sanlock would parse the 1224 body bytes as 38 more bad headers; we skip to the next magic."""
    header = replace(TRACES["acquire"][0], version=0x20000)
    events = run([header.encode() + ACQUIRE_BODY + VERSION_RAW])
    assert events == [BadMessage("version 0x20000", header, None, HEADER_SIZE + len(ACQUIRE_BODY)), VERSION_REQ]


def test_stray_zero_bytes_after_a_request() -> None:
    """The §8 interleaving example: RELEASE, then 32 stray zero bytes, then more requests."""
    release, release_req = wire(*TRACES["release"])
    events = run([release + bytes(32) + INQUIRE_RAW])
    assert events == [
        release_req,
        BadMessage("magic 0x0 vs 0x4282010", Header.decode(bytes(32)), None, 32),
        INQUIRE_REQ,
    ]


def test_long_garbage_stays_bounded_and_gives_few_complaints() -> None:
    garbage = bytes(range(256)).replace(b"\x10", b"") * 2000  # ~500 KB, no magic
    reader = MessageReader()
    events = run([garbage, VERSION_RAW], reader)
    assert events[-1] == VERSION_REQ
    complaints = bad(events)
    assert 1 <= len(complaints) <= 1 + len(garbage) // reader.room()
    assert sum(c.discarded for c in complaints) == len(garbage)


def test_garbage_ending_in_part_of_a_magic_keeps_only_that_part() -> None:
    reader = MessageReader()
    reader.feed(b"x" * 40 + VERSION_RAW[:2])
    [complaint] = drain(reader)
    assert isinstance(complaint, BadMessage) and complaint.discarded == 40
    assert reader.buffered == 2
    reader.feed(VERSION_RAW[2:])
    assert drain(reader) == [VERSION_REQ]


def test_a_magic_without_a_plausible_header_is_skipped_while_resynchronising() -> None:
    fake = Header(Cmd.VERSION, length=0).encode()  # right magic and command, impossible length
    events = run([b"junk" * 10 + fake + VERSION_RAW])
    assert events[-1] == VERSION_REQ
    assert len(bad(events)) == 1


# --------------------------------------------------------------------------
# Two unlocked threads on one socket: header_1, header_2, body_1, body_2


def test_seed_acquire_then_inquire() -> None:
    acq_header, acq_body = TRACES["acquire"]
    stream = acq_header.encode() + INQUIRE_RAW + acq_body + VERSION_RAW
    for events in (run([stream]), run(bytewise(stream))):
        assert events[0] == BadMessage(ANOTHER_HEADER, acq_header, None, HEADER_SIZE)
        assert events[1] == INQUIRE_REQ
        # The orphaned acquire body is garbage (one complaint per feed at most); VERSION comes through.
        assert events[-1] == VERSION_REQ
        assert all(isinstance(e, BadMessage) and e.rc is None for e in events[2:-1])
    assert len(run([stream])) == 4


def test_seed_acquire_then_release() -> None:
    acq_header, acq_body = TRACES["acquire"]
    rel_header, rel_body = TRACES["release"]
    stream = acq_header.encode() + rel_header.encode() + acq_body + rel_body + INQUIRE_RAW
    events = run([stream])
    assert events[0] == BadMessage(ANOTHER_HEADER, acq_header, None, HEADER_SIZE)
    # As in sanlock, the release reads the first 128 bytes that follow: the acquire's resource.
    assert events[1] == Request(rel_header, acq_body[:RESOURCE_SIZE])
    assert events[-1] == INQUIRE_REQ
    assert all(isinstance(e, BadMessage) and e.rc is None for e in events[2:-1])
    assert requests_of(run(bytewise(stream))) == requests_of(events)


def test_seed_acquire_then_acquire() -> None:
    h1, body1 = TRACES["acquire"]
    h2, body2 = TRACES["acquire-2-disks"]
    stream = h1.encode() + h2.encode() + body1 + body2 + VERSION_RAW
    events = run([stream])
    assert events[0] == BadMessage(ANOTHER_HEADER, h1, None, HEADER_SIZE)
    # The second header takes the first body: the bytes decide, as they would for sanlock.
    assert events[1] == Request(h2, body1)
    assert events[-1] == VERSION_REQ
    assert requests_of(run(bytewise(stream))) == requests_of(events)


def test_body_starting_like_a_foreign_version_header_is_kept() -> None:
    """Only headers with version 0 or 1 count as "another header" inside a body."""
    odd = Header(Cmd.VERSION, version=0x20000).encode()
    raw, request = wire(Header(Cmd.EXAMINE_RESOURCE), odd + bytes(RESOURCE_SIZE - HEADER_SIZE))
    assert run([raw]) == [request]


# --------------------------------------------------------------------------
# Bodies that cannot be framed: reply rc, skip, but not past a header


def test_acquire_of_nine_resources_is_e2big_and_its_body_skipped() -> None:
    body = R1.encode() * 9 + Options().encode()
    header = Header(Cmd.ACQUIRE, data=9, data2=TARGET_SELF, length=HEADER_SIZE + len(body))
    events = run([header.encode() + body + VERSION_RAW])
    # -7 is -E2BIG, what sanlock replies for more than 8 resources.
    assert events == [BadMessage("resource count 9", header, -7, HEADER_SIZE + len(body)), VERSION_REQ]


def test_acquire_with_five_disks_is_erange() -> None:
    resource = replace(R1, num_disks=5, disks=(Disk("/d", 0),) * 5)
    body = resource.encode() + Options().encode()
    header = Header(Cmd.ACQUIRE, data=1, data2=TARGET_SELF, length=HEADER_SIZE + len(body))
    for chunks in ([header.encode() + body + VERSION_RAW], bytewise(header.encode() + body + VERSION_RAW)):
        complaint, *rest = run(chunks)
        assert isinstance(complaint, BadMessage)
        assert complaint.rc == -34  # -ERANGE
        assert complaint.reason == "num_disks 5 not in 1..4"
        assert complaint.header == header
        assert rest == [VERSION_REQ]


def _patched(body: bytes, at: int, raw: bytes) -> bytes:
    return body[:at] + raw + body[at + len(raw) :]


LOCKSPACE_PATH_AT = NAME_LEN + 16


@pytest.mark.parametrize(
    ("patch", "rc", "reason"),
    [
        ((LOCKSPACE_PATH_AT, b"p" * 1024), -36, "disk path at body offset 64 has no NUL in 1024 bytes"),
        ((LOCKSPACE_PATH_AT + 1024, (2**63).to_bytes(8, "little")), -22, f"disk offset {2**63} above {2**63 - 1}"),
    ],
)
@pytest.mark.parametrize("cmd", [Cmd.ADD_LOCKSPACE, Cmd.INQ_LOCKSPACE, Cmd.WRITE_LOCKSPACE, Cmd.GET_HOSTS])
def test_disk_fields_are_checked_before_handlers(cmd: Cmd, patch: tuple[int, bytes], rc: int, reason: str) -> None:
    """A path filling its field with no NUL, or an offset no pread takes, never reaches a handler."""
    body = _patched(Lockspace(b"LS", 1, 0, Disk("/d", 0)).encode(), *patch)
    header = Header(cmd, length=HEADER_SIZE + len(body))
    stream = header.encode() + body + VERSION_RAW
    for chunks in ([stream], bytewise(stream)):
        assert run(chunks) == [BadMessage(reason, header, rc, HEADER_SIZE + len(body)), VERSION_REQ]


def test_every_disk_of_an_acquire_is_checked() -> None:
    good = Resource(b"LS", b"R1", num_disks=2, disks=(Disk("/a", 0), Disk("/b", 2**63 - 1)))
    bad_offset = Resource(b"LS", b"R2", num_disks=2, disks=(Disk("/a", 0), Disk("/b", 0)))
    raw_bad = _patched(bad_offset.encode(), RESOURCE_SIZE + DISK_SIZE + 1024, (2**64 - 1).to_bytes(8, "little"))
    body = good.encode() + raw_bad + Options().encode()
    header = Header(Cmd.ACQUIRE, data=2, data2=TARGET_SELF, length=HEADER_SIZE + len(body))
    (complaint,) = run([header.encode() + body])
    assert isinstance(complaint, BadMessage) and complaint.rc == -22
    ok_body = good.encode() + Options().encode()
    ok = Header(Cmd.ACQUIRE, data=1, data2=TARGET_SELF, length=HEADER_SIZE + len(ok_body))
    assert run([ok.encode() + ok_body]) == [Request(ok, ok_body)]


@pytest.mark.parametrize("mode", ["whole", "bytewise", "late"])
def test_a_lying_length_does_not_swallow_the_next_request(mode: str) -> None:
    header = Header(Cmd.ACQUIRE, data=9, data2=TARGET_SELF, length=HEADER_SIZE + MAX_BODY)
    junk = b"j" * 100
    if mode == "whole":
        chunks = [header.encode() + junk + VERSION_RAW + INQUIRE_RAW]
    elif mode == "bytewise":
        chunks = bytewise(header.encode() + junk + VERSION_RAW + INQUIRE_RAW)
    else:
        chunks = [header.encode(), junk, VERSION_RAW[:5], VERSION_RAW[5:] + INQUIRE_RAW]
    complaint, *rest = run(chunks)
    assert isinstance(complaint, BadMessage)
    assert complaint.header == header and complaint.rc == ResultCode.E2BIG
    assert rest == [VERSION_REQ, INQUIRE_REQ]
    if mode == "whole":
        assert complaint.discarded == HEADER_SIZE + len(junk)


def test_skip_stops_at_the_declared_length() -> None:
    """Bytes after the declared body are a new message even without a magic search."""
    header = Header(Cmd.RELEASE, data=0, length=HEADER_SIZE + 10)
    events = run([header.encode() + b"x" * 10 + VERSION_RAW])
    assert events == [BadMessage("resource count 0", header, ResultCode.EINVAL, HEADER_SIZE + 10), VERSION_REQ]


@pytest.mark.parametrize("length", [HEADER_SIZE, 0, 0xFFFFFFFF])
def test_set_lvb_with_an_impossible_length(length: int) -> None:
    header = Header(Cmd.SET_LVB, length=length)
    complaint, *rest = run([header.encode() + VERSION_RAW])
    assert isinstance(complaint, BadMessage)
    assert complaint.rc == ResultCode.E2BIG and complaint.header == header
    assert rest == [VERSION_REQ]


# --------------------------------------------------------------------------
# End of stream, buffer bounds


def test_eof_with_a_partial_header() -> None:
    reader = MessageReader()
    reader.feed(VERSION_RAW[:6])
    assert reader.next_event() is None
    assert reader.eof() == BadMessage("truncated header at EOF (got 6 of 32 bytes)", None, None, 6)
    assert reader.buffered == 0 and reader.eof() is None


def test_eof_with_a_partial_body() -> None:
    header, body = TRACES["acquire"]
    reader = MessageReader()
    reader.feed(header.encode() + body[:100])
    assert reader.next_event() is None
    event = reader.eof()
    assert event is not None
    assert (event.header, event.rc, event.discarded) == (header, None, HEADER_SIZE + 100)
    assert event.reason.startswith("truncated body at EOF")


def test_clean_eof_and_eof_while_skipping() -> None:
    reader = MessageReader()
    assert reader.eof() is None
    reader.feed(Header(Cmd.ACQUIRE, data=9, length=1000).encode() + b"x" * 10)
    [event] = drain(reader)
    assert isinstance(event, BadMessage) and event.rc == ResultCode.E2BIG
    assert reader.eof() is None


def test_feed_refuses_more_than_room() -> None:
    reader = MessageReader()
    reader.feed(bytes(reader.room()))
    assert reader.room() == 0
    with pytest.raises(ValueError):
        reader.feed(b"x")
    assert drain(reader) and reader.room() > 0


def test_max_buffer_must_hold_the_largest_request() -> None:
    with pytest.raises(ValueError):
        MessageReader(HEADER_SIZE + MAX_BODY - 1)
    resources = tuple(replace(R1, disks=(Disk("/d", 0),) * 4) for _ in range(8))
    raw, request = wire(
        Header(Cmd.ACQUIRE, data=8, data2=TARGET_SELF), b"".join(r.encode() for r in resources) + Options().encode()
    )
    assert len(raw) == HEADER_SIZE + MAX_BODY
    reader = MessageReader(HEADER_SIZE + MAX_BODY)
    assert run([raw], reader) == [request]


# --------------------------------------------------------------------------
# Hypothesis

names = st.binary(max_size=NAME_LEN).filter(lambda b: MAGIC not in b)
paths = st.text(st.characters(codec="utf-8"), max_size=40)
u64 = st.integers(0, 2**64 - 1)
pids = st.sampled_from([TARGET_SELF]) | st.integers(1, 2**22)
offsets = st.integers(0, 2**63 - 1)  # past it a request is refused (test_disk_fields_are_checked_before_handlers)
disks = st.builds(Disk, paths, offsets)
resources = st.builds(
    Resource,
    names,
    names,
    lver=u64,
    flags=st.sampled_from([0, RES_LVER, RES_SHARED, RES_LVER | RES_SHARED]),
    disks=st.lists(disks, min_size=1, max_size=4).map(tuple),
)
lockspaces = st.builds(Lockspace, names, st.integers(0, 2000), disk=disks)


def _acquire(rs: list[Resource], flags: int, pid: int, owner: bytes) -> tuple[bytes, Request]:
    body = b"".join(r.encode() for r in rs) + Options(owner).encode()
    return wire(Header(Cmd.ACQUIRE, cmd_flags=flags, data=len(rs), data2=pid), body)


def _release(rs: list[Resource], pid: int) -> tuple[bytes, Request]:
    body = b"".join(r.encode(with_disks=False) for r in rs)
    return wire(Header(Cmd.RELEASE, data=len(rs), data2=pid), body)


well_formed: st.SearchStrategy[tuple[bytes, Request]] = st.one_of(
    st.builds(lambda: wire(Header(Cmd.REGISTER))),
    st.builds(lambda seq: wire(Header(Cmd.VERSION, seq=seq)), st.integers(0, 2**32 - 1)),
    st.builds(lambda pid: wire(Header(Cmd.INQUIRE, data2=pid)), pids),
    st.builds(_acquire, st.lists(resources, min_size=1, max_size=3), st.sampled_from([0, ACQUIRE_LVB]), pids, names),
    st.builds(_release, st.lists(resources, min_size=1, max_size=8), pids),
    st.builds(lambda ls: wire(Header(Cmd.ADD_LOCKSPACE), ls.encode()), lockspaces),
    st.builds(lambda ls: wire(Header(Cmd.HOST_STATUS), ls.encode(), length=HEADER_SIZE), lockspaces),
    st.builds(
        lambda r, lvb: wire(Header(Cmd.SET_LVB), r.encode(with_disks=False) + lvb),
        resources,
        st.binary(max_size=64),
    ),
)
request_lists = st.lists(well_formed, min_size=1, max_size=6)


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    return cut(data, draw(st.lists(st.integers(0, len(data)), max_size=20)))


def header_fragments() -> st.SearchStrategy[bytes]:
    """Headers that are nearly right: to exercise resynchronisation and framing errors."""
    fields = st.builds(
        Header,
        cmd=st.integers(0, 45),
        cmd_flags=st.integers(0, 7),
        length=st.sampled_from([0, 32, 160, 1256, 2**32 - 1]) | st.integers(0, 2 * MAX_BODY),
        data=st.integers(0, 10),
        data2=st.sampled_from([0, TARGET_SELF]),
        version=st.sampled_from([0, 1, 2, 0x20000]),
    )
    return fields.map(lambda h: h.encode())


byte_soup = st.lists(
    st.one_of(
        st.binary(max_size=2048),
        st.just(MAGIC),
        st.binary(max_size=4).map(lambda b: MAGIC[: len(b)]),
        header_fragments(),
        well_formed.map(lambda pair: pair[0]),
        well_formed.map(lambda pair: pair[0][: len(pair[0]) // 2]),
        st.just(bytes(RESOURCE_SIZE - 4) + (5).to_bytes(4, "little")),  # a resource with 5 disks
    ),
    max_size=12,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(st.binary(max_size=2048)))
def test_random_chunks_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    reader = MessageReader()
    run(chunks, reader)
    reader.eof()
    assert reader.buffered == 0


@SETTINGS
@given(byte_soup)
def test_near_miss_streams_never_raise_and_stay_bounded(chunks: list[bytes]) -> None:
    reader = MessageReader()
    run(chunks, reader)
    event = reader.eof()
    assert event is None or event.discarded > 0


@SETTINGS
@given(st.binary(max_size=4096).filter(lambda g: MAGIC not in g), request_lists, st.data())
def test_garbage_then_requests_yields_exactly_the_requests(
    garbage: bytes, pairs: list[tuple[bytes, Request]], data: st.DataObject
) -> None:
    stream = garbage + b"".join(raw for raw, _ in pairs)
    expected = [request for _, request in pairs]
    whole = run([stream])
    assert whole == [*whole[: len(whole) - len(expected)], *expected]
    assert len(bad(whole)) == (1 if garbage else 0)
    split = run(data.draw(cuts(stream)))
    assert requests_of(split) == expected
    first = next(i for i, e in enumerate(split) if isinstance(e, Request))
    assert all(isinstance(e, BadMessage) for e in split[:first])
    assert all(isinstance(e, Request) for e in split[first:])


@SETTINGS
@given(request_lists, st.data())
def test_well_formed_streams_are_chunking_invariant(pairs: list[tuple[bytes, Request]], data: st.DataObject) -> None:
    stream = b"".join(raw for raw, _ in pairs)
    expected = [request for _, request in pairs]
    assert run([stream]) == expected
    assert run(data.draw(cuts(stream))) == expected


def dropped_headers(events: list[Event]) -> list[Header | None]:
    return [e.header for e in bad(events) if e.reason == ANOTHER_HEADER]


def owed(events: list[Event]) -> list[Request | tuple[Header | None, int | None]]:
    """What the daemon acts on: requests it serves and replies it owes for unframable bodies."""
    return [e if isinstance(e, Request) else (e.header, e.rc) for e in events if isinstance(e, Request) or e.rc]


@SETTINGS
@given(byte_soup, st.data())
def test_any_stream_gives_the_same_requests_and_replies_however_split(chunks: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(chunks)
    whole = run([stream])
    split = run(data.draw(cuts(stream)))
    assert owed(split) == owed(whole)
    assert dropped_headers(split) == dropped_headers(whole)


def test_hypothesis_builders_match_the_trace() -> None:
    """Guard against the strategies' helpers drifting from what libsanlock sends."""
    raw, request = _acquire([R1], 0, TARGET_SELF, b"")
    assert raw == TRACES["acquire"][0].encode() + ACQUIRE_BODY
    assert len(request.body) == RESOURCE_SIZE + DISK_SIZE + OPTIONS_SIZE
