"""The pure steps of a ballot, driven without storage (spec §7.3, §7.5, §7.7)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from leased.constants import LFL_ALIGN_1M, LFL_SHORT_HOLD, MBLOCK_SHARED
from leased.errors import ResultCode
from leased.geometry import Geometry
from leased.ondisk import BLANK_MODE_BLOCK, Dblock, ModeBlock
from leased.paxos_steps import BallotAborted, choose_mbal, commit_record, new_resource_leader, scan_blocks

MiB = 1 << 20


def test_ballot_numbers_follow_the_observed_sequence() -> None:
    # host 1 on a fresh lease, then host 2, host 2 again, host 1 taking over (spec §7.3 observations)
    assert choose_mbal(0, 2000, 1) == 1
    assert choose_mbal(1, 2000, 2) == 2002
    assert choose_mbal(2002, 2000, 2) == 4002
    assert choose_mbal(4002, 2000, 1) == 6001
    for max_mbal in (0, 1, 1999, 2000, 2001, 123456):
        for host in (1, 7, 250):
            mbal = choose_mbal(max_mbal, 250, host)
            assert mbal % 250 == host % 250 and mbal > max_mbal


def blocks(*entries: tuple[Dblock, ModeBlock]) -> list[tuple[int, Dblock, ModeBlock]]:
    return [(slot, block, mode) for slot, (block, mode) in enumerate(entries)]


def test_scan_picks_highest_accepted_value_and_counts_shared_holders() -> None:
    low = Dblock(mbal=3, bal=3, inp=3, inp2=1, inp3=50, lver=5).sealed()
    high = Dblock(mbal=4, bal=4, inp=4, inp2=2, inp3=60, lver=5).sealed()
    promise_only = Dblock(mbal=2, lver=5).sealed()
    old = Dblock(mbal=9999, bal=9999, inp=9, inp2=9, inp3=9, lver=4).sealed()
    best, shared = scan_blocks(
        blocks(
            (promise_only, BLANK_MODE_BLOCK),
            (low, ModeBlock(MBLOCK_SHARED, 1)),
            (high, BLANK_MODE_BLOCK),
            (old, ModeBlock(MBLOCK_SHARED, 3)),
        ),
        next_lver=5,
        our_mbal=2005,
    )
    assert best == high
    assert shared == {2, 4}


@pytest.mark.parametrize(
    ("block", "rc"),
    [
        (Dblock(mbal=1, lver=6), ResultCode.DBLOCK_LVER),
        (Dblock(mbal=3000, lver=5), ResultCode.DBLOCK_MBAL),
    ],
)
def test_scan_aborts_on_later_instance_or_higher_ballot(block: Dblock, rc: int) -> None:
    with pytest.raises(BallotAborted) as info:
        scan_blocks(blocks((block.sealed(), BLANK_MODE_BLOCK)), next_lver=5, our_mbal=2005)
    assert info.value.rc == rc


def test_scan_skips_blocks_with_bad_checksums() -> None:
    torn = Dblock(mbal=9000, bal=9000, inp=9, inp2=1, inp3=1, lver=5, checksum=1)
    best, _ = scan_blocks(blocks((torn, BLANK_MODE_BLOCK)), next_lver=5, our_mbal=2005)
    assert best is None


def test_commit_record_sets_owner_and_short_hold_only_for_ourselves() -> None:
    cur = replace(
        new_resource_leader("LS", "R", Geometry(512, MiB)), lver=4, owner_id=2, owner_generation=1, timestamp=9
    ).sealed()
    ours = Dblock(mbal=2001, bal=2001, inp=1, inp2=3, inp3=77, lver=5)
    shared = commit_record(cur, 5, ours, host_id=1, generation=3, now=80, shared=True, num_hosts=None)
    assert (shared.lver, shared.owner_id, shared.owner_generation, shared.timestamp) == (5, 1, 3, 77)
    assert (shared.write_id, shared.write_generation, shared.write_timestamp) == (1, 3, 80)
    assert shared.flags == LFL_ALIGN_1M | LFL_SHORT_HOLD
    assert shared.checksum == shared.compute_checksum()
    exclusive = commit_record(shared, 6, ours, host_id=1, generation=3, now=81, shared=False, num_hosts=10)
    assert exclusive.flags == LFL_ALIGN_1M and exclusive.num_hosts == 10
    theirs = Dblock(mbal=2001, bal=2001, inp=2, inp2=1, inp3=70, lver=5)
    other = commit_record(shared, 5, theirs, host_id=1, generation=3, now=82, shared=False, num_hosts=None)
    assert other.flags == shared.flags, "a value committed for another host keeps the flags"
