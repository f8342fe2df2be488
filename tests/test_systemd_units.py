"""The shipped systemd unit and drop-in example pass ``systemd-analyze verify``.

verify refuses a unit whose ``ExecStart`` binary does not exist, and on a
development machine ``/usr/bin/leased`` does not: the unit is verified as a
copy whose ``ExecStart`` points at this virtualenv's ``leased`` (the only
change).  The example drop-in is all comments; its commented directives are
uncommented in the copy so that each one is checked too.  verify reports bad
keys and values as warnings with exit status 0, so the test also requires
that it said nothing about our files, and checks on a deliberately broken
copy that such warnings are seen.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "leased.service"
EXAMPLE = SYSTEMD_DIR / "leased.service.d" / "example.conf"
LEASED = Path(sys.executable).parent / "leased"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(found).exists():
        pytest.skip("systemd-analyze not installed (scripts/setup installs the Debian package systemd as root)")
    return found


def unit_copy(tmp_path: Path, extra_drop_in: str | None = None) -> Path:
    """The unit with ExecStart on the venv's leased, and the example drop-in with its directives enabled."""
    directory = tmp_path / "units"
    (directory / "leased.service.d").mkdir(parents=True)
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/leased daemon" in text
    (directory / "leased.service").write_text(text.replace("/usr/bin/leased", str(LEASED)))
    example = EXAMPLE.read_text().replace("/usr/bin/leased", str(LEASED))
    enabled = re.sub(r"^#(?=[A-Z][A-Za-z]*=)", "", example, flags=re.MULTILINE)
    (directory / "leased.service.d" / "example.conf").write_text(enabled)
    if extra_drop_in is not None:
        (directory / "leased.service.d" / "zz-extra.conf").write_text(extra_drop_in)
    return directory / "leased.service"


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        cwd=unit.parent,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def complaints(result: subprocess.CompletedProcess[str], directory: Path) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "leased" in line or str(directory) in line]


def test_unit_and_example_drop_in_verify_clean(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    result = verify(unit)
    assert result.returncode == 0, result.stderr
    assert complaints(result, unit.parent) == []


def test_verify_does_see_a_bad_drop_in(tmp_path: Path) -> None:
    """The control for the test above: a bad directive in a drop-in next to the copy is reported."""
    unit = unit_copy(tmp_path, "[Service]\nRestart=sometimes\n")
    result = verify(unit)
    assert any("zz-extra.conf" in line for line in complaints(result, unit.parent)), result.stderr


def test_unit_keeps_the_properties_a_lease_daemon_needs() -> None:
    """What docs/operating.md promises operators: notify readiness, sanlock's run dir, never SIGKILLed, restarted."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["RuntimeDirectory"] == ["sanlock"]
    assert settings["SendSIGKILL"] == ["no"]
    assert settings["Conflicts"] == ["sanlock.service"]
    assert settings["Restart"] == ["on-failure"]
    assert "-D" not in settings["ExecStart"][0].split()  # no stderr flood into the journal: -S decides
