"""The daemon as an operator and a client see it: socket, single instance, signals, peer credentials."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from daemons import LeaseFile, init_lease_file_direct, leased_shutdown_argv, start_daemon, wait_for

from leased.client import SanlockError
from leased.errors import ResultCode
from leased.torture.local_daemons import leased_command

NOBODY = 65534


def argv(*extra: str) -> list[str]:
    return [*leased_command(), "daemon", "-D", "-L", "-1", "-w", "0", "-e", "test-host", *extra]


def test_socket_mode_owner_and_single_instance(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown of the socket needs root")
    run_dir = tmp_path / "run"
    with start_daemon(argv("-U", "0", "-G", str(NOBODY)), run_dir) as daemon:
        info = os.stat(daemon.socket_path)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (0, NOBODY)
        assert (run_dir / "sanlock.pid").read_text().strip() == str(daemon.process.pid)
        second = subprocess.run(
            argv(), env={**os.environ, "SANLOCK_RUN_DIR": str(run_dir)}, capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith("leased: another daemon is running")
        assert "Traceback" not in second.stderr
        assert daemon.client().version().version == "3.8.5", "the first daemon is untouched"


LISTEN_FIRST_PROBE = """
import sys
from leased.cli import main
rc = main(sys.argv[1:])
print(rc, sorted(m for m in sys.modules if m == "trio" or m.startswith(("leased.daemon", "leased.state"))))
"""


def test_the_run_dir_is_claimed_before_the_daemon_loads(tmp_path: Path) -> None:
    """Listen first: the pid lock and the socket come before trio and the lease code are imported.

    A second daemon on a claimed run directory is refused by the claim
    itself, so it never loads them; and a daemon whose start fails after
    the claim (an unwritable log file) leaves neither socket nor lock behind.
    """
    run_dir = tmp_path / "run"
    env = {**os.environ, "SANLOCK_RUN_DIR": str(run_dir)}
    with start_daemon(argv(), run_dir) as daemon:
        second = subprocess.run(
            [sys.executable, "-c", LISTEN_FIRST_PROBE, *argv()[len(leased_command()) :]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.stderr.strip().startswith("leased: another daemon is running"), second.stderr
        assert second.stdout.splitlines()[-1] == "1 []"
        assert daemon.client().version().version == "3.8.5"
    unwritable = str(tmp_path / "no" / "such" / "dir.log")  # with -L -1 no log file would be opened at all
    failed = subprocess.run(
        [*leased_command(), "daemon", "-D", "-w", "0", "--logfile", unwritable],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert not (run_dir / "sanlock.sock").exists()
    with start_daemon(argv(), run_dir) as again:  # the lock was let go: the next daemon starts
        assert again.client().version().version == "3.8.5"


def test_bad_option_is_one_line(tmp_path: Path) -> None:
    bad = subprocess.run(
        argv("-o", "999"), env={**os.environ, "SANLOCK_RUN_DIR": str(tmp_path)}, capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "io_timeout" in bad.stderr


def test_sigterm_stops_an_idle_daemon_but_not_one_guarding_a_lockspace(tmp_path: Path) -> None:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1"], io_timeout=1)
    with start_daemon(argv(), tmp_path / "busy") as busy:
        busy.client().add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
        busy.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "ignore shutdown, lockspace exists" in busy.log(), 10, "SIGTERM refusal logged")
        assert busy.alive()
        assert busy.client().inq_lockspace(b"LS", 1, lease_file.path, 0) is True
        busy.client().shutdown(force=True, wait=True)
        assert busy.process.wait(timeout=15) == 0
    with start_daemon(argv(), tmp_path / "idle") as idle:
        idle.process.send_signal(signal.SIGTERM)
        assert idle.process.wait(timeout=15) == 0
        assert not Path(idle.socket_path).exists()


# Debian's python3 with only the standard library: nobody cannot read root's virtualenv.
CROSS_UID = """
import socket, struct, sys
path, pid = sys.argv[1] + "/sanlock.sock", int(sys.argv[2])
for cmd, flags in ((9, 0), (8, 1)):  # INQUIRE, RELEASE with REL_ALL, on behalf of pid
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(struct.pack("<8I", 0x04282010, 1, cmd, flags, 32, 0, 0, pid))
    reply = s.recv(32, socket.MSG_WAITALL)
    print(struct.unpack("<8i", reply)[6])
    s.close()
"""


def test_another_uid_cannot_touch_our_leases(tmp_path: Path) -> None:
    """Peer credentials: a client may act only on its own uid's registered processes (root may act on any)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1"], io_timeout=1)
    # pytest's tmp_path lives under a 0700 directory; nobody needs a path it can traverse
    open_dir = Path(tempfile.mkdtemp(prefix="leased-peercred-"))
    os.chmod(open_dir, 0o755)
    try:
        _cross_uid(lease_file, open_dir)
    finally:
        shutil.rmtree(open_dir, ignore_errors=True)


def _cross_uid(lease_file: LeaseFile, open_dir: Path) -> None:
    with start_daemon(argv("-U", "0", "-G", str(NOBODY)), open_dir / "run", stop_argv=leased_shutdown_argv()) as daemon:
        os.chmod(daemon.run_dir, 0o755)
        client = daemon.client()
        client.add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
        with client.register() as reg:
            reg.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
            other = subprocess.run(
                ["/usr/bin/python3", "-c", CROSS_UID, str(daemon.run_dir), str(os.getpid())],
                user=NOBODY,
                group=NOBODY,
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/",
            )
            assert other.returncode == 0, other.stderr
            assert other.stdout.split() == [str(ResultCode.EPERM)] * 2
            assert [lease.resource for lease in reg.inquire()] == [b"R1"]
            # root may act for any process: the CLI's `client inquire -p PID` as root works
            assert [lease.resource for lease in client.inquire(pid=os.getpid())] == [b"R1"]

        def unregistered() -> bool:
            try:
                client.inquire(pid=os.getpid())
            except SanlockError as exc:
                assert exc.rc == ResultCode.ESRCH, exc
                return True
            return False  # the daemon has not seen the close yet

        wait_for(unregistered, 10, "closing the registration unregistered us")
        assert "uid 65534 may not act for pid" in daemon.log()
