"""Where the real daemon's log lines go: log file, syslog, journal, log_dump, and -Q.

Each test starts the real ``leased daemon`` and makes it log at known
priorities: a refused ``add_lockspace`` (err), the ``use_watchdog 0`` notice
(warning), the start line (info), a registered client going away (debug).
Lines are looked for after the call that logs them has returned (the sinks
write synchronously), or after ``log_dump`` shows them; never after a sleep.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemons import Daemon, init_lease_file, start_daemon, stop_daemon, wait_for

from leased.client import Client, SanlockError

LEASED = str(Path(sys.executable).parent / "leased")
DEADLINE = 30.0

ERR_LINE = "empty name, host_id 0 or empty path"  # add_lockspace refused: logged at err
WARNING_LINE = "use_watchdog 0: no watchdog"  # -w 0: logged at warning
INFO_LINE = "leased daemon started"
DEBUG_LINE = "client_pid_dead"  # a registered connection closed


def base_env() -> dict[str, str]:
    drop = ("NOTIFY_SOCKET", "JOURNAL_STREAM")
    return {k: v for k, v in os.environ.items() if not k.startswith("LEASED_") and k not in drop}


@contextmanager
def daemon_with(tmp_path: Path, *args: str) -> Iterator[Daemon]:
    argv = [LEASED, "daemon", "-w", "0", "-U", "root", "-G", "root", *args]
    with start_daemon(argv, tmp_path / "run", env=base_env(), log_path=tmp_path / "stderr.log") as daemon:
        yield daemon


def log_err(client: Client) -> None:
    with pytest.raises(SanlockError):
        client.add_lockspace(b"LS", 0, "/nonexistent", 0)


def log_debug(daemon: Daemon) -> None:
    """Register and close a connection; return once the daemon has logged it (seen through log_dump)."""
    client = daemon.client()
    client.register().close()
    wait_for(lambda: DEBUG_LINE in client.log_dump(), DEADLINE, "the daemon saw the registration close")


@pytest.mark.parametrize(
    ("priority", "expected", "absent"),
    [
        ("3", [ERR_LINE], [WARNING_LINE, INFO_LINE, DEBUG_LINE]),
        ("4", [ERR_LINE, WARNING_LINE], [INFO_LINE, DEBUG_LINE]),
        ("6", [ERR_LINE, WARNING_LINE, INFO_LINE], [DEBUG_LINE]),
        ("7", [ERR_LINE, WARNING_LINE, INFO_LINE, DEBUG_LINE], []),
    ],
)
def test_log_file_gets_its_priority_and_more_urgent_only(
    tmp_path: Path, priority: str, expected: Sequence[str], absent: Sequence[str]
) -> None:
    logfile = tmp_path / "leased.log"
    with daemon_with(tmp_path, "--logfile", str(logfile), "-L", priority) as daemon:
        log_err(daemon.client())
        log_debug(daemon)
        text = logfile.read_text()
    for line in expected:
        assert line in text, (line, text)
    for line in absent:
        assert line not in text, (line, text)


def test_log_file_off_and_config_file_priority(tmp_path: Path) -> None:
    """-L -1 writes no file; logfile and logfile_priority also come from leased.conf."""
    off = tmp_path / "off.log"
    with daemon_with(tmp_path / "a", "--logfile", str(off), "-L", "-1") as daemon:
        log_err(daemon.client())
    assert not off.exists()
    conf = tmp_path / "leased.conf"
    from_conf = tmp_path / "conf.log"
    conf.write_text(f"logfile = {from_conf}\nlogfile_priority = 3\n")
    with daemon_with(tmp_path / "b", "--config", str(conf)) as daemon:
        log_err(daemon.client())
    text = from_conf.read_text()
    assert ERR_LINE in text
    assert WARNING_LINE not in text


def test_unwritable_explicit_log_file_stops_the_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [LEASED, "daemon", "--logfile", str(tmp_path / "no" / "such" / "dir.log")],
        env=base_env() | {"SANLOCK_RUN_DIR": str(tmp_path / "run")},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"leased: cannot open log file {tmp_path / 'no' / 'such' / 'dir.log'}: No such file or directory\n"
    )
    assert not (tmp_path / "run" / "sanlock.sock").exists()


def contend(daemon: Daemon, tmp_path: Path) -> None:
    """Two registrations of this process: the second acquire of R1 is refused as a local conflict."""
    client = daemon.client()
    lease_file = init_lease_file(client, tmp_path / "leases", b"LS", [b"R1"])
    client.add_lockspace(b"LS", 1, lease_file.path, 0)
    with client.register() as first, client.register() as second:
        first.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        with pytest.raises(SanlockError) as refused:
            second.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        assert refused.value.rc == -17  # EEXIST
    client.rem_lockspace(b"LS", 1, lease_file.path, 0)


@pytest.mark.parametrize("quiet", ["0", "1"])
def test_quiet_fail_moves_contention_to_debug(tmp_path: Path, quiet: str) -> None:
    logfile = tmp_path / "leased.log"
    with daemon_with(tmp_path, "--logfile", str(logfile), "-L", "3", "-Q", quiet, "-w", "0") as daemon:
        contend(daemon, tmp_path)
        dump = daemon.client().log_dump()
    text = logfile.read_text()
    assert "local conflict" in dump  # always in the in-memory ring (it keeps debug)
    if quiet == "1":
        assert "local conflict" not in text
    else:
        assert "R1 is busy here (local conflict) (-17 EEXIST)" in text


def test_log_dump_returns_recent_lines_through_the_cli(tmp_path: Path) -> None:
    with daemon_with(tmp_path, "-L", "-1") as daemon:
        log_err(daemon.client())
        log_debug(daemon)
        result = subprocess.run(
            [LEASED, "client", "log_dump"],
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(INFO_LINE in line for line in lines)
    assert any(ERR_LINE in line for line in lines)
    assert any(DEBUG_LINE in line for line in lines)  # the ring keeps what no sink was set to show
    first_err = next(i for i, line in enumerate(lines) if ERR_LINE in line)
    last_debug = max(i for i, line in enumerate(lines) if DEBUG_LINE in line)
    assert first_err < last_debug  # in the order they happened


def answers(client: Client) -> bool:
    try:
        client.version()
    except (SanlockError, OSError):
        return False
    return True


@contextmanager
def datagram_listener(path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.settimeout(DEADLINE)
        yield sock
    finally:
        sock.close()


def test_syslog_gets_its_priority_and_more_urgent_only(tmp_path: Path) -> None:
    args = ("--syslog-socket", str(tmp_path / "log.sock"), "-S", "4", "-L", "-1")
    with datagram_listener(tmp_path / "log.sock") as syslog, daemon_with(tmp_path, *args) as daemon:
        log_err(daemon.client())
        received: list[str] = []
        while not any(ERR_LINE in line for line in received):
            received.append(syslog.recv(65536).decode())
    # LOG_DAEMON (3) * 8 + priority: warning is <28>, err is <27>; info (<30>) must not come.
    assert any(line.startswith("<28>leased: ") and WARNING_LINE in line for line in received), received
    assert received[-1].startswith("<27>leased: ")
    assert not any(line.startswith("<30>") for line in received), received


def test_stderr_is_the_journal_under_systemd(tmp_path: Path) -> None:
    """With JOURNAL_STREAM naming stderr, lines go there with <N> prefixes at syslog_priority, not to syslog."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    info = os.fstat(theirs.fileno())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = base_env() | {"SANLOCK_RUN_DIR": str(run_dir), "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    argv = [LEASED, "daemon", "-w", "0", "-U", "root", "-G", "root", "-L", "-1", "-S", "4"]
    argv += ["--syslog-socket", str(tmp_path / "log.sock")]
    with datagram_listener(tmp_path / "log.sock") as syslog:
        try:
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=theirs.fileno(), stderr=theirs.fileno()
            )
        finally:
            theirs.close()
        daemon = Daemon(argv, run_dir, tmp_path / "none.log", env, process)
        try:
            client = daemon.client()
            wait_for(lambda: answers(client), DEADLINE, "daemon answers")
            log_err(client)
            log_err(client)
            ours.settimeout(DEADLINE)
            text = ""
            while text.count(ERR_LINE) < 2:
                text += ours.recv(65536).decode()
        finally:
            stop_daemon(daemon)
            ours.close()
        syslog.setblocking(False)
        with pytest.raises(BlockingIOError):
            syslog.recv(65536)  # both errors were logged to the journal only, not to syslog as well
    lines = text.splitlines()
    assert any(line.startswith("<4>") and WARNING_LINE in line for line in lines), lines
    assert any(line.startswith("<3>leased.commands: ") and ERR_LINE in line for line in lines), lines
    assert not any(INFO_LINE in line for line in lines)
