"""A registered client process that dies holding leases: its leases are released on disk, promptly."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from daemons import LeaseFile, init_lease_file_direct, wait_for
from leased_daemons import leased_daemon

from leased import paxos_lease
from leased.storage import FileStorage

PYTHON3_SANLOCK = "/usr/bin/python3"

HOLDER = """
import sanlock, sys
fd = sanlock.register()
for name, offset, shared in ((b"R1", 1048576, False), (b"R2", 2097152, True)):
    sanlock.acquire(b"LS", name, [(sys.argv[1], offset)], slkfd=fd, shared=shared)
print("holding", flush=True)
sys.stdin.read()
"""


def have_python3_sanlock() -> bool:
    if not os.path.exists(PYTHON3_SANLOCK):
        return False
    probe = subprocess.run([PYTHON3_SANLOCK, "-c", "import sanlock"], capture_output=True, check=False)
    return probe.returncode == 0


def leader_timestamp(lease_file: LeaseFile, name: bytes) -> int:
    async def read() -> int:
        storage = FileStorage(str(lease_file.path))
        try:
            area = await paxos_lease.discover_resource(storage, lease_file.offset(name), "LS", name, 1)
            return (await paxos_lease.read_leader(area, 0, 1)).timestamp
        finally:
            storage.close()

    return trio.run(read)


def test_sigkilled_holder_releases_its_leases_on_disk(tmp_path: Path) -> None:
    if not have_python3_sanlock():
        pytest.skip("python3-sanlock (Debian's /usr/bin/python3) not installed")
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1", b"R2"], io_timeout=1)
    with leased_daemon(tmp_path, "leased") as daemon:
        client = daemon.client()
        client.add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
        with subprocess.Popen(
            [PYTHON3_SANLOCK, "-c", HOLDER, str(lease_file.path)],
            env={**os.environ, "SANLOCK_RUN_DIR": str(daemon.run_dir)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
                assert {lease.resource for lease in client.inquire(pid=holder.pid)} == {b"R1", b"R2"}
                assert leader_timestamp(lease_file, b"R1") != 0
                holder.send_signal(signal.SIGKILL)
                holder.wait(timeout=10)
            finally:
                if holder.poll() is None:
                    holder.kill()
        # promptly: the daemon sees the registered connection close and releases at once
        wait_for(lambda: leader_timestamp(lease_file, b"R1") == 0, 5, "R1 released on disk")
        owners = client.read_resource_owners(b"LS", b"R2", lease_file.disks(b"R2"))[1]
        assert owners == [], "the shared hold must be gone too"
        with client.register() as reg:
            assert reg.acquire(b"LS", b"R1", lease_file.disks(b"R1")).lver == 2
