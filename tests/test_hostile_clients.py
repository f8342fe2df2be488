"""Hostile and broken clients against a real leased daemon process: it lives, and the victim keeps its lease.

Each test here is one finding of the hardening issue: a message or a peer
that used to end the daemon (whose shutdown then released every registered
client's leases on disk while those clients still ran), or that leaked a
slot for good.  Every test sends real bytes over the daemon's real socket
and then checks the victim: a registered connection of this test process
holding R1 exclusively, seen held by its own inquire and on disk.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from daemons import Daemon, LeaseFile, init_lease_file, leased_shutdown_argv, start_daemon, wait_for

from leased import paxos_lease
from leased.client import Registration, SanlockError
from leased.errors import ResultCode
from leased.protocol import (
    HEADER_SIZE,
    LOCKSPACE_SIZE,
    REL_ALL,
    REL_ORPHAN,
    TARGET_SELF,
    Cmd,
    Disk,
    Header,
    HostEvent,
    Lockspace,
    Resource,
    StateType,
)
from leased.storage import FileStorage
from leased.torture.harness import release_retrying
from leased.torture.local_daemons import leased_daemon_argv

pytestmark = pytest.mark.slow


@dataclass
class Victim:
    daemon: Daemon
    lease_file: LeaseFile
    registration: Registration

    def check(self) -> None:
        """The daemon answers, and the victim's R1 is held: by its own inquire and on disk."""
        assert self.daemon.alive(), self.daemon.log()[-3000:]
        assert [lease.resource for lease in self.registration.inquire()] == [b"R1"]
        assert leader_owner(self.lease_file, b"R1") == 1


def leader_owner(lease_file: LeaseFile, name: bytes) -> int:
    """The host id owning ``name`` on disk (0 when free)."""

    async def read() -> int:
        storage = FileStorage(str(lease_file.path))
        try:
            area = await paxos_lease.discover_resource(storage, lease_file.offset(name), "LS", name, 1)
            leader = await paxos_lease.read_leader(area, 0, 1)
            return leader.owner_id if leader.timestamp else 0
        finally:
            storage.close()

    return trio.run(read)


def argv(*extra: str) -> list[str]:
    return [*leased_daemon_argv("hostile-host", watchdog_fire_timeout=5), *extra]


def joined_daemon(stack: ExitStack, tmp: Path, name: str, *extra: str, prefix: tuple[str, ...] = ()) -> Victim:
    daemon = stack.enter_context(
        start_daemon([*prefix, *argv(*extra)], tmp / name / "run", stop_argv=leased_shutdown_argv())
    )
    lease_file = init_lease_file(daemon.client(), tmp / name / "leases", b"LS", [b"R1", b"R2", b"R3"])
    daemon.client().add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
    registration = daemon.client().register()
    stack.callback(registration.close)
    registration.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
    return Victim(daemon, lease_file, registration)


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    with ExitStack() as stack:
        yield joined_daemon(stack, tmp_path_factory.mktemp("hostile"), "shared", "-H", "0")


def raw_connection(daemon: Daemon) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(daemon.socket_path)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def call(daemon: Daemon, header: Header, body: bytes = b"") -> tuple[Header, bytes]:
    """One request on a fresh connection; the reply header and whatever followed it until EOF."""
    with raw_connection(daemon) as sock:
        sock.sendall(header.encode() + body)
        reply = Header.decode(recv_exactly(sock, HEADER_SIZE))
        rest = b""
        if header.cmd in (Cmd.STATUS, Cmd.RENEWAL):
            while chunk := sock.recv(65536):
                rest += chunk
        return reply, rest


def lockspace_body(path: str | Path, offset: int = 0, name: bytes = b"LS", host_id: int = 1) -> bytes:
    return Lockspace(name, host_id, 0, Disk(str(path), offset)).encode()


REFUSED_HEADERS = {
    "acquire of no resources": Header(Cmd.ACQUIRE, data=0, data2=TARGET_SELF),
    "acquire of nine resources": Header(Cmd.ACQUIRE, data=9, data2=TARGET_SELF, length=HEADER_SIZE + 9 * 128),
    "release of no resources": Header(Cmd.RELEASE, data=0, data2=TARGET_SELF),
    "set_lvb shorter than a resource": Header(Cmd.SET_LVB, length=HEADER_SIZE + 100),
}


@pytest.mark.parametrize("case", sorted(REFUSED_HEADERS))
def test_finding_1_a_refused_header_then_close(victim: Victim, case: str) -> None:
    """The reply to a refused header goes into a closed socket: that ends this connection, nothing else."""
    for _ in range(20):
        with raw_connection(victim.daemon) as sock:
            sock.sendall(REFUSED_HEADERS[case].encode())
    zero_disks = Resource(b"LS", b"R9").encode()  # num_disks 0
    for _ in range(20):
        with raw_connection(victim.daemon) as sock:
            sock.sendall(Header(Cmd.ACQUIRE, data=1, data2=TARGET_SELF).encode() + zero_disks)
    victim.check()


def test_finding_2_offsets_past_2_63_are_einval(victim: Victim) -> None:
    for cmd in (Cmd.ADD_LOCKSPACE, Cmd.READ_LOCKSPACE, Cmd.WRITE_LOCKSPACE):
        body = lockspace_body(victim.lease_file.path, 2**63, name=b"BIG", host_id=2)
        reply, _ = call(victim.daemon, Header(cmd, length=HEADER_SIZE + len(body)), body)
        assert reply.result == ResultCode.EINVAL, cmd
    resource = Resource(b"LS", b"R1", disks=(Disk(str(victim.lease_file.path), 2**64 - 512),)).encode()
    reply, _ = call(victim.daemon, Header(Cmd.READ_RESOURCE, length=HEADER_SIZE + len(resource)), resource)
    assert reply.result == ResultCode.EINVAL
    victim.check()


def test_finding_6_a_path_without_nul_is_refused_and_status_keeps_working(victim: Victim) -> None:
    body = bytearray(lockspace_body("", name=b"NONUL", host_id=2))
    body[64 : 64 + 1024] = b"p" * 1024
    header = Header(Cmd.ADD_LOCKSPACE, cmd_flags=1, length=HEADER_SIZE + LOCKSPACE_SIZE)  # ADD_ASYNC
    reply, _ = call(victim.daemon, header, bytes(body))
    assert reply.result == ResultCode.ENAMETOOLONG
    status, records = call(victim.daemon, Header(Cmd.STATUS, data=0))
    assert status.result == 0 and b"NONUL" not in records and b"R1" in records
    victim.check()


def test_write_lockspace_with_an_io_timeout_past_16_bits_is_einval(victim: Victim, tmp_path: Path) -> None:
    """Found by the fuzzer: the leader's io_timeout is 16 bits, data2 is 32; it answered -1 (internal error)."""
    path = tmp_path / "other-leases"
    path.write_bytes(b"\0" * 1024 * 1024)
    body = lockspace_body(path, name=b"WIDE")
    reply, _ = call(victim.daemon, Header(Cmd.WRITE_LOCKSPACE, length=HEADER_SIZE + len(body), data2=70000), body)
    assert reply.result == ResultCode.EINVAL
    assert "internal error" not in victim.daemon.log()
    victim.check()


def lockspace_records(victim: Victim) -> list[bytes]:
    """The lockspaces STATUS lists, whatever their state (failed ones are listed too)."""
    records = victim.daemon.client().status()
    return sorted(r.lockspace.name for r in records if r.type is StateType.LOCKSPACE and r.lockspace is not None)


def test_failed_async_adds_leave_no_record(victim: Victim, tmp_path: Path) -> None:
    """Found by the fuzzer: each failed ADD_ASYNC stayed in the lockspace list (and STATUS) for good."""
    before = lockspace_records(victim)
    assert b"LS" in before
    for host_id, name in ((2001, b"BADHOST"), (1, b"NOTHERE")):  # host id out of range; nothing written there
        body = lockspace_body(victim.lease_file.path, 512, name=name, host_id=host_id)
        reply, _ = call(victim.daemon, Header(Cmd.ADD_LOCKSPACE, cmd_flags=1, length=HEADER_SIZE + len(body)), body)
        assert reply.result == 0  # accepted; the join fails in the background
        inq = Header(Cmd.INQ_LOCKSPACE, cmd_flags=1, length=HEADER_SIZE + len(body))  # INQ_WAIT
        assert call(victim.daemon, inq, body)[0].result == ResultCode.ENOENT
    assert lockspace_records(victim) == before
    victim.check()


def test_removing_a_lockspace_being_added_answers_the_add(victim: Victim, tmp_path: Path) -> None:
    """Found by the fuzzer: rem_lockspace cancelled the join and its add_lockspace waiter waited for ever."""
    path = tmp_path / "slow-leases"
    path.write_bytes(b"\0" * 1024 * 1024)
    victim.daemon.client().write_lockspace(b"SLOW", path, 0, io_timeout=10)
    body = lockspace_body(path, name=b"SLOW", host_id=1)
    with raw_connection(victim.daemon) as adder:
        adder.settimeout(60)
        adder.sendall(Header(Cmd.ADD_LOCKSPACE, length=HEADER_SIZE + len(body), data=10).encode() + body)
        inq = Header(Cmd.INQ_LOCKSPACE, length=HEADER_SIZE + len(body))
        wait_for(lambda: call(victim.daemon, inq, body)[0].result == -115, 20, "the add in progress")  # EINPROGRESS
        rem = Header(Cmd.REM_LOCKSPACE, length=HEADER_SIZE + len(body))
        assert call(victim.daemon, rem, body)[0].result == 0
        # a join at io_timeout 10 takes 20 s or more: an answer of 0 would mean the rem did not cancel it
        assert Header.decode(recv_exactly(adder, HEADER_SIZE)).result == ResultCode.ENOENT
    assert call(victim.daemon, inq, body)[0].result == ResultCode.ENOENT
    victim.check()


def test_finding_7_release_all_orphans_without_a_body_is_einval(victim: Victim) -> None:
    """On a registered connection (orphans are released through one), and the connection goes on."""
    with raw_connection(victim.daemon) as sock:
        sock.sendall(Header(Cmd.REGISTER).encode())  # no reply: registering is silent
        sock.sendall(Header(Cmd.RELEASE, cmd_flags=REL_ALL | REL_ORPHAN, data2=TARGET_SELF).encode())
        assert Header.decode(recv_exactly(sock, HEADER_SIZE)).result == ResultCode.EINVAL
        sock.sendall(Header(Cmd.INQUIRE, data2=TARGET_SELF).encode())
        inquired = Header.decode(recv_exactly(sock, HEADER_SIZE))
        assert inquired.result == 0 and inquired.data2 == 0
    victim.check()


def test_finding_7_no_renewal_history_with_h_0(victim: Victim) -> None:
    def renewed_twice() -> bool:
        metrics = victim.daemon.client().metrics()
        line = next(
            x for x in metrics.splitlines() if x.startswith('leased_renewals_total{lockspace="LS",result="ok"}')
        )
        return float(line.split()[-1]) >= 2

    wait_for(renewed_twice, 30, "two renewals")
    body = lockspace_body(victim.lease_file.path)
    reply, records = call(victim.daemon, Header(Cmd.RENEWAL, length=HEADER_SIZE + len(body)), body)
    assert reply.result == 0 and records == b""
    victim.check()


def test_finding_5_event_channels_of_closed_peers_are_purged(victim: Victim) -> None:
    body = lockspace_body(victim.lease_file.path) + HostEvent().encode()
    for attempt in range(40):
        with raw_connection(victim.daemon) as sock:
            sock.sendall(Header(Cmd.REG_EVENT, length=HEADER_SIZE + len(body)).encode() + body)
            assert Header.decode(recv_exactly(sock, HEADER_SIZE)).result == 0, f"REG_EVENT {attempt}"
    victim.check()


REG_EVENT_HOLDER = """
import socket, sys, time
from leased.protocol import HEADER_SIZE, TARGET_SELF, Cmd, Disk, Header, HostEvent, Lockspace, Options, Resource
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
sock.sendall(Header(Cmd.REGISTER).encode())
body = Resource(b"LS", b"R2", disks=(Disk(sys.argv[2], int(sys.argv[3])),)).encode() + Options().encode()
sock.sendall(Header(Cmd.ACQUIRE, data=1, data2=TARGET_SELF, length=HEADER_SIZE + len(body)).encode() + body)
assert Header.decode(sock.recv(HEADER_SIZE)).result == 0
event = Lockspace(b"LS", 0, 0, Disk(sys.argv[2], 0)).encode() + HostEvent().encode()
sock.sendall(Header(Cmd.REG_EVENT, length=HEADER_SIZE + len(event)).encode() + event)
assert Header.decode(sock.recv(HEADER_SIZE)).result == 0
print("holding", flush=True)
time.sleep(600)
"""


def test_finding_4_a_registered_event_channel_is_released_when_its_process_exits(victim: Victim) -> None:
    lease_file = victim.lease_file
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            REG_EVENT_HOLDER,
            victim.daemon.socket_path,
            str(lease_file.path),
            str(lease_file.offset(b"R2")),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    with holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            assert leader_owner(lease_file, b"R2") == 1
        finally:
            holder.kill()
    wait_for(lambda: leader_owner(lease_file, b"R2") == 0, 20, "R2 released after its holder exited")

    def client_pids() -> list[int]:
        return [r.state.data32 for r in victim.daemon.client().status() if r.type is StateType.CLIENT]

    # The daemon frees the slot (and its event channel) once the release it started at EOF is done,
    # which may be a moment after the disk shows R2 free.
    wait_for(lambda: holder.pid not in client_pids(), 20, "the holder's client slot freed")
    assert holder.pid not in client_pids()
    victim.check()


def served(daemon: Daemon) -> bool:
    """A new connection is answered; False while the daemon still refuses one (closes it unanswered).

    The daemon counts a closed client out only once it has read that
    client's EOF, so for a moment after the test closes its idle sockets a
    new connection can still meet the refusal at ``max_clients``.
    """
    try:
        daemon.client(timeout=5).version()
    except SanlockError as exc:
        if exc.rc in (-errno.ECONNRESET, -errno.EPIPE, ResultCode.ENOTCONN):
            return False
        raise
    return True


def test_finding_3_max_clients_refuses_new_connections_and_accept_survives_emfile(tmp_path: Path) -> None:
    """At 128 descriptors: past max_clients connections are closed at once; with a higher cap, EMFILE waits."""
    limit = ("prlimit", "--nofile=128:128", "--")
    for name, extra, logged in (
        ("capped", (), "connection refused"),
        ("emfile", ("--max-clients", "1000"), "accept failed"),
    ):
        with ExitStack() as stack:
            victim = joined_daemon(stack, tmp_path, name, *extra, prefix=limit)
            idle = []
            for _ in range(150):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(0.5)
                try:
                    sock.connect(victim.daemon.socket_path)
                except OSError:  # the backlog is full: the daemon is not accepting for now
                    sock.close()
                    break
                idle.append(sock)
            wait_for(lambda: logged in victim.daemon.log(), 20, f"{logged!r} logged")  # noqa: B023
            victim.check()
            for sock in idle:
                sock.close()
            wait_for(lambda: served(victim.daemon), 20, "new connections served again")  # noqa: B023
            victim.check()


def test_finding_8_the_final_check_retries_injected_release_failures(tmp_path: Path) -> None:
    """The torture run's final release meets armed fault points; it retries them instead of crashing the run."""
    with ExitStack() as stack:
        daemon = stack.enter_context(
            start_daemon(
                leased_daemon_argv("hostile-host", watchdog_fire_timeout=5, faultpoints="release.prepare@3"),
                tmp_path / "run",
                stop_argv=leased_shutdown_argv(),
            )
        )
        lease_file = init_lease_file(daemon.client(), tmp_path / "leases", b"LS", [b"R1"])
        daemon.client().add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
        registration = stack.enter_context(daemon.client().register())
        registration.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        with pytest.raises(SanlockError) as refused:
            registration.release(b"LS", b"R1")
        assert refused.value.rc == ResultCode.ENOMEM
        trio.run(release_retrying, registration, "LS", "R1")
        assert registration.inquire() == [] and leader_owner(lease_file, b"R1") == 0
