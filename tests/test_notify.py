"""sd_notify: leased speaks systemd's datagram protocol to a real socket set as $NOTIFY_SOCKET.

The test plays systemd: it binds a datagram socket, starts the real
``leased daemon`` with ``NOTIFY_SOCKET`` pointing at it, and reads what
arrives.  READY=1 must only come once the daemon answers on its socket,
STATUS= must follow registrations and lockspaces, and STOPPING=1 must come
on SIGTERM and on ``leased client shutdown``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemons import Daemon as RunningDaemon
from daemons import init_lease_file, stop_daemon, wait_for

from leased.client import Client
from leased.notify import Notifier, socket_address

LEASED = str(Path(sys.executable).parent / "leased")
DEADLINE = 30.0


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self, timeout: float = DEADLINE) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    def receive_until(self, key: str, value: str, timeout: float = DEADLINE) -> list[dict[str, str]]:
        """Every message up to and including the first with ``key=value``."""
        seen = []
        while True:
            message = self.receive(timeout)
            seen.append(message)
            if message.get(key) == value:
                return seen


@contextmanager
def fake_systemd(tmp_path: Path, *, abstract: bool = False) -> Iterator[FakeSystemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if abstract:
            name = f"leased-test-notify-{os.getpid()}-{id(sock)}"
            sock.bind(b"\0" + name.encode())
            yield FakeSystemd(sock, "@" + name)
        else:
            path = tmp_path / "notify.sock"
            sock.bind(str(path))
            yield FakeSystemd(sock, str(path))
    finally:
        sock.close()


@contextmanager
def notified_daemon(tmp_path: Path, systemd: FakeSystemd) -> Iterator[RunningDaemon]:
    """A real leased daemon told to notify ``systemd``; stopped (SIGKILL at worst) on exit."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEASED_")}
    env |= {"SANLOCK_RUN_DIR": str(run_dir), "NOTIFY_SOCKET": systemd.env_value}
    argv = [LEASED, "daemon", "-D", "-w", "0", "-U", "root", "-G", "root", "--logfile", str(tmp_path / "leased.log")]
    argv += ["--watchdog-fire-timeout", "5"]
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    daemon = RunningDaemon(argv, run_dir, log_path, env, process)
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


def answers(daemon: RunningDaemon) -> bool:
    try:
        daemon.client(timeout=5).version()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_only_once_the_socket_answers_then_stopping_on_sigterm(tmp_path: Path, abstract: bool) -> None:
    with fake_systemd(tmp_path, abstract=abstract) as systemd, notified_daemon(tmp_path, systemd) as daemon:
        first = systemd.receive()
        assert first.get("READY") == "1", first
        assert first.get("STATUS") == "serving 0 lockspaces, 0 clients"
        # No retry: at the moment READY=1 arrives the socket must already take and answer a request.
        assert Path(daemon.socket_path).exists()
        assert answers(daemon)
        daemon.process.send_signal(signal.SIGTERM)
        messages = systemd.receive_until("STOPPING", "1")
        assert messages[-1].get("STATUS") == "shutting down"
        assert daemon.process.wait(timeout=DEADLINE) == 0


def test_status_follows_clients_and_lockspaces_and_shutdown_says_stopping(tmp_path: Path) -> None:
    with fake_systemd(tmp_path) as systemd, notified_daemon(tmp_path, systemd) as daemon:
        assert systemd.receive().get("READY") == "1"
        client: Client = daemon.client()
        with client.register():
            systemd.receive_until("STATUS", "serving 0 lockspaces, 1 clients")
            lease_file = init_lease_file(client, tmp_path / "leases", b"LS", [b"R1"])
            client.add_lockspace(b"LS", 1, lease_file.path, 0)
            systemd.receive_until("STATUS", "serving 1 lockspaces, 1 clients")
        systemd.receive_until("STATUS", "serving 1 lockspaces, 0 clients")
        # SIGTERM with a joined lockspace is refused (as sanlock): the daemon keeps serving, says nothing.
        daemon.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "ignore shutdown, lockspace exists" in daemon.log(), DEADLINE, "SIGTERM refused")
        assert answers(daemon)
        shutdown = subprocess.run(
            [LEASED, "client", "shutdown", "-f", "1"],
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert shutdown.returncode == 0, shutdown.stderr
        messages = systemd.receive_until("STOPPING", "1")
        assert all(m.get("READY") is None for m in messages)
        assert daemon.process.wait(timeout=DEADLINE) == 0


def test_notifier_without_notify_socket_sends_nothing(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    notifier.ready("x")  # no socket, no error
    notifier.close()


def test_notifier_sends_one_datagram_and_skips_repeated_status(tmp_path: Path) -> None:
    with fake_systemd(tmp_path) as systemd:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": systemd.env_value})
        try:
            notifier.ready("serving 0 lockspaces, 0 clients")
            notifier.status("serving 0 lockspaces, 0 clients")  # unchanged: not sent
            notifier.status("serving 1 lockspaces, 0 clients")
            notifier.stopping()
        finally:
            notifier.close()
        assert systemd.receive() == {"READY": "1", "STATUS": "serving 0 lockspaces, 0 clients"}
        assert systemd.receive() == {"STATUS": "serving 1 lockspaces, 0 clients"}
        assert systemd.receive() == {"STOPPING": "1", "STATUS": "shutting down"}


def test_notifier_survives_a_vanished_systemd(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """systemd's socket gone: the send fails, is logged, and the caller goes on."""
    notifier = Notifier(str(tmp_path / "gone.sock"))
    notifier.ready("x")
    notifier.stopping()
    notifier.close()
    assert caplog.text.count("sd_notify") == 2


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == b"\0abstract"
    assert socket_address("") is None
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
