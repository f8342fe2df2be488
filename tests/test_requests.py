"""Forced requests across implementations: a leased host makes a sanlock host give a lease up, and back.

Host 1 runs leased, host 2 real sanlock 3.8.5, on one lockspace.  A real
process (python3-sanlock) holds R1 through one host; the other host asks for
it with a FORCE request for the next lease version.  The holder's daemon
sees its bit in the requester's delta-lease bitmap at a renewal, reads the
request record, SIGKILLs the holder, and releases the lease, which the
requesting side can then acquire.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemon, LeaseFile, init_lease_file_direct, wait_for
from leased_daemons import leased_and_sanlock

from leased.client import SanlockError
from leased.errors import ResultCode

pytestmark = pytest.mark.sanlock

HOLDER = """
import sanlock, sys
fd = sanlock.register()
sanlock.acquire(b"LS", b"R1", [(sys.argv[1], 1048576)], slkfd=fd)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[LeaseFile, dict[str, Daemon]]]:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1"], io_timeout=1)
    with leased_and_sanlock(tmp_path, lease_file) as daemons:
        yield lease_file, daemons


def acquired(daemon: Daemon, lease_file: LeaseFile) -> bool:
    with daemon.client().register() as reg:
        try:
            reg.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        except SanlockError as exc:
            assert exc.rc in (ResultCode.ACQUIRE_IDLIVE, ResultCode.ACQUIRE_OWNED, ResultCode.ACQUIRE_OTHER), exc
            return False
        reg.release(b"LS", b"R1")
        return True


@pytest.mark.parametrize(("holder_side", "requester_side"), [("sanlock", "leased"), ("leased", "sanlock")])
def test_forced_request_makes_the_other_implementation_give_up(
    hosts: tuple[LeaseFile, dict[str, Daemon]], holder_side: str, requester_side: str
) -> None:
    lease_file, daemons = hosts
    holder_daemon, requester = daemons[holder_side], daemons[requester_side]
    with subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLDER, str(lease_file.path)],
        env={**os.environ, "SANLOCK_RUN_DIR": str(holder_daemon.run_dir)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            assert not acquired(requester, lease_file), "the holder is live: the requester is refused"
            requester.client().request(b"LS", b"R1", lease_file.disks(b"R1"), 1)  # FORCE, next lver
            assert holder.wait(timeout=30) == -signal.SIGKILL, "the holder's daemon must SIGKILL it"
        finally:
            if holder.poll() is None:
                holder.kill()
    wait_for(lambda: acquired(requester, lease_file), 30, "lease acquired by the requesting host")
