"""The fuzzer's streams: reproducible from a seed, varied, and never able to harm the victim by design."""

from __future__ import annotations

import random
import struct

from leased.connection import BadMessage, MessageReader, Request
from leased.protocol import HEADER_SIZE, TARGET_SELF, Cmd, Disk, Header, Lockspace
from leased.torture.fuzz_messages import (
    FORBIDDEN_COMMANDS,
    MAGIC_BYTES,
    MessageFactory,
    SessionKind,
    Vocabulary,
    is_clean,
    protected_lockspace,
    protected_path,
    sanitize,
)

VICTIM_PATH = "/srv/victim/leases"
VOCABULARY = Vocabulary(
    lockspaces=(b"FUZZ", b"FUZZ2"),
    resources=(b"F0", b"F1"),
    path="/srv/fuzz/leases",
    host_id=1,
    protected_strings=(protected_lockspace(b"VICTIM"), protected_path(VICTIM_PATH)),
    protected_pids=(4242,),
)


def factory(seed: int) -> MessageFactory:
    return MessageFactory(random.Random(seed), VOCABULARY, flood_bytes=64 * 1024)


def test_the_same_seed_gives_the_same_streams() -> None:
    first, second = factory(7), factory(7)
    for _ in range(50):
        assert first.session().stream == second.session().stream
    assert factory(8).session().stream != factory(7).session().stream


def test_sessions_cover_every_kind_and_most_commands() -> None:
    fuzz = factory(1)
    kinds: set[SessionKind] = set()
    commands: set[int] = set()
    for _ in range(3000):
        plan = fuzz.session()
        kinds.add(plan.kind)
        reader = MessageReader()
        stream = plan.stream
        while stream:
            taken = stream[: reader.room()]
            stream = stream[len(taken) :]
            reader.feed(taken)
            while (event := reader.next_event()) is not None:
                if isinstance(event, Request):
                    commands.add(event.header.cmd)
    assert kinds == set(SessionKind)
    wanted = {cmd for cmd in Cmd if cmd not in FORBIDDEN_COMMANDS}
    assert len(commands & wanted) >= len(wanted) - 2, sorted(wanted - commands)
    assert not commands & FORBIDDEN_COMMANDS


def test_no_stream_names_the_victim_or_a_forbidden_command() -> None:
    fuzz = factory(3)
    for _ in range(2000):
        stream = fuzz.session().stream
        assert is_clean(stream, VOCABULARY)
        assert protected_lockspace(b"VICTIM") not in stream and protected_path(VICTIM_PATH) not in stream
        at = stream.find(MAGIC_BYTES)
        while at >= 0:
            if at + 12 <= len(stream):
                assert struct.unpack_from("<I", stream, at + 8)[0] not in FORBIDDEN_COMMANDS
            if at + 32 <= len(stream):
                assert struct.unpack_from("<I", stream, at + 28)[0] != 4242
            at = stream.find(MAGIC_BYTES, at + 1)


def test_sanitize_takes_out_each_harm() -> None:
    victim_add = Lockspace(b"VICTIM", 1, 0, Disk("/srv/fuzz/leases")).encode()
    victim_path = Lockspace(b"FUZZ", 1, 0, Disk(VICTIM_PATH)).encode()
    shutdown = Header(Cmd.SHUTDOWN, cmd_flags=1).encode()
    release_victim = Header(Cmd.RELEASE, cmd_flags=1, data2=4242).encode()
    hidden = b"garbage" + Header(Cmd.SHUTDOWN_WAIT).encode()  # a header that does not start the stream
    for raw in (victim_add, victim_path, shutdown, release_victim, hidden):
        assert not is_clean(raw, VOCABULARY)
        clean = sanitize(raw, VOCABULARY)
        assert is_clean(clean, VOCABULARY) and len(clean) == len(raw)
    assert Header.decode(sanitize(shutdown, VOCABULARY)).cmd == Cmd.VERSION
    assert Header.decode(sanitize(release_victim, VOCABULARY)).data2 == TARGET_SELF
    untouched = Header(Cmd.RELEASE, cmd_flags=1, data2=TARGET_SELF).encode()
    assert sanitize(untouched, VOCABULARY) == untouched


def test_mutated_messages_reach_the_reader_as_requests_and_as_complaints() -> None:
    """Both matter: requests reach handlers, complaints exercise framing and replies."""
    fuzz = factory(5)
    requests = complaints = 0
    reader = MessageReader()
    for _ in range(3000):
        raw = fuzz.message()
        while raw:
            taken = raw[: reader.room()]
            raw = raw[len(taken) :]
            reader.feed(taken)
            while (event := reader.next_event()) is not None:
                requests += isinstance(event, Request)
                complaints += isinstance(event, BadMessage)
    assert requests > 1000 and complaints > 200
    assert HEADER_SIZE == 32
