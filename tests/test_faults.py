"""Faults at the Storage seam: paxos acquires under EIO, stalls, late and torn writes.

What must hold (on-disk spec §7, §13): an I/O error or timeout on any read or
write of any ballot phase never leaves a host believing it holds a lease that
another host also holds, and a torn sector is caught by its checksum (a torn
leader with -229, a torn dblock with -214 at the initial read) instead of
being believed.

Two hosts, A (host_id 1) and B (host_id 2), each open their own ``O_DIRECT``
handle on one 4 MiB lease file (lockspace "LS" at 0, resource "R" at 1 MiB,
512/1M).  A's handle is a :class:`FaultyStorage` with one fault at operation
k; B's is clean.  Acquires run without a lockspace view, as in sanlock's
direct mode: a lease held by someone else is then refused with -241, a clean
refusal.  After the acquires the area is read back and its records checked
(:func:`check`).  The concurrent test races both hosts, the faulty one chosen
at random, and the ``sanlock`` tests show real sanlock refusing what leased
tore.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from faulty_storage import Disk, Fault, FaultyStorage, Kind

from leased import delta_lease, paxos_lease
from leased.areas import ResourceArea
from leased.constants import MBLOCK_SHARED
from leased.errors import LeaseError, ResultCode, code_name
from leased.geometry import Geometry
from leased.ondisk import Dblock, Leader, decode_host_sector
from leased.paxos_lease import PaxosLease
from leased.paxos_steps import owner_of
from leased.storage import FileStorage

MiB = 1 << 20
GEOMETRY = Geometry(512, MiB)
SECTOR = GEOMETRY.sector_size
RES_OFFSET = MiB
IO_TIMEOUT = 1
GENERATION = 1
HOST_A, HOST_B = 1, 2

ACQUIRE_IO = ("read", "write", "read", "write", "read", "read", "write")
"""An uncontended acquire of a free lease (§7.7): initial area read, phase-1
write and read, phase-2 write and read, the leader read again (nobody may
have committed meanwhile), commit write."""
ACQUIRE_OPS = len(ACQUIRE_IO)
WRITE_OPS = tuple(k for k, kind in enumerate(ACQUIRE_IO) if kind == "write")
PHASE1_WRITE, PHASE2_WRITE, COMMIT_WRITE = WRITE_OPS

RECORD_TEAR = 40
"""Splits a dblock before its lver and checksum and a leader inside owner fields."""
HALF_SECTOR = SECTOR // 2
"""Half a sector: the record (first 200 bytes) lands whole, the caller is told EIO."""

REFUSALS = frozenset(
    {
        ResultCode.ACQUIRE_LOCKSPACE,  # the leader names another owner; no view to judge it
        ResultCode.ACQUIRE_OWNED,  # another host committed this lver
        ResultCode.ACQUIRE_OTHER,  # our ballot committed another host's value
        ResultCode.DBLOCK_CHECKSUM,  # a torn dblock in the initial read
        ResultCode.LEADER_CHECKSUM,  # a torn leader
    }
)
"""How a clean host may be turned away after another host's failed acquire."""

SANLOCK = shutil.which("sanlock") or shutil.which("sanlock", path="/usr/sbin:/sbin")

Outcome = PaxosLease | LeaseError


# ---------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
async def lease_path(tmp_path: Path) -> str:
    path = str(tmp_path / "leases")
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
    with FileStorage(path) as storage:
        await delta_lease.init_lockspace(storage, 0, "LS", GEOMETRY, io_timeout=IO_TIMEOUT)
        await paxos_lease.init_resource(storage, RES_OFFSET, "LS", "R", GEOMETRY)
    return path


@pytest.fixture
def disk() -> Disk:
    return Disk(SECTOR)


@pytest.fixture
async def area(lease_path: str) -> ResourceArea:
    """The resource as discovered on a clean handle; hosts swap in their own storage."""
    with FileStorage(lease_path) as storage:
        found = await paxos_lease.discover_resource(storage, RES_OFFSET, "LS", "R", IO_TIMEOUT)
    assert found.geometry == GEOMETRY
    return found


def on(area: ResourceArea, storage: FaultyStorage) -> ResourceArea:
    return replace(area, storage=storage)


async def attempt(area: ResourceArea, host_id: int) -> Outcome:
    try:
        return await paxos_lease.acquire(area, host_id, GENERATION, io_timeout=IO_TIMEOUT, view=None)
    except LeaseError as exc:
        return exc


def describe(outcome: Outcome) -> str:
    if isinstance(outcome, PaxosLease):
        return f"lease lver {outcome.lver}"
    return f"{outcome.rc} {code_name(outcome.rc)}: {outcome.detail}"


def assert_sanlock_code(outcome: Outcome) -> None:
    assert isinstance(outcome, LeaseError)
    assert isinstance(outcome.rc, int) and outcome.rc < 0
    ResultCode(outcome.rc)  # a code sanlock itself uses


@dataclass
class OnDisk:
    leader: Leader | None
    leader_error: LeaseError | None
    blocks: dict[int, Dblock]


async def inspect(area: ResourceArea, path: str) -> OnDisk:
    """Read the resource area back through a clean handle."""
    with FileStorage(path) as storage:
        clean = replace(area, storage=storage)
        try:
            leader: Leader | None = await paxos_lease.read_leader(clean, 0, IO_TIMEOUT)
            error = None
        except LeaseError as exc:
            leader, error = None, exc
        raw = await storage.read(RES_OFFSET, GEOMETRY.align_size, IO_TIMEOUT)
    blocks = {}
    for host_id in range(1, GEOMETRY.max_hosts + 1):
        block, _ = decode_host_sector(raw, (1 + host_id) * SECTOR)
        if not block.is_blank():
            blocks[host_id] = block
    return OnDisk(leader, error, blocks)


def check(outcomes: dict[int, Outcome], seen: OnDisk, disk: Disk) -> None:
    """The invariants of §13.2 that one snapshot can show."""
    holders = {host: o for host, o in outcomes.items() if isinstance(o, PaxosLease)}
    report = {host: describe(o) for host, o in outcomes.items()}
    assert len(holders) <= 1, f"two hosts hold the lease: {report}"
    for outcome in outcomes.values():
        if isinstance(outcome, LeaseError):
            assert_sanlock_code(outcome)

    if seen.leader_error is not None:
        assert seen.leader_error.rc == ResultCode.LEADER_CHECKSUM, f"leader unreadable: {seen.leader_error}"
        assert RES_OFFSET in disk.torn, f"leader checksum bad but no write tore it: {seen.leader_error}"
    for host, lease in holders.items():
        assert seen.leader is not None, f"host {host} holds {describe(lease)} but the leader is unreadable"
        assert owner_of(seen.leader) == (host, GENERATION), f"host {host} holds, leader says {seen.leader}"
        assert seen.leader.lver == lease.lver

    max_hosts = GEOMETRY.max_hosts
    for host_id, block in seen.blocks.items():
        offset = RES_OFFSET + (1 + host_id) * SECTOR
        if not block.checksum_ok():
            assert offset in disk.torn, f"dblock {host_id} has a bad checksum but no write tore it: {block}"
            continue
        assert block.mbal % max_hosts == host_id % max_hosts, f"dblock {host_id}: {block}"
        assert block.bal in (0, block.mbal), f"dblock {host_id}: {block}"


async def reinit(path: str, disk: Disk) -> None:
    with FileStorage(path) as storage:
        await paxos_lease.init_resource(storage, RES_OFFSET, "LS", "R", GEOMETRY)
    disk.torn.clear()


def fault_id(fault: Fault) -> str:
    tear = f"@{fault.tear_at}" if fault.kind is Kind.TORN else ""
    return f"{fault.kind.value}{tear}-op{fault.op}"


# ---------------------------------------------------------------------------
# The I/O pattern the fault positions are chosen from


async def test_uncontended_acquire_does_four_reads_and_three_writes(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        storage = FaultyStorage(lease_path, disk, nursery)
        lease = await paxos_lease.acquire(on(area, storage), HOST_A, GENERATION, io_timeout=IO_TIMEOUT)
        storage.close()
    ours = RES_OFFSET + (1 + HOST_A) * SECTOR
    whole = 2048 * SECTOR  # roundup_pow2(num_hosts + 2) sectors: the whole 1 MiB area
    assert whole == GEOMETRY.align_size
    assert [(op.write, op.offset, op.length) for op in storage.ops] == [
        (False, RES_OFFSET, whole),
        (True, ours, SECTOR),
        (False, RES_OFFSET, whole),
        (True, ours, SECTOR),
        (False, RES_OFFSET, whole),
        (False, RES_OFFSET, SECTOR),  # the leader again: nobody committed meanwhile
        (True, RES_OFFSET, SECTOR),
    ]
    assert tuple("write" if op.write else "read" for op in storage.ops) == ACQUIRE_IO
    assert (lease.lver, lease.dblock.mbal) == (1, HOST_A)


# ---------------------------------------------------------------------------
# One fault in A's acquire, then B acquires on a clean handle


SEQUENTIAL_FAULTS = [
    *(Fault(Kind.EIO, k) for k in range(ACQUIRE_OPS)),
    *(Fault(Kind.STALL, k) for k in range(ACQUIRE_OPS)),
    *(Fault(Kind.TORN, k, RECORD_TEAR) for k in WRITE_OPS),
    *(Fault(Kind.TORN, k, HALF_SECTOR) for k in WRITE_OPS),
]

EXPECTED_RC = {
    0: None,  # the initial read: any sanlock code
    1: ResultCode.DBLOCK_WRITE,
    2: ResultCode.DBLOCK_READ,
    3: ResultCode.DBLOCK_WRITE,
    4: ResultCode.DBLOCK_READ,
    5: ResultCode.LEADER_READ,
    6: ResultCode.LEADER_WRITE,
}
"""A's error for a fault at each operation (§7.5, §7.7, §11)."""


async def run_a_then_b(area: ResourceArea, a: FaultyStorage, b: FaultyStorage) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {HOST_A: await attempt(on(area, a), HOST_A)}
    a_result = outcomes[HOST_A]
    assert isinstance(a_result, LeaseError), (
        f"A's acquire met {a.hit} and still returned a lease: an acquire whose I/O failed must fail"
    )
    assert len(a.hit) == 1
    outcomes[HOST_B] = await attempt(on(area, b), HOST_B)
    return outcomes


@pytest.mark.parametrize("fault", SEQUENTIAL_FAULTS, ids=fault_id)
async def test_fault_in_acquire_then_clean_acquire(
    fault: Fault, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (fault,))
        b = FaultyStorage(lease_path, disk, nursery)
        outcomes = await run_a_then_b(area, a, b)
        seen = await inspect(area, lease_path)
    check(outcomes, seen, disk)

    a_result, b_result = outcomes[HOST_A], outcomes[HOST_B]
    assert isinstance(a_result, LeaseError)
    expected = EXPECTED_RC[fault.op]
    if expected is not None:
        assert a_result.rc == expected, describe(a_result)
    if isinstance(b_result, LeaseError):
        assert b_result.rc in REFUSALS, describe(b_result)

    torn_block = fault.kind is Kind.TORN and fault.tear_at == RECORD_TEAR and fault.op == PHASE1_WRITE
    if fault.op < PHASE2_WRITE and not torn_block:
        # A failed before writing a value: at most a phase-1 block of A's is on disk,
        # and B's ballot outbids it.  B must not be turned away.
        assert isinstance(b_result, PaxosLease), describe(b_result)
    if torn_block:
        # A's torn block is refused by every initial read (§7.1), never believed.
        assert RES_OFFSET + (1 + HOST_A) * SECTOR in disk.torn
        assert not seen.blocks[HOST_A].checksum_ok()
        assert isinstance(b_result, LeaseError) and b_result.rc == ResultCode.DBLOCK_CHECKSUM, describe(b_result)
    if fault.kind is Kind.TORN and fault.tear_at == RECORD_TEAR and fault.op == COMMIT_WRITE:
        assert seen.leader_error is not None and seen.leader_error.rc == ResultCode.LEADER_CHECKSUM
        assert isinstance(b_result, LeaseError) and b_result.rc == ResultCode.LEADER_CHECKSUM, describe(b_result)
    if isinstance(b_result, PaxosLease):
        with trio.fail_after(5):
            await paxos_lease.release(b_result)
            assert owner_of(await paxos_lease.read_leader(on(area, b), 0, IO_TIMEOUT)) is None
    a.close()
    b.close()


LAND_POINTS = [0, 3, COMMIT_WRITE, None]
"""Where A's late write lands: before B's operation n, or after B's acquire (None)."""


@pytest.mark.parametrize("land_at", LAND_POINTS, ids=lambda n: "after-B" if n is None else f"before-B-op{n}")
@pytest.mark.parametrize("k", WRITE_OPS, ids=lambda k: f"late-op{k}")
async def test_late_write_lands_around_clean_acquire(
    k: int, land_at: int | None, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """A's write times out but lands later (an abandoned I/O), in the middle of B's acquire."""
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.LATE, k),))
        b = FaultyStorage(lease_path, disk, nursery, at_op={} if land_at is None else {land_at: a.land_late_writes})
        outcomes = await run_a_then_b(area, a, b)
        a_result = outcomes[HOST_A]
        assert isinstance(a_result, LeaseError) and a_result.rc == EXPECTED_RC[k], describe(a_result)
        await a.land_late_writes()
        seen = await inspect(area, lease_path)
    check(outcomes, seen, disk)
    b_result = outcomes[HOST_B]
    if isinstance(b_result, LeaseError):
        assert b_result.rc in REFUSALS, describe(b_result)
    if k == PHASE1_WRITE:
        # A phase-1 block carries no value: wherever it lands, B's ballot outbids it.
        assert isinstance(b_result, PaxosLease), describe(b_result)
    a.close()
    b.close()


# ---------------------------------------------------------------------------
# A and B at the same time, one of them with a fault


CONCURRENT_ROUNDS = 30
CONCURRENT_SEED = 0x5A71_0C4


@dataclass(frozen=True)
class Race:
    """One round: who is faulty and how, and where the other host's acquire meets it."""

    faulty_host: int
    fault: Fault
    gate_at: int  # the clean host starts just before the faulty host's operation gate_at
    land_at: int | None  # a late write lands just before the clean host's operation land_at

    @property
    def clean_host(self) -> int:
        return HOST_B if self.faulty_host == HOST_A else HOST_A

    def __str__(self) -> str:
        return (
            f"host {self.faulty_host} {fault_id(self.fault)}, host {self.clean_host} starts at its op "
            f"{self.gate_at}, a late write lands before host {self.clean_host} op {self.land_at}"
        )

    @classmethod
    def draw(cls, rng: random.Random) -> Race:
        # A contended acquire does more I/O than a free one: aim past the first six too.
        reach = ACQUIRE_OPS + 3
        fault = Fault(rng.choice(list(Kind)), rng.randrange(reach), rng.choice((RECORD_TEAR, HALF_SECTOR)))
        return cls(rng.choice((HOST_A, HOST_B)), fault, rng.randrange(ACQUIRE_OPS), rng.choice([None, *range(reach)]))


async def race(
    plan: Race, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> tuple[dict[int, Outcome], FaultyStorage]:
    """Run both acquires of one round; return their outcomes once every late write has landed."""
    gate = trio.Event()
    outcomes: dict[int, Outcome] = {}

    async def open_gate() -> None:
        gate.set()

    faulty = FaultyStorage(lease_path, disk, nursery, (plan.fault,), at_op={plan.gate_at: open_gate})
    clean = FaultyStorage(
        lease_path, disk, nursery, at_op={} if plan.land_at is None else {plan.land_at: faulty.land_late_writes}
    )

    async def run_faulty() -> None:
        try:
            outcomes[plan.faulty_host] = await attempt(on(area, faulty), plan.faulty_host)
        finally:
            gate.set()  # it may have failed before reaching gate_at

    async def run_clean() -> None:
        await gate.wait()
        outcomes[plan.clean_host] = await attempt(on(area, clean), plan.clean_host)

    async with trio.open_nursery() as both:
        both.start_soon(run_faulty)
        both.start_soon(run_clean)
    await faulty.land_late_writes()
    faulty.close()
    clean.close()
    return outcomes, faulty


async def test_concurrent_acquires_with_a_fault_never_have_two_winners(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """Two hosts race, one with a fault at a random operation; never two winners.

    Each round picks the faulty host (so it has the lower or the higher
    ballot), the fault, the faulty host's operation at which the clean host
    starts (so the clean host's ballot meets the other in every phase), and
    the clean host's operation before which a late write lands.  The lease
    is kept across rounds (lver grows) unless a round leaves it unusable.
    """
    rng = random.Random(CONCURRENT_SEED)
    last_lver = 0
    winners = {HOST_A: 0, HOST_B: 0}
    for round_no in range(CONCURRENT_ROUNDS):
        plan = Race.draw(rng)
        with trio.fail_after(15):
            outcomes, faulty = await race(plan, area, lease_path, disk, nursery)
            seen = await inspect(area, lease_path)
        report = {host: describe(o) for host, o in outcomes.items()}
        where = f"round {round_no}: {plan}: {report}"
        try:
            check(outcomes, seen, disk)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        if faulty.hit:
            assert isinstance(outcomes[plan.faulty_host], LeaseError), f"{where}: met {faulty.hit} yet holds"
        if seen.leader is not None:
            assert seen.leader.lver >= last_lver, f"{where}: lver went back from {last_lver}: {seen.leader}"
            last_lver = seen.leader.lver

        # Release the winner on a clean handle, then start the next round from a usable area.
        with trio.fail_after(15):
            for host_id, outcome in outcomes.items():
                if isinstance(outcome, PaxosLease):
                    winners[host_id] += 1
                    releaser = FaultyStorage(lease_path, disk, nursery)
                    outcome.area = on(outcome.area, releaser)
                    await paxos_lease.release(outcome)
                    releaser.close()
            after = await inspect(area, lease_path)
            if after.leader is None or owner_of(after.leader) is not None or disk.torn:
                await reinit(lease_path, disk)
                last_lver = 0
    assert sum(winners.values()) > 0, f"no round had a winner: the test exercised nothing ({winners})"


# ---------------------------------------------------------------------------
# Torn commits and failed commits


async def tear(op: int, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery) -> Outcome:
    """A's acquire with operation ``op`` torn inside its record."""
    a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.TORN, op, RECORD_TEAR),))
    outcome = await attempt(on(area, a), HOST_A)
    a.close()
    return outcome


async def test_torn_commit_is_caught_by_the_leader_checksum(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    with trio.fail_after(10):
        outcome = await tear(COMMIT_WRITE, area, lease_path, disk, nursery)
        assert isinstance(outcome, LeaseError) and outcome.rc == ResultCode.LEADER_WRITE, describe(outcome)
        assert disk.torn == {RES_OFFSET}
        with FileStorage(lease_path) as storage, pytest.raises(LeaseError) as caught:
            await paxos_lease.read_leader(replace(area, storage=storage), 0, IO_TIMEOUT)
        assert caught.value.rc == ResultCode.LEADER_CHECKSUM
        # Neither host believes the torn record, not even the one that wrote it.
        for host_id in (HOST_B, HOST_A):
            clean = FaultyStorage(lease_path, disk, nursery)
            retry = await attempt(on(area, clean), host_id)
            clean.close()
            assert isinstance(retry, LeaseError) and retry.rc == ResultCode.LEADER_CHECKSUM, describe(retry)


@pytest.mark.sanlock
@pytest.mark.skipif(SANLOCK is None, reason="needs the real sanlock binary (Debian package sanlock)")
@pytest.mark.parametrize(
    ("op", "command", "verdict"),
    [
        pytest.param(COMMIT_WRITE, ["read_leader"], f"read_leader done {ResultCode.LEADER_CHECKSUM:d}", id="leader"),
        pytest.param(
            PHASE1_WRITE,
            ["acquire", "-i", str(HOST_B), "-g", str(GENERATION)],
            f"acquire done {ResultCode.DBLOCK_CHECKSUM:d}",
            id="dblock",
        ),
    ],
)
async def test_sanlock_refuses_what_leased_tore(
    op: int, command: list[str], verdict: str, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """Real sanlock reads a sector leased tore and reports the same checksum error."""
    assert SANLOCK is not None
    with trio.fail_after(30):
        outcome = await tear(op, area, lease_path, disk, nursery)
        assert isinstance(outcome, LeaseError)
        assert disk.torn
        verb, *options = command
        result = await trio.run_process(
            [SANLOCK, "direct", verb, "-r", f"LS:R:{lease_path}:{RES_OFFSET}", *options],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode != 0, out
    assert verdict in out.splitlines(), out


async def test_failed_commit_that_landed_leaves_no_orphan_owner(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """A commit reported failed may still have landed; the retract must undo that ownership.

    §7.5/§7.7: a failed commit means "retract": the release path tries to undo
    any ownership, because the write may have reached the disk.  sanlock does
    it with a full on-disk release (dblock RELEASED, and the leader freed if
    it names us).  Here the commit lands whole but A is told EIO, and A's
    retract I/O is clean: afterwards no host may be left named as owner of a
    lease nobody holds, or with a lockspace view every other host sees a
    live owner (-243) for as long as A lives, since A wrote that leader
    itself and its RELEASED dblock is never consulted (§7.4).
    """
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.TORN, COMMIT_WRITE, HALF_SECTOR),))
        a_result = await attempt(on(area, a), HOST_A)
        assert isinstance(a_result, LeaseError) and a_result.rc == ResultCode.LEADER_WRITE, describe(a_result)
        a.close()
        seen = await inspect(area, lease_path)
        b = FaultyStorage(lease_path, disk, nursery)
        b_result = await attempt(on(area, b), HOST_B)
        b.close()
        after = await inspect(area, lease_path)
    check({HOST_A: a_result, HOST_B: b_result}, after, disk)
    assert seen.leader is not None
    assert owner_of(seen.leader) is None, (
        f"A's acquire failed, yet the leader still names A as owner: {seen.leader}; "
        f"A's dblock {seen.blocks.get(HOST_A)}; B then got {describe(b_result)}"
    )
    assert isinstance(b_result, PaxosLease), describe(b_result)


POST_COMMIT = [
    pytest.param(True, False, COMMIT_WRITE + 1, id="shared-mode-block-write"),
    pytest.param(True, False, COMMIT_WRITE + 2, id="shared-leader-read"),
    pytest.param(True, False, COMMIT_WRITE + 3, id="shared-leader-release-write"),
    pytest.param(False, True, COMMIT_WRITE + 1, id="exclusive-lvb-read"),
]
"""A step after the commit: a shared acquire writes its mode block, then frees the leader (read, write);
an acquire with ``read_lvb_data`` reads the LVB."""


@pytest.mark.parametrize(("shared", "lvb", "op"), POST_COMMIT)
async def test_a_failure_after_the_commit_leaves_no_owner_behind(
    shared: bool, lvb: bool, op: int, area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """The commit landed, then a later step of A's acquire fails: the acquire fails and gives the lease up.

    Nobody holds the lease then, so the leader must not go on naming A, nor
    A's mode block a shared holder: either turns B away (-241 here, -243
    with a lockspace view, -11 for the mode block) for as long as A lives.
    """
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.EIO, op),))
        with pytest.raises(LeaseError):
            await paxos_lease.acquire(
                on(area, a), HOST_A, GENERATION, shared=shared, read_lvb_data=lvb, io_timeout=IO_TIMEOUT
            )
        assert [fault.op for fault, _ in a.hit] == [op]
        a.close()
        seen = await inspect(area, lease_path)
        with FileStorage(lease_path) as storage:
            _, mode = await paxos_lease.read_host_block(replace(area, storage=storage), HOST_A, IO_TIMEOUT)
        b = FaultyStorage(lease_path, disk, nursery)
        b_result = await attempt(on(area, b), HOST_B)
        b.close()
    assert seen.leader is not None and owner_of(seen.leader) is None, f"the leader still names A: {seen.leader}"
    assert not mode.flags & MBLOCK_SHARED, f"A's mode block still says shared: {mode}"
    assert isinstance(b_result, PaxosLease), describe(b_result)


CONVERT_TO_SHARED_LEADER_WRITE = ACQUIRE_OPS + 2
"""After an exclusive acquire: the conversion's sector write (mode block shared), leader read, leader write."""
CONVERT_TO_EXCLUSIVE_LAST_WRITE = 2 * ACQUIRE_OPS + 3
"""After a shared acquire (its acquire, mode block write, leader read and write), the conversion's own
acquire, then the write that blanks our mode block."""


async def mode_of(area: ResourceArea, path: str, host_id: int) -> int:
    with FileStorage(path) as storage:
        _, mode = await paxos_lease.read_host_block(replace(area, storage=storage), host_id, IO_TIMEOUT)
    return mode.flags


async def test_a_conversion_to_shared_that_cannot_free_the_leader_is_shared_and_released_whole(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """EX->SH: the mode block says shared, then the leader write fails (it may still have landed).

    The hold is shared from then on: answered as an error, the client would
    go on believing it holds the lease exclusively while other hosts may take
    it shared.  The leader left ours is freed by the release.
    """
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.EIO, CONVERT_TO_SHARED_LEADER_WRITE),))
        lease = await paxos_lease.acquire(on(area, a), HOST_A, GENERATION, io_timeout=IO_TIMEOUT)
        await paxos_lease.convert(lease, to_shared=True)
        assert [(fault.op, op.write, op.offset) for fault, op in a.hit] == [
            (CONVERT_TO_SHARED_LEADER_WRITE, True, RES_OFFSET)
        ]
        assert lease.shared
        assert await mode_of(area, lease_path, HOST_A) & MBLOCK_SHARED
        held = await inspect(area, lease_path)
        await paxos_lease.release(lease)
        a.close()
        released = await inspect(area, lease_path)
        b = FaultyStorage(lease_path, disk, nursery)
        b_result = await attempt(on(area, b), HOST_B)
        b.close()
    assert held.leader is not None and owner_of(held.leader) == (HOST_A, GENERATION), "the leader write failed"
    assert released.leader is not None and owner_of(released.leader) is None, released.leader
    assert not await mode_of(area, lease_path, HOST_A) & MBLOCK_SHARED
    assert isinstance(b_result, PaxosLease), describe(b_result)


async def test_a_conversion_to_exclusive_that_fails_after_its_commit_keeps_the_shared_hold_only(
    area: ResourceArea, lease_path: str, disk: Disk, nursery: trio.Nursery
) -> None:
    """SH->EX: the conversion's acquire committed, then the write that blanks our mode block fails.

    The client keeps its shared hold (the conversion failed), so the mode
    block must say shared again and the leader committed for the
    conversion must be freed: left ours, it would keep every other host
    out, shared or not, for as long as this host stays.
    """
    with trio.fail_after(10):
        a = FaultyStorage(lease_path, disk, nursery, (Fault(Kind.EIO, CONVERT_TO_EXCLUSIVE_LAST_WRITE),))
        lease = await paxos_lease.acquire(on(area, a), HOST_A, GENERATION, shared=True, io_timeout=IO_TIMEOUT)
        with pytest.raises(LeaseError) as failed:
            await paxos_lease.convert(lease, to_shared=False)
        assert failed.value.rc == ResultCode.DBLOCK_WRITE, describe(failed.value)
        assert [(fault.op, op.offset) for fault, op in a.hit] == [
            (CONVERT_TO_EXCLUSIVE_LAST_WRITE, RES_OFFSET + (1 + HOST_A) * SECTOR)
        ]
        assert lease.shared
        assert await mode_of(area, lease_path, HOST_A) & MBLOCK_SHARED
        seen = await inspect(area, lease_path)
        b = FaultyStorage(lease_path, disk, nursery)
        refused = await attempt(on(area, b), HOST_B)
        await paxos_lease.release(lease)
        a.close()
        taken = await attempt(on(area, b), HOST_B)
        b.close()
    assert seen.leader is not None and owner_of(seen.leader) is None, f"the conversion's leader is left: {seen.leader}"
    assert isinstance(refused, LeaseError) and refused.rc == ResultCode.EAGAIN, describe(refused)
    assert isinstance(taken, PaxosLease), describe(taken)
