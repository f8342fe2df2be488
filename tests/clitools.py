"""Running the real ``sanlock`` and our ``leased`` commands side by side in tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import require_sanlock


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def leased_command() -> list[str]:
    script = Path(sys.executable).parent / "leased"
    return [str(script)] if script.exists() else [sys.executable, "-m", "leased.cli"]


def run(argv: list[str], timeout: float = 120) -> Result:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def leased(*args: str, timeout: float = 120) -> Result:
    return run([*leased_command(), *args], timeout)


def sanlock(*args: str, timeout: float = 120) -> Result:
    return run([require_sanlock(), *args], timeout)


def read_bytes(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)
