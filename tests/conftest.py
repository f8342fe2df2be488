"""Shared fixtures (real lease files on disk, opened the way hosts open them) and the run's test order."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from inprocess import InProcessDaemon, Seams, joined
from scheduling import UNKNOWN_SECONDS, load_durations, longest_first, store_durations

from leased.storage import FileStorage, use_io_engine
from leased.torture.faultfs import FaultFS, FaultFSUnavailable, fault_fs

MiB = 1 << 20

# Timings belong in bench/, not in a pass/fail test: hypothesis's default 200 ms deadline per example
# and its too_slow health check fail a correct test when twelve workers share two cores.
settings.register_profile("leased", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("leased")

SANLOCK = shutil.which("sanlock") or ("/usr/sbin/sanlock" if Path("/usr/sbin/sanlock").exists() else None)


@pytest.fixture
def lease_file(tmp_path: Path) -> Path:
    """A 16 MiB sparse file: lockspace at 0, resources at 1 MiB steps."""
    path = tmp_path / "leases.img"
    with path.open("wb") as f:
        f.truncate(16 * MiB)
    return path


@pytest.fixture
def open_storage() -> Iterator[type[FileStorage]]:
    """Open real FileStorage handles, one per simulated host, closed at teardown."""
    opened: list[FileStorage] = []

    class Tracked(FileStorage):
        def __init__(self, path: str | os.PathLike[str], **kwargs: bool) -> None:
            super().__init__(path, **kwargs)
            opened.append(self)

    yield Tracked
    for storage in opened:
        storage.close()


@pytest.fixture(params=["auto", "threads"])
def io_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each I/O engine of the trio shell in turn (``auto`` is io_uring here); back to ``auto`` after."""
    engine: str = request.param
    use_io_engine(engine)
    try:
        yield engine
    finally:
        use_io_engine("auto")


@pytest.fixture
def daemon_seams() -> Seams:
    """The in-process daemon's seams: the production parts.  A test module overrides this to wrap them."""
    return Seams()


@pytest.fixture
async def joined_daemon(tmp_path: Path, daemon_seams: Seams) -> AsyncIterator[InProcessDaemon]:
    """A real Daemon served in the test's trio loop, joined to LS on a fresh lease file (tests/inprocess.py)."""
    async with joined(tmp_path, daemon_seams) as serving:
        yield serving


def require_sanlock() -> str:
    if SANLOCK is None:
        pytest.skip("real sanlock not installed (apt-get install sanlock)")
    return SANLOCK


@pytest.fixture
def faults(tmp_path: Path) -> Iterator[FaultFS]:
    """A fault-injecting FUSE passthrough (tests/faultfs.py) mounted under tmp_path; skipped without FUSE."""
    if os.geteuid() != 0:
        pytest.skip("FUSE mounts need root")
    try:
        with fault_fs(tmp_path / "fs") as fs:
            yield fs
    except FaultFSUnavailable as exc:
        pytest.skip(f"fault filesystem unavailable: {exc}")


# --------------------------------------------------------------------------
# Test order and recorded durations (tests/scheduling.py says why)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help="rewrite tests/durations.json with this run's durations (used to start the longest tests first)",
    )


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    durations = load_durations()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = longest_first(
        items,
        lambda item: durations.get(item.nodeid, UNKNOWN_SECONDS),
        lambda item: item.nodeid.partition("::")[0],
        workers,
        lambda item: item.get_closest_marker("late") is not None,
    )


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sum setup, call and teardown per test (in xdist's controller the workers' reports arrive here)."""
    _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("store_durations") and not hasattr(session.config, "workerinput"):
        store_durations({**load_durations(), **_measured})
