"""Shared fixtures: real lease files on disk, opened the way hosts open them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from leased.storage import FileStorage
from leased.torture.faultfs import FaultFS, FaultFSUnavailable, fault_fs

MiB = 1 << 20

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
