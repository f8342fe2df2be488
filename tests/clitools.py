"""Running the real ``sanlock`` and our ``leased`` commands side by side in tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import require_sanlock

from leased.torture.local_daemons import leased_command

__all__ = ["leased_command"]  # re-exported: the tests import it from here


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(argv: list[str], timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def leased(*args: str, timeout: float = 120) -> Result:
    return run([*leased_command(), *args], timeout)


def leased_client(run_dir: Path, *args: str, timeout: float = 60) -> Result:
    """``leased client ARGS`` against the daemon of ``run_dir``."""
    env = {**os.environ, "SANLOCK_RUN_DIR": str(run_dir)}
    return run([*leased_command(), "client", *args], timeout, env)


def sanlock(*args: str, timeout: float = 120) -> Result:
    return run([require_sanlock(), *args], timeout)


def read_bytes(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)
