"""4096-byte-sector block devices for real: loop devices made with ``losetup --sector-size 4096``.

Needs root (CI is root); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from clitools import leased, read_bytes, sanlock

from leased import delta_lease, paxos_lease
from leased.geometry import Geometry
from leased.storage import FileStorage

MiB = 1 << 20

pytestmark = pytest.mark.root


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Make 4096-byte-sector loop devices backed by files under tmp_path; detach them after."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    if shutil.which("losetup") is None:
        pytest.skip("losetup not installed (util-linux)")
    made: list[str] = []

    def make(name: str) -> Path:
        backing = tmp_path / name
        with backing.open("wb") as f:
            f.truncate(32 * MiB)
        proc = subprocess.run(
            ["losetup", "--find", "--show", "--sector-size", "4096", str(backing)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot create a loop device here: {proc.stderr.strip()}")
        device = proc.stdout.strip()
        made.append(device)
        return Path(device)

    yield make
    for device in made:
        subprocess.run(["losetup", "-d", device], check=False)


def test_device_reports_4096_byte_sectors_and_opens_direct(loop_device: Callable[[str], Path]) -> None:
    device = loop_device("a")
    storage = FileStorage(str(device))
    try:
        assert storage.is_block_device()
        assert storage.logical_sector_size() == 4096
        assert storage.direct
    finally:
        storage.close()


@pytest.mark.sanlock
def test_default_init_on_4k_device_matches_sanlock(loop_device: Callable[[str], Path]) -> None:
    ours, theirs = loop_device("ours"), loop_device("theirs")
    for tool, device in ((leased, ours), (sanlock, theirs)):
        assert tool("direct", "init", "-s", f"LS:0:{device}:0").stdout == "init done 0\n"
        assert tool("direct", "init", "-r", f"LS:RES1:{device}:{8 * MiB}").stdout == "init done 0\n"
    for offset in (0, 8 * MiB):
        assert read_bytes(ours, offset, 8 * MiB) == read_bytes(theirs, offset, 8 * MiB)
    leader = leased("direct", "read_leader", "-r", f"LS:RES1:{ours}:{8 * MiB}").stdout
    assert "\nflags 0x80\nsector_size 4096\nnum_hosts 2000\n" in leader  # 4096/8M, as sanlock picks
    assert (
        leased("direct", "dump", str(ours), "-f", "2").stdout == sanlock("direct", "dump", str(ours), "-f", "2").stdout
    )


@pytest.mark.sanlock
def test_512_geometry_is_refused_on_4k_device(loop_device: Callable[[str], Path]) -> None:
    device = loop_device("small")
    ours = leased("direct", "init", "-s", f"LS:0:{device}:0", "-Z", "512", "-A", "1M")
    theirs = sanlock("direct", "init", "-s", f"LS:0:{device}:0", "-Z", "512", "-A", "1M")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (1, "init done -22\n")
    assert "Invalid argument" in ours.stderr


async def test_leases_on_4k_device(loop_device: Callable[[str], Path]) -> None:
    device = loop_device("leases")
    geometry = Geometry(4096, MiB)
    storages = [FileStorage(str(device)) for _ in range(2)]
    try:
        with trio.fail_after(30):
            await delta_lease.init_lockspace(storages[0], 0, "LS", geometry, 1)
            await paxos_lease.init_resource(storages[0], MiB, "LS", "R", geometry)
            hosts = {}
            async with trio.open_nursery() as nursery:

                async def join(host_id: int) -> None:
                    area = await delta_lease.discover_lockspace(storages[host_id - 1], 0, "LS", 1)
                    hosts[host_id] = await delta_lease.acquire_host_id(area, host_id, f"h{host_id}", 1)

                for host_id in (1, 2):
                    nursery.start_soon(join, host_id)
            assert hosts[1].area.geometry == geometry
            area = await paxos_lease.discover_resource(storages[0], MiB, "LS", "R", 1)
            lease = await paxos_lease.acquire(area, 1, hosts[1].generation, io_timeout=1)
            await paxos_lease.release(lease)
            shared = [
                await paxos_lease.acquire(
                    await paxos_lease.discover_resource(storages[h - 1], MiB, "LS", "R", 1),
                    h,
                    hosts[h].generation,
                    shared=True,
                    io_timeout=1,
                )
                for h in (1, 2)
            ]
            assert [s.lver for s in shared] == [2, 3]
    finally:
        for storage in storages:
            storage.close()
