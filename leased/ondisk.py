"""sanlock's on-disk records: construct schemas, typed views, and the checksum.

Each C struct of the on-disk spec (§3, §6) is one module-level construct
schema and one frozen dataclass.  The schema is the byte layout; the dataclass
is what the lease algorithms handle.  Names are kept as the raw 48 bytes that
are on disk, because the delta lease keeps stale bytes after the NUL and the
checksum covers them (§5.1 step 7): decoding them to ``str`` and back would
change the checksum.

Verification (magic, version, names, checksum) lives here too, as pure
functions that raise :class:`~leased.errors.LeaseError` with the spec's code
and a message naming the field.  Nothing in this module does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Self

import crc32c
from construct import Bytes, Int16ul, Int32ul, Int64ul, Padding, Struct

from leased.constants import (
    DBLOCK_CHECKSUM_LEN,
    DBLOCK_SIZE,
    DELTA_DISK_MAGIC,
    DELTA_DISK_VERSION_MAJOR,
    LEADER_CHECKSUM_LEN,
    LEADER_RECORD_SIZE,
    MODE_BLOCK_OFFSET,
    MODE_BLOCK_SIZE,
    NAME_ID_SIZE,
    PAXOS_DISK_CLEAR,
    PAXOS_DISK_MAGIC,
    PAXOS_DISK_VERSION_MAJOR,
    REQ_DISK_MAGIC,
    REQ_DISK_VERSION,
    REQ_DISK_VERSION_MAJOR,
    REQUEST_RECORD_SIZE,
    VERSION_MAJOR_MASK,
)
from leased.errors import LeaseError, ResultCode
from leased.schema import build, parse_exact, sizeof
from leased.sparse import SparseRead


def sanlock_checksum(data: bytes) -> int:
    """sanlock's CRC-32C variant: register starts at ~1, no final inversion (§2).

    The crc32c package computes standard CRC-32C with continuation; starting
    it from 1 and inverting the result gives exactly sanlock's value.
    """
    return crc32c.crc32c(data, 1) ^ 0xFFFFFFFF


# --------------------------------------------------------------------------
# Names


def encode_name(name: str | bytes) -> bytes:
    """A name as the NUL-padded 48-byte field init writes.

    A 48-byte name fills the field with no NUL, as in sanlock.  Longer names
    are an error, not a silent truncation.
    """
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if len(raw) > NAME_ID_SIZE:
        raise LeaseError(ResultCode.ENAMETOOLONG, f"name {raw!r} longer than {NAME_ID_SIZE} bytes")
    return raw.ljust(NAME_ID_SIZE, b"\0")


def name_text(field: bytes) -> str:
    """The name stored in a 48-byte field: the bytes before the first NUL."""
    return field.split(b"\0", 1)[0].decode(errors="replace")


def names_equal(a: bytes, b: bytes) -> bool:
    """``strncmp(a, b, 48) == 0``: bytes after the first NUL do not count."""
    return a[:NAME_ID_SIZE].split(b"\0", 1)[0] == b[:NAME_ID_SIZE].split(b"\0", 1)[0]


def overwrite_name(old_field: bytes, name: str | bytes) -> bytes:
    """Write ``name`` plus one NUL over ``old_field``, keeping the bytes after it.

    This is what a delta-lease acquire does to the host name field (§5.1
    step 7); at most 47 bytes of the name are kept so the NUL fits.
    """
    raw = (name.encode() if isinstance(name, str) else bytes(name))[: NAME_ID_SIZE - 1]
    new = raw + b"\0"
    return new + old_field[len(new) : NAME_ID_SIZE]


# --------------------------------------------------------------------------
# Schemas (one per C struct)

leader_record = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "flags" / Int32ul,
    "sector_size" / Int32ul,
    "num_hosts" / Int64ul,
    "max_hosts" / Int64ul,
    "owner_id" / Int64ul,
    "owner_generation" / Int64ul,
    "lver" / Int64ul,
    "space_name" / Bytes(NAME_ID_SIZE),
    "resource_name" / Bytes(NAME_ID_SIZE),
    "timestamp" / Int64ul,
    "unused1" / Int64ul,
    "checksum" / Int32ul,
    "unused2" / Int16ul,
    "io_timeout" / Int16ul,
    "write_id" / Int64ul,
    "write_generation" / Int64ul,
    "write_timestamp" / Int64ul,
)

paxos_dblock = Struct(
    "mbal" / Int64ul,
    "bal" / Int64ul,
    "inp" / Int64ul,
    "inp2" / Int64ul,
    "inp3" / Int64ul,
    "lver" / Int64ul,
    "checksum" / Int32ul,
    "flags" / Int32ul,
)

mode_block = Struct(
    "flags" / Int32ul,
    Padding(4),
    "generation" / Int64ul,
)

request_record = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "lver" / Int64ul,
    "force_mode" / Int32ul,
    Padding(4),
)


@dataclass(frozen=True)
class _Record:
    """Shared encode/decode between a frozen dataclass and its schema."""

    SCHEMA: ClassVar[Struct]

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> Self:
        size = sizeof(cls.SCHEMA)
        parsed = parse_exact(cls.SCHEMA, bytes(data[offset : offset + size]))
        values = parsed.fields()
        return cls._made({name: values[name] for name in _field_names(cls)})

    def encode(self) -> bytes:
        return build(self.SCHEMA, vars(self))

    def evolve(self, **changes: int | bytes) -> Self:
        """:func:`dataclasses.replace` for a record, at a fraction of its cost (ballots make several a phase).

        Records have no ``__post_init__`` and take their values as they
        are, so setting the instance's fields directly makes the same object
        the frozen dataclass ``__init__`` would, without one
        ``object.__setattr__`` per field.  Unknown names are a TypeError, as
        for ``replace``.
        """
        unknown = changes.keys() - _field_names(type(self))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        return self._made({**vars(self), **changes})

    @classmethod
    def _made(cls, values: dict[str, object]) -> Self:
        record = object.__new__(cls)
        vars(record).update(values)
        return record


_FIELD_NAMES: dict[type[_Record], tuple[str, ...]] = {}


def _field_names(cls: type[_Record]) -> tuple[str, ...]:
    """The field names of a record class, in declaration order (looked up once per class)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True)
class Leader(_Record):
    """leader_record (§3): a delta lease sector or the leader of a paxos lease."""

    SCHEMA: ClassVar = leader_record

    magic: int
    version: int
    flags: int
    sector_size: int
    num_hosts: int
    max_hosts: int
    owner_id: int
    owner_generation: int
    lver: int
    space_name: bytes
    resource_name: bytes
    timestamp: int
    unused1: int
    checksum: int
    unused2: int
    io_timeout: int
    write_id: int
    write_generation: int
    write_timestamp: int

    def compute_checksum(self) -> int:
        return sanlock_checksum(self.encode()[:LEADER_CHECKSUM_LEN])

    def sealed(self, **changes: int | bytes) -> Self:
        """A copy with ``changes`` made and the checksum recomputed."""
        changed = self.evolve(**changes) if changes else self
        return changed.evolve(checksum=changed.compute_checksum())

    @property
    def space(self) -> str:
        return name_text(self.space_name)

    @property
    def resource(self) -> str:
        return name_text(self.resource_name)


@dataclass(frozen=True)
class Dblock(_Record):
    """paxos_dblock (§6.2): one host's ballot state for a resource lease."""

    SCHEMA: ClassVar = paxos_dblock

    mbal: int = 0
    bal: int = 0
    inp: int = 0
    inp2: int = 0
    inp3: int = 0
    lver: int = 0
    checksum: int = 0
    flags: int = 0

    def compute_checksum(self) -> int:
        return sanlock_checksum(self.encode()[:DBLOCK_CHECKSUM_LEN])

    def sealed(self, **changes: int | bytes) -> Self:
        """A copy with ``changes`` made and the checksum recomputed."""
        changed = self.evolve(**changes) if changes else self
        return changed.evolve(checksum=changed.compute_checksum())

    def is_blank(self) -> bool:
        """A never-written block: accepted without a checksum check (§2)."""
        return not (self.checksum or self.mbal or self.bal or self.inp or self.lver)

    def checksum_ok(self) -> bool:
        return self.is_blank() or self.checksum == self.compute_checksum()


@dataclass(frozen=True)
class ModeBlock(_Record):
    """mode_block (§6.3): whether a host holds the resource in shared mode."""

    SCHEMA: ClassVar = mode_block

    flags: int = 0
    generation: int = 0


@dataclass(frozen=True)
class RequestRecord(_Record):
    """request_record (§6.1): a forced-release request for a resource."""

    SCHEMA: ClassVar = request_record

    magic: int = REQ_DISK_MAGIC
    version: int = REQ_DISK_VERSION
    lver: int = 0
    force_mode: int = 0


BLANK_DBLOCK = Dblock()
BLANK_MODE_BLOCK = ModeBlock()
_ZERO_DBLOCK_BYTES = bytes(DBLOCK_SIZE)
_ZERO_MODE_BYTES = bytes(MODE_BLOCK_SIZE)

assert leader_record.sizeof() == LEADER_RECORD_SIZE
assert paxos_dblock.sizeof() == DBLOCK_SIZE
assert request_record.sizeof() == REQUEST_RECORD_SIZE


# --------------------------------------------------------------------------
# Sector images


def leader_sector(leader: Leader, sector_size: int, bitmap: bytes = b"") -> bytes:
    """A whole sector: the leader, zeros, and (delta leases) the host bitmap at 256."""
    image = bytearray(sector_size)
    image[:LEADER_RECORD_SIZE] = leader.encode()
    if bitmap:
        image[256 : 256 + len(bitmap)] = bitmap
    return bytes(image)


def host_sector(dblock: Dblock, mode: ModeBlock, sector_size: int) -> bytes:
    """A host's whole sector in a resource area: dblock at 0, mode block at 128 (§6.3)."""
    image = bytearray(sector_size)
    image[:DBLOCK_SIZE] = dblock.encode()
    if mode != BLANK_MODE_BLOCK:
        image[MODE_BLOCK_OFFSET : MODE_BLOCK_OFFSET + MODE_BLOCK_SIZE] = mode.encode()
    return bytes(image)


def decode_host_sector(data: bytes, offset: int) -> tuple[Dblock, ModeBlock]:
    """Decode the dblock and mode block of one host sector, skipping blank bytes fast.

    A ballot reads up to 2000 host sectors; almost all are zero, and the
    byte comparison lets us skip the schema parse for those.
    """
    raw_dblock = data[offset : offset + DBLOCK_SIZE]
    raw_mode = data[offset + MODE_BLOCK_OFFSET : offset + MODE_BLOCK_OFFSET + MODE_BLOCK_SIZE]
    dblock = BLANK_DBLOCK if raw_dblock == _ZERO_DBLOCK_BYTES else Dblock.decode(raw_dblock)
    mode = BLANK_MODE_BLOCK if raw_mode == _ZERO_MODE_BYTES else ModeBlock.decode(raw_mode)
    return dblock, mode


def used_host_sectors(area: SparseRead, count: int) -> list[tuple[int, Dblock, ModeBlock]]:
    """``(slot, dblock, mode)`` for the host sectors of a resource area read that hold anything, slot 0 first.

    ``area`` is the read kept sparse with the leader and request sectors as
    its head and one host sector per unit (:meth:`Storage.read_sparse
    <leased.storage.Storage.read_sparse>`), so only the handful of used
    sectors of up to 2000 reach here; slots from ``count`` on (past the
    leader's ``num_hosts``) are not looked at.
    """
    return [(slot, *decode_host_sector(sector, 0)) for slot, sector in area.units if slot < count]


# --------------------------------------------------------------------------
# Verification


def verify_delta_leader(leader: Leader, space_name: bytes, where: str) -> None:
    """The checks a delta-lease read makes before the record is used (§3)."""
    if leader.magic != DELTA_DISK_MAGIC:
        raise LeaseError(ResultCode.LEADER_MAGIC, f"{where}: bad delta magic 0x{leader.magic:08x}")
    if leader.version & VERSION_MAJOR_MASK != DELTA_DISK_VERSION_MAJOR:
        raise LeaseError(ResultCode.LEADER_VERSION, f"{where}: bad delta version 0x{leader.version:08x}")
    if not names_equal(leader.space_name, space_name):
        raise LeaseError(
            ResultCode.LEADER_LOCKSPACE,
            f"{where}: lockspace name {leader.space!r} is not {name_text(space_name)!r}",
        )
    if leader.checksum != leader.compute_checksum():
        raise LeaseError(
            ResultCode.LEADER_CHECKSUM,
            f"{where}: leader checksum 0x{leader.checksum:08x} != computed 0x{leader.compute_checksum():08x}",
        )


def verify_paxos_leader(leader: Leader, space_name: bytes, resource_name: bytes, host_id: int, where: str) -> None:
    """The checks a paxos leader read makes before the record is used (§3).

    ``host_id`` 0 skips the num_hosts check (used by readers that are not
    a lease participant, such as dump and read_leader).
    """
    if leader.magic == PAXOS_DISK_CLEAR:
        raise LeaseError(ResultCode.LEADER_MAGIC, f"{where}: lease was cleared (magic 0x{leader.magic:08x})")
    if leader.magic != PAXOS_DISK_MAGIC:
        raise LeaseError(ResultCode.LEADER_MAGIC, f"{where}: bad paxos magic 0x{leader.magic:08x}")
    if leader.version & VERSION_MAJOR_MASK != PAXOS_DISK_VERSION_MAJOR:
        raise LeaseError(ResultCode.LEADER_VERSION, f"{where}: bad paxos version 0x{leader.version:08x}")
    if not names_equal(leader.space_name, space_name):
        raise LeaseError(
            ResultCode.LEADER_LOCKSPACE,
            f"{where}: lockspace name {leader.space!r} is not {name_text(space_name)!r}",
        )
    if not names_equal(leader.resource_name, resource_name):
        raise LeaseError(
            ResultCode.LEADER_RESOURCE,
            f"{where}: resource name {leader.resource!r} is not {name_text(resource_name)!r}",
        )
    if host_id and leader.num_hosts < host_id:
        raise LeaseError(ResultCode.LEADER_NUMHOSTS, f"{where}: num_hosts {leader.num_hosts} < host_id {host_id}")
    if leader.checksum != leader.compute_checksum():
        raise LeaseError(
            ResultCode.LEADER_CHECKSUM,
            f"{where}: leader checksum 0x{leader.checksum:08x} != computed 0x{leader.compute_checksum():08x}",
        )


def verify_request(record: RequestRecord, where: str) -> None:
    if record.magic != REQ_DISK_MAGIC:
        raise LeaseError(ResultCode.REQUEST_MAGIC, f"{where}: bad request magic 0x{record.magic:08x}")
    if record.version & VERSION_MAJOR_MASK != REQ_DISK_VERSION_MAJOR:
        raise LeaseError(ResultCode.REQUEST_VERSION, f"{where}: bad request version 0x{record.version:08x}")


# --------------------------------------------------------------------------
# Host bitmap (§5.5)


def bitmap_set(bitmap: bytearray, host_id: int) -> None:
    bitmap[(host_id - 1) // 8] |= 1 << ((host_id - 1) % 8)


def bitmap_test(bitmap: bytes, host_id: int) -> bool:
    return bool(bitmap[(host_id - 1) // 8] & (1 << ((host_id - 1) % 8)))


def bitmap_hosts(bitmap: bytes) -> list[int]:
    """Host ids whose bit is set, ascending."""
    return [
        byte_index * 8 + bit + 1
        for byte_index, byte in enumerate(bitmap)
        if byte
        for bit in range(8)
        if byte & (1 << bit)
    ]
