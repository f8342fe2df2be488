"""The fault filesystem itself: passthrough with O_DIRECT, EIO and stalls where asked, and nothing left behind.

Other suites use :mod:`faultfs` to fail storage below a real daemon, so
they depend on each property checked here: that clients' ``O_DIRECT`` I/O
reaches the backing file unchanged, that a fault hits exactly the range it
names, that a stall really holds the caller until healed, and that a test
that fails or dies leaves no mount and no process.  Real ``sanlock direct``
and leased's own :class:`~leased.storage.FileStorage` run through the mount
to show both storage stacks see the faults as a failing disk.

Every wait is bounded: threads are joined and events waited on with
timeouts, subprocesses have ``timeout=``, async code runs under
``fail_after``; the fixture heals whatever a failing test left stalled.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import trio
from clitools import sanlock

from leased.errors import LeaseError, ResultCode
from leased.storage import FileStorage, StepFailed
from leased.torture.faultfs import FaultFS, FaultFSUnavailable, Mode, fault_fs, is_mounted

pytestmark = pytest.mark.root

MiB = 1 << 20
WAIT = 5.0
LONG = 60.0
"""A deadline no completing I/O meets, however loaded the machine."""
"""Upper bound for anything that should happen promptly (a release, a thread finishing)."""

STILL_BLOCKED = 0.5
"""How long a stalled caller must stay blocked to count as stalled."""


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultFS]:
    try:
        with fault_fs(tmp_path) as mounted:
            yield mounted
    except FaultFSUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def lease_path(fs: FaultFS) -> Path:
    """A 16 MiB sparse lease file, made in the backing directory, used through the mount."""
    with (fs.backing / "leases").open("wb") as f:
        f.truncate(16 * MiB)
    return fs.mountpoint / "leases"


def aligned(data: bytes) -> mmap.mmap:
    """A page-aligned buffer holding ``data``, as O_DIRECT needs."""
    buf = mmap.mmap(-1, max(len(data), mmap.PAGESIZE))
    buf[: len(data)] = data
    return buf


def direct_read(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = aligned(bytes(length))
        with buf:
            done = os.preadv(fd, [memoryview(buf)[:length]], offset)
            return buf[:done]
    finally:
        os.close(fd)


def direct_write(path: Path, offset: int, data: bytes) -> int:
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        with aligned(data) as buf:
            view = memoryview(buf)[: len(data)]
            try:
                return os.pwritev(fd, [view], offset)
            finally:
                view.release()
    finally:
        os.close(fd)


def backing_bytes(fs: FaultFS, offset: int, length: int) -> bytes:
    with (fs.backing / "leases").open("rb") as f:
        f.seek(offset)
        return f.read(length)


# -- passthrough -----------------------------------------------------------------


@pytest.mark.parametrize("size", [512, 4096, MiB])
def test_direct_io_reaches_the_backing_file(fs: FaultFS, lease_path: Path, size: int) -> None:
    offset = 3 * MiB + size  # aligned to the transfer size, as sanlock's are
    data = os.urandom(size)
    before = fs.counts()
    assert direct_write(lease_path, offset, data) == size
    assert backing_bytes(fs, offset, size) == data
    assert direct_read(lease_path, offset, size) == data
    after = fs.counts()
    # One request each way: up to 1 MiB is never split, so a range rule sees the whole transfer.
    assert (after["write"] - before["write"], after["read"] - before["read"]) == (1, 1)


def test_nothing_is_cached_in_the_mount(fs: FaultFS, lease_path: Path) -> None:
    """Another host's write (here: straight to the backing file) is seen at once, buffered or O_DIRECT."""
    with lease_path.open("rb", buffering=0) as f:  # no Python-side buffer: each read is a read(2)
        assert f.read(512) == bytes(512)
        with (fs.backing / "leases").open("r+b") as b:
            b.write(b"x" * 512)
        f.seek(0)
        assert f.read(512) == b"x" * 512
    assert direct_read(lease_path, 0, 512) == b"x" * 512


def test_file_operations_pass_through(fs: FaultFS) -> None:
    new = fs.mountpoint / "new"
    new.write_bytes(b"hello")
    assert (fs.backing / "new").read_bytes() == b"hello"
    assert "new" in os.listdir(fs.mountpoint)
    os.truncate(new, 4096)
    assert new.stat().st_size == 4096 == (fs.backing / "new").stat().st_size
    new.rename(fs.mountpoint / "renamed")
    assert sorted(os.listdir(fs.backing)) == ["renamed"]
    with (fs.mountpoint / "renamed").open("r+b") as f:
        f.write(b"j")
        f.flush()
        os.fsync(f.fileno())
    assert os.statvfs(fs.mountpoint).f_bsize > 0
    os.utime(fs.mountpoint / "renamed", ns=(10**9, 2 * 10**9))
    assert (fs.backing / "renamed").stat().st_mtime_ns == 2 * 10**9
    before = time.time_ns()
    os.utime(fs.mountpoint / "renamed")  # "now", as touch does
    assert (fs.backing / "renamed").stat().st_mtime_ns >= before - 10**9
    (fs.mountpoint / "renamed").unlink()
    assert os.listdir(fs.backing) == []


# -- faults ----------------------------------------------------------------------


def test_read_eio_hits_only_its_range(fs: FaultFS, lease_path: Path) -> None:
    fs.set(read="eio", path="leases", start=MiB, end=2 * MiB)
    assert direct_read(lease_path, 0, 4096) == bytes(4096)
    assert direct_read(lease_path, 2 * MiB, 4096) == bytes(4096)
    for offset in (MiB, 2 * MiB - 512):
        with pytest.raises(OSError) as exc:
            direct_read(lease_path, offset, 512)
        assert exc.value.errno == errno.EIO
    assert direct_write(lease_path, MiB, b"w" * 512) == 512  # writes there still work
    (fs.backing / "other").write_bytes(bytes(MiB + 4096))
    assert direct_read(fs.mountpoint / "other", MiB, 4096) == bytes(4096)  # another file is unaffected
    assert fs.counts()["read_eio"] == 2


def test_write_eio_leaves_the_disk_unchanged_until_healed(fs: FaultFS, lease_path: Path) -> None:
    fs.set(write="eio")
    with pytest.raises(OSError) as exc:
        direct_write(lease_path, 0, b"w" * 512)
    assert exc.value.errno == errno.EIO
    assert backing_bytes(fs, 0, 512) == bytes(512)
    assert direct_read(lease_path, 0, 512) == bytes(512)
    assert fs.heal() == 0
    assert direct_write(lease_path, 0, b"w" * 512) == 512
    assert backing_bytes(fs, 0, 512) == b"w" * 512
    counts = fs.counts()
    assert (counts["write"], counts["write_eio"]) == (2, 1)


def test_rules_add_up_and_first_match_wins(fs: FaultFS, lease_path: Path) -> None:
    fs.set(write="eio", start=0, end=MiB)
    fs.set(read="eio", write="ok", start=0, end=2 * MiB, add=True)
    with pytest.raises(OSError):
        direct_write(lease_path, 0, bytes(512))  # first rule
    assert direct_write(lease_path, MiB, bytes(512)) == 512  # second rule: writes ok
    with pytest.raises(OSError):
        direct_read(lease_path, MiB, 512)
    fs.set(read="ok")  # replaces both
    assert direct_read(lease_path, 0, 512) == bytes(512)


@pytest.mark.parametrize("kind", ["read", "write"])
@pytest.mark.parametrize("fail_stalled", [False, True], ids=["complete", "fail"])
def test_stall_holds_the_caller_until_healed(fs: FaultFS, lease_path: Path, kind: str, fail_stalled: bool) -> None:
    data = b"s" * 4096
    outcome: list[bytes | int | OSError] = []
    done = threading.Event()

    def io() -> None:
        try:
            outcome.append(
                direct_read(lease_path, MiB, 4096) if kind == "read" else direct_write(lease_path, MiB, data)
            )
        except OSError as exc:
            outcome.append(exc)
        done.set()

    if kind == "read":
        with (fs.backing / "leases").open("r+b") as b:
            b.seek(MiB)
            b.write(data)
    if kind == "read":
        fs.set(read="stall")
    else:
        fs.set(write="stall")
    threading.Thread(target=io, daemon=True).start()
    fs.wait_stalled(1, timeout=WAIT)
    assert not done.wait(STILL_BLOCKED), "a stalled request returned"
    assert fs.counts()["stalled_now"] == 1
    assert fs.heal(fail_stalled=fail_stalled) == 1
    assert done.wait(WAIT), "a healed request did not return"
    if fail_stalled:
        assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EIO
        assert backing_bytes(fs, MiB, 4096) == (data if kind == "read" else bytes(4096))
    else:
        assert outcome == [data if kind == "read" else 4096]
        assert backing_bytes(fs, MiB, 4096) == data
    assert fs.counts()[f"{kind}_stall"] == 1


def test_a_stall_does_not_block_other_ranges(fs: FaultFS, lease_path: Path) -> None:
    """The lockspace area can hang while resource I/O goes on (many worker threads)."""
    fs.set(read="stall", start=0, end=MiB)
    done = threading.Event()

    def stalled() -> None:
        with contextlib.suppress(OSError):
            direct_read(lease_path, 0, 512)
        done.set()

    threading.Thread(target=stalled, daemon=True).start()
    fs.wait_stalled(1, timeout=WAIT)
    assert direct_read(lease_path, MiB, 512) == bytes(512)
    assert direct_write(lease_path, 0, b"x" * 512) == 512  # writes to the stalled range are not stalled
    assert not done.is_set()
    fs.heal()
    assert done.wait(WAIT)


def test_wait_stalled_times_out(fs: FaultFS) -> None:
    with pytest.raises(TimeoutError):
        fs.wait_stalled(1, timeout=0.05)


def test_bad_rules_are_refused(fs: FaultFS) -> None:
    with pytest.raises(ValueError):
        fs.set(read=cast(Mode, "slow"))  # deliberately outside the type: an untyped caller's mistake
    with pytest.raises(ValueError):
        fs.set(read="eio", start=10, end=10)
    with pytest.raises(ValueError):
        fs.set(read="eio", path=fs.backing / "leases")  # not a path through the mount


def test_a_rule_names_its_file_either_way(fs: FaultFS, lease_path: Path) -> None:
    for path in ("leases", lease_path, str(lease_path)):
        fs.set(read="eio", path=path)
        with pytest.raises(OSError):
            direct_read(lease_path, 0, 512)
    fs.set(read="eio", path="other")
    assert direct_read(lease_path, 0, 512) == bytes(512)


# -- nothing left behind ---------------------------------------------------------------


def test_exit_heals_unmounts_and_ends_the_process(tmp_path: Path) -> None:
    outcome: list[OSError] = []
    done = threading.Event()
    try:
        with pytest.raises(RuntimeError, match="test failed"), fault_fs(tmp_path) as fs:
            (fs.backing / "leases").write_bytes(bytes(4096))
            fs.set(read="stall")

            def stalled() -> None:
                try:
                    direct_read(fs.mountpoint / "leases", 0, 512)
                except OSError as exc:
                    outcome.append(exc)
                done.set()

            threading.Thread(target=stalled, daemon=True).start()
            fs.wait_stalled(1, timeout=WAIT)
            raise RuntimeError("test failed")
    except FaultFSUnavailable as exc:
        pytest.skip(str(exc))
    assert done.wait(WAIT)
    assert outcome[0].errno == errno.EIO
    assert not is_mounted(fs.mountpoint)
    assert not process_alive(fs.pid)


def test_a_failed_mount_is_reported_not_hung(tmp_path: Path, fs: FaultFS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child cannot load libfuse: fault_fs says why (tests then skip) and leaves no process or mount."""
    monkeypatch.setenv("FUSE_LIBRARY_PATH", str(tmp_path / "no-libfuse.so"))  # mfusepy's own override
    with pytest.raises(FaultFSUnavailable, match=r"(?s)mount failed.*no-libfuse"), fault_fs(tmp_path / "broken"):
        pytest.fail("mounted without libfuse")
    assert not is_mounted(tmp_path / "broken" / "mnt")


def test_a_killed_test_process_leaves_nothing_behind(tmp_path: Path, fs: FaultFS) -> None:
    """The test process dies with a thread stuck in the mount: the child must notice, clean up and exit.

    (The ``fs`` fixture is only there to skip where FUSE cannot run.)
    """
    script = textwrap.dedent(
        f"""
        import os, sys, threading
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from leased.torture.faultfs import fault_fs
        from test_faultfs import direct_read
        with fault_fs(Path({str(tmp_path / "orphan")!r})) as fs:
            (fs.backing / "leases").write_bytes(bytes(4096))
            fs.set(read="stall")
            threading.Thread(target=direct_read, args=(fs.mountpoint / "leases", 0, 512), daemon=True).start()
            fs.wait_stalled(1, timeout=5)
            print(fs.pid, flush=True)
            os.kill(os.getpid(), 9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout)
    deadline = time.monotonic() + WAIT
    while process_alive(pid) or is_mounted(tmp_path / "orphan" / "mnt"):
        assert time.monotonic() < deadline, "faultfs outlived its test process"
        time.sleep(0.02)


def process_alive(pid: int) -> bool:
    """Running, not a zombie (a reparented child may wait a while for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- real storage stacks through the mount -----------------------------------------------


@pytest.mark.sanlock
def test_sanlock_direct_sees_a_failing_disk(fs: FaultFS, lease_path: Path) -> None:
    lockspace = f"LS:1:{lease_path}:0"
    resource = f"LS:R1:{lease_path}:{MiB}"
    assert sanlock("direct", "init", "-s", f"LS:0:{lease_path}:0", timeout=30).stdout == "init done 0\n"
    assert sanlock("direct", "init", "-r", resource, timeout=30).stdout == "init done 0\n"
    ok = sanlock("direct", "read_leader", "-s", lockspace, timeout=30)
    assert ok.returncode == 0 and "magic 0x12212010" in ok.stdout
    assert backing_bytes(fs, 0, 4) == (0x12212010).to_bytes(4, "little")

    fs.set(read="eio", start=MiB, end=2 * MiB)  # only the resource's area fails
    assert sanlock("direct", "read_leader", "-s", lockspace, timeout=30).returncode == 0
    failed = sanlock("direct", "read_leader", "-r", resource, timeout=30)
    assert failed.returncode != 0, failed.stdout

    fs.set(read="eio")
    failed = sanlock("direct", "read_leader", "-s", lockspace, timeout=30)
    assert failed.returncode != 0, failed.stdout
    assert fs.counts()["read_eio"] >= 2

    fs.heal()
    assert sanlock("direct", "read_leader", "-s", lockspace, timeout=30).returncode == 0


def test_leased_storage_opens_direct_and_sees_eio(fs: FaultFS, lease_path: Path) -> None:
    storage = FileStorage(str(lease_path))
    try:
        assert storage.direct
        storage.write_sync(MiB, b"L" * 4096)
        assert storage.read_sync(MiB, 4096) == b"L" * 4096
        assert backing_bytes(fs, MiB, 4096) == b"L" * 4096

        fs.set(read="eio", write="eio", start=MiB, end=MiB + 4096)
        with pytest.raises(LeaseError) as read_error:
            storage.read_sync(MiB, 512)
        with pytest.raises(LeaseError) as write_error:
            storage.write_sync(MiB, bytes(512))
        assert read_error.value.rc == write_error.value.rc == -errno.EIO
        assert storage.read_sync(0, 512) == bytes(512)  # outside the range
    finally:
        storage.close()


async def test_leased_abandons_a_stalled_read_and_closes_after_heal(
    fs: FaultFS, lease_path: Path, io_engine: str
) -> None:
    """The daemon's path: the read times out (AIO_TIMEOUT), the I/O stays stuck; heal lets it finish and close."""
    storage = FileStorage(str(lease_path))
    fs.set(read="stall")
    with trio.fail_after(WAIT):
        with pytest.raises(LeaseError) as exc:
            await storage.read(0, 512, timeout=0.2)
        assert exc.value.rc == ResultCode.AIO_TIMEOUT
        storage.close()  # deferred: the abandoned thread still uses the descriptor
        assert fs.counts()["open"] == 1
        fs.heal()
        while fs.counts()["open"]:  # the thread returned, the real close happened, the kernel sent RELEASE
            await trio.sleep(0.01)


async def test_a_ballot_phase_pair_fails_at_the_io_that_failed(fs: FaultFS, lease_path: Path, io_engine: str) -> None:
    """write_then_read_sparse in one hand-off: it names the failed I/O, never reads after a failed write,
    and gives up on a stalled write by twice its timeout.  (A stalled read after a write is not tested
    here: the write would have to beat a short deadline, which a loaded machine may not.)"""
    storage = FileStorage(str(lease_path))
    block = b"\x5a" * 512
    try:
        with trio.fail_after(LONG):
            done = await storage.write_then_read_sparse(MiB + 1024, block, MiB, MiB, 1024, 512, timeout=LONG)
            assert done.units == ((0, block),)
            assert done.whole() == await storage.read(MiB, MiB, LONG)

        # Only the I/O that stalls may meet its deadline: what completes gets LONG, so a loaded machine
        # cannot turn an EIO or a finished write into a timeout.
        cases: list[tuple[Mode, Mode, str, int, float]] = [
            ("eio", "ok", "write", -errno.EIO, LONG),
            ("ok", "eio", "read", -errno.EIO, LONG),
            ("stall", "ok", "write", ResultCode.AIO_TIMEOUT, 0.3),
        ]
        for write, read, step, rc, timeout in cases:
            fs.set(write=write, read=read)
            reads_before = fs.counts().get("read", 0)
            with trio.fail_after(2 * timeout + WAIT), pytest.raises(StepFailed) as failed:
                await storage.write_then_read_sparse(MiB + 1024, block, MiB, MiB, 1024, 512, timeout=timeout)
            assert (failed.value.step, failed.value.rc) == (step, rc), (write, read)
            if step == "write":
                assert fs.counts().get("read", 0) == reads_before, "no read after a failed write"
            fs.heal(fail_stalled=True)
    finally:
        fs.heal()
        storage.close()
