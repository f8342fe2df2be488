"""``leased client`` prints what ``sanlock client`` prints, against the same daemon.

Both CLIs are clients; pointed at one daemon (here leased's, with a
python3-sanlock process holding leases) the read-only actions must print the
same lines, and the state-changing ones sanlock's ``<action> done <rc>``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import Result, leased, sanlock
from daemons import Daemon, LeaseFile, init_lease_file_direct, start_daemon

from leased.torture.local_daemons import leased_daemon_argv

pytestmark = pytest.mark.sanlock

HOLDER = """
import sanlock, sys
fd = sanlock.register()
print("registered", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with start_daemon(
        leased_daemon_argv(),
        tmp_path / "run",
        stop_argv=["/usr/sbin/sanlock", "client", "shutdown", "-f", "1", "-w", "1"],
    ) as running:
        yield running


def both(daemon: Daemon, *args: str) -> tuple[Result, Result]:
    os.environ["SANLOCK_RUN_DIR"] = str(daemon.run_dir)
    try:
        return leased("client", *args), sanlock("client", *args)
    finally:
        del os.environ["SANLOCK_RUN_DIR"]


def one(daemon: Daemon, *args: str) -> Result:
    os.environ["SANLOCK_RUN_DIR"] = str(daemon.run_dir)
    try:
        return leased("client", *args)
    finally:
        del os.environ["SANLOCK_RUN_DIR"]


def test_client_actions_match_sanlock_cli(daemon: Daemon, tmp_path: Path) -> None:
    files: LeaseFile = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1", b"R2"], io_timeout=1)
    path = files.path
    ls = f"LS:1:{path}:0"
    r1, r2 = f"LS:R1:{path}:{files.offset(b'R1')}", f"LS:R2:{path}:{files.offset(b'R2')}"
    assert one(daemon, "add_lockspace", "-s", ls).stdout == "add_lockspace\nadd_lockspace done 0\n"
    again = one(daemon, "add_lockspace", "-s", ls)
    assert (again.returncode, again.stdout) == (1, "add_lockspace\nadd_lockspace done -17\n")
    assert again.stderr.startswith("leased: ") and "EEXIST" in again.stderr
    with subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLDER],
        env={**os.environ, "SANLOCK_RUN_DIR": str(daemon.run_dir)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "registered\n"
        pid = str(holder.pid)
        assert one(daemon, "acquire", "-r", r1, "-p", pid).stdout == f"acquire pid {pid}\nacquire done 0\n"
        assert one(daemon, "acquire", "-r", f"{r2}:SH", "-p", pid).returncode == 0
        for args in (
            ("inquire", "-p", pid),
            ("status",),
            ("status", "-o", "p"),
            ("status", "-o", "s"),
            ("gets", "-h", "1"),
            ("gets",),
            ("version",),
            ("host_status", "-s", ls),
            ("read", "-s", ls),
            ("read", "-r", r1),
            ("inq_lockspace", "-s", ls),
            ("inquire", "-p", "999999"),
        ):
            ours, theirs = both(daemon, *args)
            assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), args
        inquire = one(daemon, "inquire", "-p", pid).stdout
        assert f'"{r1}:1 {r2}:SH"' in inquire
        assert one(daemon, "convert", "-r", r2, "-p", pid).stdout == f"convert pid {pid}\nconvert done 0\n"
        assert one(daemon, "release", "-r", r1, "-p", pid).stdout == f"release pid {pid}\nrelease done 0\n"
        missing = one(daemon, "release", "-r", r1, "-p", pid)
        assert (missing.returncode, missing.stdout) == (1, f"release pid {pid}\nrelease done -1\n")
        holder.communicate("", timeout=10)
    assert one(daemon, "rem_lockspace", "-s", ls).stdout == "rem_lockspace\nrem_lockspace done 0\n"
    unknown = one(daemon, "frobnicate")
    assert (unknown.returncode, unknown.stdout) == (1, 'client action "frobnicate" is unknown\n')
