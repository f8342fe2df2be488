"""leased direct against the real sanlock 3.8.5 binary on the same files.

Byte-identical init, each tool reading what the other wrote (dump and
read_leader print the same), and the two refusing each other's held leases.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from clitools import Result, leased, read_bytes, sanlock
from conftest import require_sanlock

from leased import delta_lease, paxos_lease
from leased.errors import LeaseError, ResultCode
from leased.host_status import HostStatusTable
from leased.storage import FileStorage

pytestmark = pytest.mark.sanlock

MiB = 1 << 20
GEOMETRIES = [("512", "1M"), ("4096", "1M"), ("4096", "8M")]


@pytest.fixture(autouse=True)
def _need_sanlock() -> None:
    require_sanlock()


def new_file(path: Path, size: int = 32 * MiB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def area_size(align: str) -> int:
    return int(align[:-1]) * MiB


@pytest.mark.parametrize(("sector", "align"), GEOMETRIES)
def test_init_writes_byte_identical_areas(tmp_path: Path, sector: str, align: str) -> None:
    ours, theirs = new_file(tmp_path / "ours"), new_file(tmp_path / "theirs")
    size = area_size(align)
    for tool, path in ((leased, ours), (sanlock, theirs)):
        geometry = ("-Z", sector, "-A", align)
        assert tool("direct", "init", "-s", f"LS:0:{path}:0", "-o", "5", *geometry).stdout == "init done 0\n"
        assert tool("direct", "init", "-r", f"LS:RES1:{path}:{size}", *geometry).stdout == "init done 0\n"
        assert tool("direct", "init", "-r", f"LS:RES2:{path}:{2 * size}", "-n", "10", *geometry).returncode == 0
    for offset in (0, size, 2 * size):
        assert read_bytes(ours, offset, size) == read_bytes(theirs, offset, size), f"area at {offset} differs"


def test_init_default_geometry_and_bad_pair_match(tmp_path: Path) -> None:
    ours, theirs = new_file(tmp_path / "ours"), new_file(tmp_path / "theirs")
    assert leased("direct", "init", "-s", f"LS:0:{ours}:0").stdout == "init done 0\n"
    assert sanlock("direct", "init", "-s", f"LS:0:{theirs}:0").stdout == "init done 0\n"
    assert read_bytes(ours, 0, MiB) == read_bytes(theirs, 0, MiB)
    bad_ours = leased("direct", "init", "-s", f"LS:0:{ours}:0", "-Z", "512", "-A", "2M")
    bad_theirs = sanlock("direct", "init", "-s", f"LS:0:{theirs}:0", "-Z", "512", "-A", "2M")
    assert (
        (bad_ours.returncode, bad_ours.stdout) == (bad_theirs.returncode, bad_theirs.stdout) == (1, bad_theirs.stdout)
    )
    assert "Invalid sector_size/align_size combination (512/2097152)" in bad_ours.stdout


def dump_and_leaders(run: Callable[..., Result], path: Path, size: int) -> list[str]:
    """Everything the reading commands print for the test layout."""
    outputs = [
        run("direct", "dump", str(path), "-f", "2").stdout,
        run("direct", "dump", f"{path}:{size}").stdout,
    ]
    for host_id in (1, 2, 3):
        result = run("direct", "read_leader", "-s", f"LS:{host_id}:{path}:0")
        outputs.append(f"{result.returncode}\n{result.stdout}")
    for index, name in ((1, "RES1"), (2, "RES2"), (3, "RES3")):
        result = run("direct", "read_leader", "-r", f"LS:{name}:{path}:{index * size}")
        outputs.append(f"{result.returncode}\n{result.stdout}")
    return outputs


@pytest.mark.parametrize(("sector", "align"), GEOMETRIES)
async def test_sanlock_reads_what_leased_wrote(tmp_path: Path, sector: str, align: str) -> None:
    """leased joins hosts 1 and 2, holds RES1 EX and RES2 SH twice; sanlock lists it all the same."""
    path = new_file(tmp_path / "leases")
    size = area_size(align)
    geometry = ("-Z", sector, "-A", align)
    assert leased("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1", *geometry).returncode == 0
    for index, name in ((1, "RES1"), (2, "RES2"), (3, "RES3")):
        assert leased("direct", "init", "-r", f"LS:{name}:{path}:{index * size}", *geometry).returncode == 0

    async def join(host_id: int) -> None:
        result = await trio.to_thread.run_sync(
            lambda: leased("direct", "acquire_id", "-s", f"LS:{host_id}:{path}:0", "-o", "1", "-e", f"host{host_id}")
        )
        assert result.stdout == "acquire_id done 0\n", result.stderr

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(join, 1)
            nursery.start_soon(join, 2)
    assert (
        leased("direct", "acquire", "-r", f"LS:RES1:{path}:{size}", "-i", "1", "-g", "1").stdout == "acquire done 0\n"
    )
    for host_id in (1, 2):
        result = leased("direct", "acquire", "-r", f"LS:RES2:{path}:{2 * size}:SH", "-i", str(host_id), "-g", "1")
        assert result.stdout == "acquire done 0\n", result.stderr
    assert leased("direct", "acquire", "-r", f"LS:RES3:{path}:{3 * size}", "-i", "2", "-g", "1").returncode == 0
    assert leased("direct", "release", "-r", f"LS:RES3:{path}:{3 * size}", "-i", "2", "-g", "1").returncode == 0

    theirs = dump_and_leaders(sanlock, path, size)
    ours = dump_and_leaders(leased, path, size)
    assert ours == theirs
    dump = theirs[0]
    assert re.search(r"^00000000 +LS +host1 \d{10} 0001 0001$", dump, re.M)
    assert re.search(rf"^{size:08d} +LS +RES1 \d{{10}} 0001 0001 1/0/0$", dump, re.M)
    assert re.search(r"^dblock\[0000\] mbal 1 bal 1 inp 1 inp2 1 inp3 \d+ lver 1 sum [0-9a-f]+$", dump, re.M)
    assert re.search(rf"^{2 * size:08d} +LS +RES2 0000000000 0002 0001 2/0/0$", dump, re.M)
    assert dump.count(" SH\n") == 2
    assert " " * 106 + "0001 0001 SH" in dump and " " * 106 + "0002 0001 SH" in dump
    assert re.search(rf"^{3 * size:08d} +LS +RES3 0000000000 0002 0001 1/0/0$", dump, re.M)
    assert theirs[2].startswith("0\nread_leader done 0\n")
    assert "\nresource_name host1\n" in theirs[2]


def test_leased_reads_what_sanlock_wrote(tmp_path: Path) -> None:
    path = new_file(tmp_path / "leases")
    assert sanlock("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1").returncode == 0
    for index, name in ((1, "RES1"), (2, "RES2"), (3, "RES3")):
        assert sanlock("direct", "init", "-r", f"LS:{name}:{path}:{index * MiB}").returncode == 0
    assert sanlock("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-o", "1", "-e", "alpha").returncode == 0
    assert sanlock("direct", "acquire_id", "-s", f"LS:2:{path}:0", "-o", "1").returncode == 0  # default uuid name
    assert sanlock("direct", "renew_id", "-s", f"LS:2:{path}:0", "-o", "1").returncode == 0
    assert sanlock("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "1", "-g", "1").returncode == 0
    assert sanlock("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "1", "-g", "1").returncode == 0
    assert sanlock("direct", "init", "-r", f"LS:RES3:{path}:{3 * MiB}", "-z", "1").returncode == 0
    theirs = dump_and_leaders(sanlock, path, MiB)
    ours = dump_and_leaders(leased, path, MiB)
    assert ours == theirs
    assert theirs[-1].startswith("1\nread_leader done -223\nmagic 0x11282016\n"), "cleared lease"
    for extra in (["-f", "1"], [f"{path}:512"], [f"{path}:0:{MiB}"], [f"{path}:{5 * MiB}"]):
        args = ["direct", "dump", *(extra if extra[0] != "-f" else [str(path), *extra])]
        assert (leased(*args).stdout, leased(*args).returncode) == (sanlock(*args).stdout, sanlock(*args).returncode)


def test_errors_match_sanlock_and_explain_themselves(tmp_path: Path) -> None:
    path = new_file(tmp_path / "leases", 4 * MiB)
    assert sanlock("direct", "init", "-s", f"LS:0:{path}:0").returncode == 0
    assert sanlock("direct", "init", "-r", f"LS:RES1:{path}:{MiB}").returncode == 0
    cases = [
        ("read_leader", "-s", f"XX:1:{path}:0"),
        ("read_leader", "-r", f"LS:RESX:{path}:{MiB}"),
        ("read_leader", "-r", f"LS:RES1:{path}:{2 * MiB}"),
        ("acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "2001", "-g", "1"),
        ("acquire_id", "-s", f"XX:1:{path}:0"),
        ("release_id", "-s", f"LS:2:{path}:0"),
    ]
    for case in cases:
        ours, theirs = leased("direct", *case), sanlock("direct", *case)
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), case
        assert ours.stderr.startswith("leased: ") and ours.stderr.count("\n") == 1, ours.stderr
        assert "Traceback" not in ours.stderr
    unknown = leased("direct", "frobnicate")
    assert (unknown.returncode, unknown.stdout) == (1, 'direct action "frobnicate" is unknown\n')


@pytest.fixture
def shared_layout(tmp_path: Path) -> Iterator[Path]:
    path = new_file(tmp_path / "leases", 4 * MiB)
    assert sanlock("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1").returncode == 0
    assert sanlock("direct", "init", "-r", f"LS:RES1:{path}:{MiB}").returncode == 0
    yield path


def test_sanlock_direct_holder_refuses_leased(shared_layout: Path) -> None:
    path = shared_layout
    assert sanlock("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-o", "1", "-e", "sanlock-host").returncode == 0
    assert sanlock("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "1", "-g", "1").returncode == 0
    refused = leased("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "2", "-g", "1")
    assert (refused.returncode, refused.stdout) == (1, "acquire done -241\n")


def test_leased_direct_holder_refuses_sanlock(shared_layout: Path) -> None:
    path = shared_layout
    assert leased("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-o", "1", "-e", "leased-host").returncode == 0
    assert leased("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "1", "-g", "1").returncode == 0
    refused = sanlock("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "2", "-g", "1")
    assert (refused.returncode, refused.stdout) == (1, "acquire done -241\n")


async def test_live_sanlock_host_refuses_leased_with_lockspace(shared_layout: Path) -> None:
    """A real sanlock host that keeps renewing its host id: leased sees it live (-243)."""
    path = shared_layout
    assert sanlock("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-o", "1", "-e", "sanlock-host").returncode == 0
    assert sanlock("direct", "acquire", "-r", f"LS:RES1:{path}:{MiB}", "-i", "1", "-g", "1").returncode == 0
    stop = threading.Event()

    def sanlock_renews() -> None:
        while not stop.wait(0.5):
            assert sanlock("direct", "renew_id", "-s", f"LS:1:{path}:0", "-o", "1").returncode == 0

    storage = FileStorage(str(path))
    renewer = threading.Thread(target=sanlock_renews)
    renewer.start()
    try:
        with trio.fail_after(60):
            ls_area = await delta_lease.discover_lockspace(storage, 0, "LS", 1)
            me = await delta_lease.acquire_host_id(ls_area, 2, "leased-host", 1)
            table = HostStatusTable(ls_area.space_name, ls_area.geometry, 2, 1, 60)
            view = paxos_lease.LockspaceView(ls_area, 1, 60, table)
            area = await paxos_lease.discover_resource(storage, MiB, "LS", "RES1", 1)
            with pytest.raises(LeaseError) as info:
                await paxos_lease.acquire(area, 2, me.generation, view=view, io_timeout=1)
    finally:
        stop.set()
        renewer.join()
        storage.close()
    assert info.value.rc == ResultCode.ACQUIRE_IDLIVE
