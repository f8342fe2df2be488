"""On-disk records against the spec's layouts and observed test vectors (§3, §6, §12)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leased.constants import DBLOCK_FL_RELEASED, LFL_ALIGN_1M, MBLOCK_SHARED
from leased.delta_lease import new_lockspace_leader
from leased.errors import LeaseError, ResultCode
from leased.geometry import ALL_GEOMETRIES, Geometry, geometry_from_leader
from leased.ondisk import (
    Dblock,
    Leader,
    ModeBlock,
    RequestRecord,
    bitmap_hosts,
    bitmap_set,
    encode_name,
    host_sector,
    leader_record,
    mode_block,
    names_equal,
    overwrite_name,
    paxos_dblock,
    request_record,
    sanlock_checksum,
    verify_delta_leader,
    verify_paxos_leader,
)
from leased.paxos_steps import new_resource_leader
from leased.schema import build, parse_exact

MiB = 1 << 20

VECTOR_A = (
    bytes.fromhex(
        "10202112040003001000000000020000"
        "00000000000000000100000000000000"
        "00000000000000000000000000000000"
        "00000000000000004c53000000000000"
    )
    + bytes(0xA0 - 0x40)
    + bytes.fromhex("0000000000000000c074f1b000000a00")
    + bytes(0x18)
)


def test_schema_sizes_match_the_spec() -> None:
    assert leader_record.sizeof() == 200
    assert paxos_dblock.sizeof() == 56
    assert mode_block.sizeof() == 16
    assert request_record.sizeof() == 24


def test_checksum_table_matches_spec_reference() -> None:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)

    def reference(buf: bytes) -> int:
        crc = 0xFFFFFFFE
        for b in buf:
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc

    for sample in (b"", b"123456789", bytes(range(256)) * 3):
        assert sanlock_checksum(sample) == reference(sample)


def test_vector_a_fresh_lockspace_leader() -> None:
    leader = new_lockspace_leader("LS", Geometry(512, MiB), 10)
    assert leader.encode() == VECTOR_A
    assert leader.checksum == 0xB0F174C0
    assert Leader.decode(VECTOR_A) == leader


def test_io_timeout_is_outside_the_checksum() -> None:
    assert new_lockspace_leader("LS", Geometry(512, MiB), 5).checksum == 0xB0F174C0


def test_vector_b_fresh_resource_leader() -> None:
    leader = new_resource_leader("LS", "RES1", Geometry(512, MiB))
    assert leader.checksum == 0xE0217F4C
    raw = leader.encode()
    assert raw[:16] == bytes.fromhex("10201506040006001000000000020000")
    assert raw[0x10:0x20] == bytes.fromhex("d007000000000000d007000000000000")
    assert raw[0x68:0x6C] == b"RES1"


def test_vectors_after_acquire_and_release() -> None:
    delta = replace(
        new_lockspace_leader("TS", Geometry(512, MiB), 10),
        owner_id=1,
        owner_generation=1,
        timestamp=1197,
        resource_name=encode_name("eacbc6e3-232d-429a-937d-7c8af2440afd.vm"),
    ).sealed()
    assert delta.checksum == 0xB445B8D3
    acquired = replace(
        new_resource_leader("TS", "RA", Geometry(512, MiB)),
        owner_id=1,
        owner_generation=1,
        lver=1,
        timestamp=1204,
        write_id=1,
        write_generation=1,
        write_timestamp=1204,
    ).sealed()
    assert acquired.checksum == 0x8C83D2CE
    released = replace(acquired, timestamp=0, write_timestamp=1214).sealed()
    assert released.checksum == 0x5A0BC0E9


def test_dblock_vectors_and_released_flag_outside_checksum() -> None:
    block = Dblock(mbal=1, bal=1, inp=1, inp2=1, inp3=1204, lver=1).sealed()
    assert block.checksum == 0x12EEAD28
    assert Dblock(**{**vars(block), "flags": DBLOCK_FL_RELEASED}).checksum_ok()
    second = Dblock(mbal=2002, bal=2002, inp=2, inp2=1, inp3=1248, lver=2).sealed()
    assert second.checksum == 0xC2B02076
    assert second.encode()[:8] == bytes.fromhex("d207000000000000")


def test_mode_block_observed_bytes() -> None:
    sector = host_sector(Dblock(), ModeBlock(MBLOCK_SHARED, 1), 512)
    assert sector[128:144] == bytes.fromhex("01000000000000000100000000000000")
    assert len(sector) == 512


def test_request_record_observed_bytes() -> None:
    assert RequestRecord().encode()[:8] == bytes.fromhex("1120290801000100")
    assert RequestRecord(lver=3, force_mode=1).encode()[8:20] == bytes.fromhex("030000000000000001000000")


def test_blank_dblock_accepted_without_checksum_and_torn_one_rejected() -> None:
    assert Dblock().checksum_ok()
    torn = Dblock(mbal=1, bal=1, inp=1, inp2=1, inp3=1204, lver=1, checksum=0x12EEAD28 ^ 1)
    assert not torn.checksum_ok()


@pytest.mark.parametrize(
    ("mutate", "rc"),
    [
        (lambda leader: replace(leader, magic=0), ResultCode.LEADER_MAGIC),
        (lambda leader: replace(leader, version=0x00040004), ResultCode.LEADER_VERSION),
        (lambda leader: replace(leader, space_name=encode_name("OTHER")), ResultCode.LEADER_LOCKSPACE),
    ],
)
def test_delta_verification_codes(mutate: Callable[[Leader], Leader], rc: int) -> None:
    leader = mutate(new_lockspace_leader("LS", Geometry(512, MiB), 10)).sealed()
    with pytest.raises(LeaseError) as info:
        verify_delta_leader(leader, encode_name("LS"), "test")
    assert info.value.rc == rc


def test_delta_bad_checksum_is_reported_with_both_values() -> None:
    leader = new_lockspace_leader("LS", Geometry(512, MiB), 10)
    corrupt = Leader.decode(leader.encode()[:100] + b"\x01" + leader.encode()[101:])
    with pytest.raises(LeaseError) as info:
        verify_delta_leader(corrupt, encode_name("LS"), "sector 0 of f")
    assert info.value.rc == ResultCode.LEADER_CHECKSUM
    assert "sector 0 of f" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "host_id", "rc"),
    [
        (lambda leader: replace(leader, magic=0x11282016), 1, ResultCode.LEADER_MAGIC),
        (lambda leader: replace(leader, resource_name=encode_name("X")), 1, ResultCode.LEADER_RESOURCE),
        (lambda leader: replace(leader, num_hosts=5), 6, ResultCode.LEADER_NUMHOSTS),
    ],
)
def test_paxos_verification_codes(mutate: Callable[[Leader], Leader], host_id: int, rc: int) -> None:
    leader = mutate(new_resource_leader("LS", "R", Geometry(512, MiB))).sealed()
    with pytest.raises(LeaseError) as info:
        verify_paxos_leader(leader, encode_name("LS"), encode_name("R"), host_id, "test")
    assert info.value.rc == rc


def test_overwrite_name_keeps_stale_bytes_like_sanlock() -> None:
    old = encode_name("averyveryverylonghostname-xyz")
    assert overwrite_name(old, "short") == b"short\0" + old[6:]
    assert names_equal(overwrite_name(old, "short"), encode_name("short"))


def test_48_byte_name_has_no_nul_and_longer_is_refused() -> None:
    assert encode_name("x" * 48) == b"x" * 48
    with pytest.raises(LeaseError):
        encode_name("x" * 49)


def test_bitmap_bits_are_lsb_first() -> None:
    bitmap = bytearray(256)
    bitmap_set(bitmap, 2)
    assert bitmap[0] == 0x02
    bitmap_set(bitmap, 2000)
    assert bitmap_hosts(bytes(bitmap)) == [2, 2000]


@pytest.mark.parametrize("geometry", ALL_GEOMETRIES, ids=str)
def test_geometry_round_trips_through_leader_flags(geometry: Geometry) -> None:
    leader = new_resource_leader("LS", "R", geometry)
    assert geometry_from_leader(leader.sector_size, leader.flags) == geometry
    expected = {(512, 1): 2000, (4096, 1): 250, (4096, 2): 500, (4096, 4): 1000, (4096, 8): 2000}
    assert leader.max_hosts == expected[(geometry.sector_size, geometry.align_size // MiB)]


def test_legacy_leader_without_align_flag() -> None:
    assert geometry_from_leader(512, 0) == Geometry(512, MiB)
    assert geometry_from_leader(4096, 0) == Geometry(4096, 8 * MiB)
    assert geometry_from_leader(512, LFL_ALIGN_1M) == Geometry(512, MiB)


def test_invalid_geometry_pair_is_refused() -> None:
    with pytest.raises(LeaseError) as info:
        Geometry(512, 2 * MiB)
    assert info.value.rc == ResultCode.ADDLS_SIZES


u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)


@given(st.binary(min_size=200, max_size=200))
def test_leader_parse_build_round_trip(raw: bytes) -> None:
    assert Leader.decode(raw).encode() == raw


@given(u64, u64, u64, u64, u64, u64, u32)
def test_dblock_build_parse_round_trip(
    mbal: int, bal: int, inp: int, inp2: int, inp3: int, lver: int, flags: int
) -> None:
    block = Dblock(mbal=mbal, bal=bal, inp=inp, inp2=inp2, inp3=inp3, lver=lver, flags=flags).sealed()
    assert Dblock.decode(block.encode()) == block
    assert block.checksum_ok()


@pytest.mark.parametrize(
    "schema", [leader_record, paxos_dblock, mode_block, request_record], ids=lambda s: str(s.sizeof())
)
@given(data=st.data())
def test_compiled_and_plain_schemas_agree(schema: Any, data: st.DataObject) -> None:
    raw = data.draw(st.binary(min_size=schema.sizeof(), max_size=schema.sizeof()))
    plain, fast = schema.parse(raw), parse_exact(schema, raw)
    assert {k: v for k, v in plain.items() if not k.startswith("_")} == fast.fields()
    assert build(schema, plain) == schema.build(plain)


def test_compiled_parse_refuses_a_short_buffer() -> None:
    with pytest.raises(ValueError):
        parse_exact(leader_record, bytes(199))


U64 = st.integers(0, 2**64 - 1)


@given(U64, U64, U64, U64, st.integers(0, 2**32 - 1), U64, U64)
def test_evolve_and_sealed_make_what_replace_makes(
    mbal: int, bal: int, inp: int, lver: int, flags: int, new_bal: int, new_inp: int
) -> None:
    """The records' fast copies (no dataclass __init__) are indistinguishable from dataclasses.replace's."""
    block = Dblock(mbal=mbal, bal=bal, inp=inp, lver=lver, flags=flags)
    evolved = block.evolve(bal=new_bal, inp=new_inp)
    replaced = replace(block, bal=new_bal, inp=new_inp)
    assert evolved == replaced and hash(evolved) == hash(replaced) and repr(evolved) == repr(replaced)
    assert evolved.encode() == replaced.encode()
    assert Dblock.decode(evolved.encode()) == replaced
    sealed = block.sealed(bal=new_bal, inp=new_inp)
    assert sealed == replace(replaced, checksum=replaced.compute_checksum())
    assert sealed.checksum_ok()
    assert block.sealed() == replace(block, checksum=block.compute_checksum())
    assert block == Dblock(mbal=mbal, bal=bal, inp=inp, lver=lver, flags=flags), "the original is unchanged"


def test_evolve_refuses_unknown_fields_and_keeps_records_frozen() -> None:
    leader = new_resource_leader(b"LS", b"R1", Geometry(512, 1 << 20), 2000)
    with pytest.raises(TypeError, match="no field bogus"):
        leader.evolve(bogus=1)
    changed = leader.sealed(lver=7, owner_id=3)
    assert (changed.lver, changed.owner_id, leader.lver) == (7, 3, 0)
    assert Leader.decode(changed.encode()) == changed
    with pytest.raises(AttributeError):
        changed.lver = 8  # type: ignore[misc]
