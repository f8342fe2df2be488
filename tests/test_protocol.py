"""Wire structs against the spec's sizes and the byte traces captured from python3-sanlock (§3, §12)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leased.errors import LeaseError, ResultCode
from leased.protocol import (
    HEADER_SIZE,
    RES_LVER,
    RES_SHARED,
    TARGET_SELF,
    Cmd,
    Disk,
    FramingError,
    Header,
    Host,
    Killpath,
    Lockspace,
    Options,
    Resource,
    StateRecord,
    body_size,
    sanlk_disk,
    sanlk_host,
    sanlk_lockspace,
    sanlk_options,
    sanlk_resource,
    sanlk_state,
    sm_header,
    split_resources,
)
from leased.schema import build, parse_exact
from leased.text_forms import escape_path, format_resource, parse_resource, parse_state


def words(*hex_words: str) -> bytes:
    return b"".join(bytes.fromhex(w) for w in hex_words)


def test_register_header_matches_trace() -> None:
    raw = words("10202804", "01000000", "01000000", "00000000", "20000000", "00000000", "00000000", "00000000")
    assert Header(Cmd.REGISTER).encode() == raw
    assert Header.decode(raw) == Header(Cmd.REGISTER)


def test_acquire_request_matches_trace_and_frames_by_command() -> None:
    header = Header(Cmd.ACQUIRE, length=0x4E8, data=1, data2=TARGET_SELF)
    assert header.encode() == words(
        "10202804", "01000000", "07000000", "00000000", "e8040000", "00000000", "01000000", "ffffffff"
    )
    assert header.target_pid == -1
    resource = Resource(b"LS", b"R1", disks=(Disk("/tmp/x y", 1048576),))
    body = resource.encode() + Options().encode()
    assert len(body) == 1224
    assert body[0x78:0x80] == bytes.fromhex("0000000001000000")
    assert body[0x80:0x88] == b"/tmp/x y"
    assert body[0x480:0x488] == bytes.fromhex("0000100000000000")
    assert body_size(header, b"") > 0
    assert body_size(header, body[:128]) == 1224
    assert body_size(header, body) == 1224
    resources, used = split_resources(body, 1, with_disks=True)
    assert resources == [Resource(b"LS", b"R1", num_disks=1, disks=(Disk("/tmp/x y", 1048576),))]
    assert used == 1168


def test_host_status_frames_a_lockspace_body_despite_length_32() -> None:
    assert body_size(Header(Cmd.HOST_STATUS, length=HEADER_SIZE), b"") == 1104


@pytest.mark.parametrize(("count", "rc"), [(0, ResultCode.EINVAL), (9, ResultCode.E2BIG)])
def test_acquire_count_out_of_range(count: int, rc: int) -> None:
    with pytest.raises(FramingError) as info:
        body_size(Header(Cmd.ACQUIRE, data=count), b"")
    assert info.value.rc == rc


def test_num_disks_out_of_range_is_erange() -> None:
    body = Resource(b"LS", b"R", num_disks=5).encode(with_disks=False)
    with pytest.raises(FramingError) as info:
        body_size(Header(Cmd.ACQUIRE, data=1), body)
    assert info.value.rc == ResultCode.ERANGE


def test_set_lvb_length_sets_payload() -> None:
    assert body_size(Header(Cmd.SET_LVB, length=163), b"") == 131


def test_struct_round_trips() -> None:
    ls = Lockspace(b"LS", 7, 0x110, Disk("/dev/x", 4096))
    assert len(ls.encode()) == 1104 and Lockspace.decode(ls.encode()) == ls
    host = Host(1, 1, 647, 1, 3)
    assert host.encode() == words(
        "01000000", "00000000", "01000000", "00000000", "87020000", "00000000", "01000000", "03000000"
    )
    assert Killpath.decode(Killpath("/bin/kill", "a\\ b").encode()) == Killpath("/bin/kill", "a\\ b")
    record = StateRecord(2, 6199, 0, b"", "ci=2 fd=9")
    head, text_len = StateRecord.decode_head(record.encode()[:80])
    assert (head.type, head.data32, text_len) == (2, 6199, len("ci=2 fd=9") + 1)
    with pytest.raises(LeaseError):
        Resource(b"x" * 49, b"R").encode()


def test_state_string_format_and_parse_round_trip() -> None:
    r1 = Resource(b"LS", b"R1", disks=(Disk("/srv/lsx/d:x", 1048576),))
    text = format_resource(r1, 5)
    assert text == "LS:R1:/srv/lsx/d\\:x:1048576:5"
    parsed = parse_resource(text)
    assert (parsed.lockspace, parsed.name, parsed.lver, parsed.flags) == (b"LS", b"R1", 5, RES_LVER)
    assert parsed.disks == (Disk("/srv/lsx/d:x", 1048576),)
    shared = parse_state("LS:R1:/srv/lsx/disk:1048576:1 LS:R2:/srv/lsx/disk:2097152:SH\0")
    assert [r.flags for r in shared] == [RES_LVER, RES_SHARED]
    assert parse_state("LS:R:/tmp/x\\ y:0:3")[0].disks[0].path == "/tmp/x y"
    assert escape_path("/a b:c\\:d") == "/a\\ b\\:c\\:d"
    with pytest.raises(LeaseError):
        parse_resource("LS:R:path")


@pytest.mark.parametrize(
    "schema", [sm_header, sanlk_disk, sanlk_resource, sanlk_options, sanlk_lockspace, sanlk_host, sanlk_state]
)
@given(data=st.data())
def test_compiled_and_plain_wire_schemas_agree(schema: Any, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=schema.sizeof(), max_size=schema.sizeof()))
    plain, fast = schema.parse(raw), parse_exact(schema, raw)
    assert {k: v for k, v in plain.items() if not k.startswith("_")} == fast.fields()
    assert build(schema, plain) == schema.build(plain)
