"""``python -m build`` makes a wheel that installs a working ``leased`` command.

The sources are copied to a temporary directory first, so building never
writes ``build/`` or ``*.egg-info`` into the checkout while other tests run.
The wheel goes into a fresh virtualenv (pip may fetch trio, construct and
crc32c from the package index) and its ``leased`` script must answer
``--help``, ``direct --help`` and a real ``direct init`` + ``read_leader``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str | Path], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_the_leased_command(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="the 'build' package is in the test extras: pip install -e '.[test]'")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "leased", source / "leased", ignore=shutil.ignore_patterns("__pycache__"))

    run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", source])
    (wheel,) = (tmp_path / "dist").glob("leased-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel])
    script = venv / "bin" / "leased"
    assert script.exists()

    top = run([script, "--help"])
    assert "leased direct" in top.stdout and "leased client" in top.stdout
    assert "--json" in run([script, "client", "--help"]).stdout
    # The installed package is complete: a real lockspace written and listed by the installed script.
    lease_file = tmp_path / "leases"
    with lease_file.open("wb") as f:
        f.truncate(1 << 20)
    assert run([script, "direct", "init", "-s", f"LS:0:{lease_file}:0"]).stdout == "init done 0\n"
    assert "space_name LS\n" in run([script, "direct", "read_leader", "-s", f"LS:1:{lease_file}:0"]).stdout
    assert run([venv / "bin" / "python", "-c", "import leased.client, leased.metrics, leased.cluster"]).returncode == 0
