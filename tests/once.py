"""Expensive set-up done once per test run, however many xdist workers need it.

A module-scoped fixture runs once per worker that takes one of the module's
tests: four tests reading one 90 s torture run would run it four times in
parallel.  :func:`once_per_run` makes the first worker to ask do the work
in a directory under the run's base temporary directory (which every worker
shares); the others wait on a lock for it and reuse the directory.  A failed
attempt is recorded, so the others fail with its reason instead of repeating it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``make(workdir)`` on the first call of this run; every call returns ``workdir`` once it is made."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's base is <run's base>/popen-gwN
    workdir = root / name
    done, failed = root / f"{name}.done", root / f"{name}.failed"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return workdir
        if failed.exists():
            pytest.fail(f"{name}: the run's one attempt failed: {failed.read_text()}")
        workdir.mkdir()
        try:
            make(workdir)
        except BaseException as exc:
            failed.write_text(f"{type(exc).__name__}: {exc}"[:20000])
            raise
        done.touch()
    return workdir
