"""python3-sanlock 3.8.5, unmodified, against leased's daemon, and the same checks against real sanlock.

The binding is importable only by Debian's ``/usr/bin/python3``, so every
call runs in an *agent*: a ``/usr/bin/python3`` child that reads one call per
line on stdin, runs it against the daemon named by ``SANLOCK_RUN_DIR`` and
answers with the ``repr`` of the result (bytes stay bytes) or of the
``SanlockException`` errno.  An agent is a process, so its registrations and
leases live exactly as long as it does, and its pid is what ``pid=`` calls and
``sanlock client status`` name.

Most tests run twice, against leased and against a private real sanlock
3.8.5 (``-m "not sanlock"`` skips the latter): the expected values are the
real daemon's, so a difference is a leased bug, not an opinion.  One daemon of
each kind serves the module, with lockspace ``LS`` written with io_timeout 1
(a join takes 2-3 s); each test takes fresh resources from a pool.  The
two-host tests start a pair of daemons on one lease file, host ids 1 and 2:
leased+leased, sanlock+sanlock, and the mixed pairs, where python3-sanlock
clients of a leased host and of a real sanlock host contend for one lease.

Every wait is a poll against a deadline; every agent call has a timeout.
"""

from __future__ import annotations

import ast
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from errno import EAGAIN, EBUSY, EEXIST, EINPROGRESS, EINVAL, ENODEV, ENOENT, ENOSPC, EPERM, ESRCH
from pathlib import Path
from typing import Any

import pytest
from daemons import Daemon, MiB, new_file, sanlock_binary, sanlock_daemon, wait_for
from leased_daemons import leased_daemon

PYTHON3 = "/usr/bin/python3"
LS = b"LS"
RES_LVER = 1
RES_SHARED = 4
HOST_FREE = 2
HOST_LIVE = 3
LSFLAG_ADD = 1

# python3-sanlock reports -200 < rc < 0 as errno -rc and sanlock's own codes unchanged (wire spec §9.3)
SANLK_LEADER_MAGIC = -223
SANLK_LEADER_LOCKSPACE = -226
SANLK_ADDLS_INVALID_HOSTID = -231
SANLK_ACQUIRE_LVER = -240
SANLK_ACQUIRE_IDLIVE = -243

pytestmark = pytest.mark.skipif(
    not os.path.exists(PYTHON3)
    or subprocess.run([PYTHON3, "-c", "import sanlock"], capture_output=True, check=False).returncode != 0,
    reason="python3-sanlock not importable by /usr/bin/python3 (apt-get install python3-sanlock)",
)

DAEMON_KINDS = ["leased", pytest.param("sanlock", marks=pytest.mark.sanlock)]


# --------------------------------------------------------------------------
# Agents: python3-sanlock in a /usr/bin/python3 child

AGENT = r"""
import ast, os, sys, time, traceback
import sanlock

print(repr(("ready", os.getpid())), flush=True)
for line in sys.stdin:
    request = ast.literal_eval(line)
    try:
        if request[0] == "call":
            _, name, args, kwargs = request
            reply = ("ok", getattr(sanlock, name)(*args, **kwargs))
        else:
            reply = ("ok", eval(request[1], {"sanlock": sanlock, "os": os, "time": time}))
    except sanlock.SanlockException as exc:
        reply = ("sanlock", exc.errno, str(exc))
    except Exception:
        reply = ("exception", traceback.format_exc())
    print(repr(reply), flush=True)
"""


class SanlockFailure(Exception):
    """A call in the agent raised ``SanlockException``; ``errno`` is its ``.errno``."""

    def __init__(self, errno: int, text: str) -> None:
        super().__init__(errno, text)
        self.errno = errno


class Agent:
    """One /usr/bin/python3 process with python3-sanlock, driven call by call."""

    def __init__(self, daemon: Daemon, timeout: float = 30) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self.process = subprocess.Popen(
            [PYTHON3, "-c", AGENT],
            env=daemon.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = b""
        ready, pid = self._read_reply(self.timeout)
        assert ready == "ready"
        self.pid: int = pid

    def _read_reply(self, timeout: float) -> Any:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"python3-sanlock agent pid {self.process.pid}: no answer in {timeout} s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(f"python3-sanlock agent pid {self.process.pid} exited: {self.process.wait(5)}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return ast.literal_eval(line.decode())

    def _request(self, request: tuple[Any, ...], timeout: float | None) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(repr(request).encode() + b"\n")
        reply = self._read_reply(self.timeout if timeout is None else timeout)
        if reply[0] == "sanlock":
            raise SanlockFailure(reply[1], reply[2])
        if reply[0] == "exception":
            raise AssertionError(f"python3-sanlock agent raised:\n{reply[1]}")
        return reply[1]

    def call(self, name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """``sanlock.<name>(*args, **kwargs)`` in the agent; SanlockException becomes :class:`SanlockFailure`."""
        return self._request(("call", name, args, kwargs), timeout)

    def eval(self, expression: str, timeout: float | None = None) -> Any:
        """Evaluate an expression (names: sanlock, os, time) in the agent."""
        return self._request(("eval", expression), timeout)

    def errno(self, name: str, *args: Any, **kwargs: Any) -> int:
        """The errno of a call that must fail; the test fails if it succeeds."""
        try:
            result = self.call(name, *args, **kwargs)
        except SanlockFailure as exc:
            return exc.errno
        raise AssertionError(f"sanlock.{name}{args} {kwargs} succeeded ({result!r}); an error was expected")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def agent(daemon: Daemon) -> Iterator[Agent]:
    running = Agent(daemon)
    try:
        yield running
    finally:
        running.close()


def cli(daemon: Daemon, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real ``sanlock client <args>`` against ``daemon``."""
    return subprocess.run(
        [sanlock_binary(), "client", *args],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# --------------------------------------------------------------------------
# Daemons and lease files


@contextmanager
def any_daemon(kind: str, tmp: Path, name: str, host_name: str) -> Iterator[Daemon]:
    if kind == "leased":
        with leased_daemon(tmp, name, host_name) as daemon:
            yield daemon
    else:
        with sanlock_daemon(tmp, name, host_name) as daemon:
            yield daemon


@dataclass
class Leases:
    """A lease file laid out by python3-sanlock: lockspace at 0, resource i at i MiB, one spare MiB at the end."""

    path: str
    lockspace: bytes
    names: list[bytes]

    def disks(self, name: bytes) -> list[tuple[str, int]]:
        return [(self.path, self.offset(name))]

    def offset(self, name: bytes) -> int:
        return (self.names.index(name) + 1) * MiB

    @property
    def uninitialised(self) -> list[tuple[str, int]]:
        return [(self.path, (len(self.names) + 1) * MiB)]

    def spec(self, name: bytes, suffix: str = "") -> str:
        """``LS:R:path:offset[:suffix]`` as the sanlock CLI takes and prints it."""
        text = f"{self.lockspace.decode()}:{name.decode()}:{self.path}:{self.offset(name)}"
        return f"{text}:{suffix}" if suffix else text


def write_leases(client: Agent, path: Path, lockspace: bytes, names: list[bytes]) -> Leases:
    new_file(path, (len(names) + 2) * MiB)
    leases = Leases(str(path), lockspace, names)
    assert client.call("write_lockspace", lockspace, leases.path, 0, iotimeout=1) is None
    for name in names:
        assert client.call("write_resource", lockspace, name, leases.disks(name)) is None
    return leases


def hosts_ready(client: Agent, lockspace: bytes) -> list[dict[str, int]] | None:
    """get_hosts, or None while the daemon answers EAGAIN (first scan of other hosts not done)."""
    try:
        hosts: list[dict[str, int]] = client.call("get_hosts", lockspace)
    except SanlockFailure as exc:
        if exc.errno != EAGAIN:
            raise
        return None
    return hosts


class Pool:
    """Resources never used before by this module's tests on one daemon."""

    def __init__(self, daemon: Daemon, leases: Leases) -> None:
        self.daemon = daemon
        self.leases = leases
        self._next = iter(leases.names)

    def take(self) -> bytes:
        return next(self._next)


@pytest.fixture(scope="module", params=DAEMON_KINDS)
def pool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A daemon of each kind with ``LS`` joined synchronously as host 1 and its first host scan done."""
    tmp = tmp_path_factory.mktemp(request.param)
    with any_daemon(request.param, tmp, "daemon", "host1") as daemon, agent(daemon) as client:
        leases = write_leases(client, tmp / "leases.img", LS, [b"R%02d" % i for i in range(1, 31)])
        assert client.call("add_lockspace", LS, 1, leases.path, 0, iotimeout=1, timeout=60) is None
        wait_for(lambda: hosts_ready(client, LS), 15, "get_hosts stops answering EAGAIN")
        yield Pool(daemon, leases)


@pytest.fixture
def py(pool: Pool) -> Iterator[Callable[[], Agent]]:
    """A factory of agents on the module daemon, all ended after the test."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(agent(pool.daemon))


# --------------------------------------------------------------------------
# Single host


def test_write_and_read_lockspace_and_resource(pool: Pool, py: Callable[[], Agent], tmp_path: Path) -> None:
    client = py()
    path = str(new_file(tmp_path / "other.img", 3 * MiB))
    assert client.call("write_lockspace", b"LX", path, 0, iotimeout=7) is None
    assert client.call("read_lockspace", path) == {"lockspace": b"LX", "iotimeout": 7}
    assert client.call("write_resource", b"LX", b"RX", [(path, MiB)]) is None
    assert client.call("read_resource", path, MiB) == {"lockspace": b"LX", "resource": b"RX", "version": 0}
    assert client.call("read_resource_owners", b"LX", b"RX", [(path, MiB)]) == []
    assert client.errno("read_lockspace", str(tmp_path / "missing.img")) == ENODEV
    assert client.errno("write_resource", b"LX", b"RX", [(str(tmp_path / "missing.img"), 0)]) == ENOENT


def test_read_uninitialised_area(pool: Pool, py: Callable[[], Agent], tmp_path: Path) -> None:
    client = py()
    path = str(new_file(tmp_path / "zeros.img", MiB))
    assert client.errno("read_lockspace", path, 0) == SANLK_LEADER_MAGIC
    assert client.errno("read_resource", path, 0) == SANLK_LEADER_MAGIC
    # not LEADER_MAGIC: the zeroed leader's sector/align disagree with the 1M/512 flags python sends
    assert client.errno("read_resource_owners", b"LX", b"RX", [(path, 0)]) == EINVAL


def test_lockspace_queries(pool: Pool, py: Callable[[], Agent]) -> None:
    client, path = py(), pool.leases.path
    assert client.call("inq_lockspace", LS, 1, path, 0) is True
    assert client.call("inq_lockspace", LS, 0, path, 0) is True  # host_id 0 matches any
    assert client.call("inq_lockspace", b"NOPE", 1, path, 0) is False
    assert client.call("get_lockspaces") == [{"lockspace": LS, "host_id": 1, "path": path, "offset": 0, "flags": 0}]

    (ours,) = client.call("get_hosts", LS)
    assert ours["host_id"] == 1 and ours["flags"] == HOST_LIVE and ours["io_timeout"] == 1
    assert ours["generation"] >= 1 and ours["timestamp"] > 0
    assert [h["host_id"] for h in client.call("get_hosts", LS, 1)] == [1]
    assert [h["flags"] for h in client.call("get_hosts", LS, 7)] == [HOST_FREE]
    assert client.errno("get_hosts", b"NOPE") == ENOENT

    assert client.errno("add_lockspace", LS, 1, path, 0, iotimeout=1) == EEXIST
    assert client.errno("add_lockspace", LS, 2, path, 0, iotimeout=1) == EINVAL
    assert client.errno("rem_lockspace", b"NOPE", 1, path, 0) == ENOENT


def test_get_hosts_of_a_free_host_id(pool: Pool, py: Callable[[], Agent]) -> None:
    """A host id never used reads as all zeros but FREE (wire spec §5.6)."""
    assert py().call("get_hosts", LS, 7) == [
        {"host_id": 7, "generation": 0, "timestamp": 0, "io_timeout": 0, "flags": HOST_FREE}
    ]


def test_add_lockspace_errors(pool: Pool, py: Callable[[], Agent], tmp_path: Path) -> None:
    client = py()
    zeros = str(new_file(tmp_path / "zeros.img", MiB))
    other = write_leases(client, tmp_path / "ls3.img", b"LS3", [])
    assert client.errno("add_lockspace", b"LS3", 0, other.path, 0, iotimeout=1) == EINVAL  # host_id 0
    assert client.errno("add_lockspace", b"LS3", 2001, other.path, 0, iotimeout=1) == SANLK_ADDLS_INVALID_HOSTID
    assert client.errno("add_lockspace", b"LZ", 1, zeros, 0, iotimeout=1) == SANLK_LEADER_MAGIC
    assert client.errno("add_lockspace", b"LX", 1, other.path, 0, iotimeout=1) == SANLK_LEADER_LOCKSPACE
    assert client.errno("add_lockspace", b"LS3", 1, str(tmp_path / "missing.img"), 0, iotimeout=1) == ENODEV
    assert [ls["lockspace"] for ls in client.call("get_lockspaces")] == [LS]


def test_acquire_inquire_release(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd = client.call("register")
    assert isinstance(fd, int) and fd >= 0
    assert client.call("acquire", LS, name, disks, slkfd=fd) is None
    held = [{"lockspace": LS, "resource": name, "flags": RES_LVER, "version": 1, "disks": disks}]
    assert client.call("inquire", slkfd=fd) == held
    assert client.call("inquire", pid=client.pid) == held
    assert client.errno("acquire", LS, name, disks, slkfd=fd) == EEXIST

    (owner,) = client.call("read_resource_owners", LS, name, disks)
    assert owner["host_id"] == 1 and owner["generation"] >= 1 and owner["timestamp"] > 0
    assert client.call("read_resource", *disks[0]) == {"lockspace": LS, "resource": name, "version": 1}

    assert client.call("release", LS, name, disks, slkfd=fd) is None
    assert client.call("inquire", slkfd=fd) == []
    assert client.errno("release", LS, name, disks, slkfd=fd) == EPERM
    assert client.errno("release", LS, name, disks) == EBUSY  # neither slkfd nor pid: unregistered connection
    assert client.call("read_resource_owners", LS, name, disks) == []


def test_acquire_errors(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd = client.call("register")
    assert client.errno("acquire", b"NOPE", name, disks, slkfd=fd) == ENOSPC
    assert client.errno("acquire", LS, b"NEVER", pool.leases.uninitialised, slkfd=fd) == SANLK_LEADER_MAGIC
    assert client.errno("acquire", LS, name, disks, slkfd=fd, version=5) == SANLK_ACQUIRE_LVER
    assert client.call("inquire", slkfd=fd) == []

    # version= is the lver on disk; the acquire bumps it
    assert client.call("acquire", LS, name, disks, slkfd=fd, version=0) is None
    assert client.call("inquire", slkfd=fd)[0]["version"] == 1
    assert client.call("release", LS, name, disks, slkfd=fd) is None
    assert client.call("acquire", LS, name, disks, slkfd=fd, version=1) is None
    assert client.call("inquire", slkfd=fd)[0]["version"] == 2
    assert client.call("release", LS, name, disks, slkfd=fd) is None


def test_pid_not_registered(pool: Pool, py: Callable[[], Agent]) -> None:
    stranger, client, name = py(), py(), pool.take()  # stranger never registers
    disks = pool.leases.disks(name)
    assert client.errno("acquire", LS, name, disks, pid=stranger.pid) == ESRCH
    assert client.errno("inquire", pid=stranger.pid) == ESRCH
    assert client.errno("release", LS, name, disks, pid=stranger.pid) == ESRCH
    assert client.call("read_resource_owners", LS, name, disks) == []


def test_shared_leases_on_one_host(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd1, fd2, fd3 = (client.call("register") for _ in range(3))
    assert client.call("acquire", LS, name, disks, slkfd=fd1, shared=True) is None
    assert client.call("acquire", LS, name, disks, slkfd=fd2, shared=True) is None
    shared = [{"lockspace": LS, "resource": name, "flags": RES_SHARED, "version": 0, "disks": disks}]
    assert client.call("inquire", slkfd=fd1) == shared
    assert client.call("inquire", slkfd=fd2) == shared
    assert client.errno("acquire", LS, name, disks, slkfd=fd3) == EEXIST
    owners = client.call("read_resource_owners", LS, name, disks)
    assert [(h["host_id"], h["timestamp"]) for h in owners] == [(1, 0)]
    assert client.call("release", LS, name, disks, slkfd=fd1) is None
    assert client.call("release", LS, name, disks, slkfd=fd2) is None
    assert client.call("read_resource_owners", LS, name, disks) == []


def test_local_shared_holders_after_one_of_them_left(pool: Pool, py: Callable[[], Agent]) -> None:
    """sanlock 3.8's _release_token: one of several local shared holders leaving is no release in progress.

    Only the last token's release puts the resource on the list of those being
    released (whose acquires answer EAGAIN); the others go with "release_token
    more shared" and the resource stays held.  So a shared acquire joins the
    remaining hold and an exclusive one meets it (EEXIST), as before; leased
    answered EAGAIN to both until the last holder left.
    """
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd1, fd2, fd3, fd4 = (client.call("register") for _ in range(4))
    assert client.call("acquire", LS, name, disks, slkfd=fd1, shared=True) is None
    assert client.call("acquire", LS, name, disks, slkfd=fd2, shared=True) is None
    assert client.call("release", LS, name, disks, slkfd=fd1) is None
    assert client.errno("acquire", LS, name, disks, slkfd=fd4) == EEXIST
    assert client.call("acquire", LS, name, disks, slkfd=fd3, shared=True) is None
    assert client.call("acquire", LS, name, disks, slkfd=fd1, shared=True) is None
    shared = [{"lockspace": LS, "resource": name, "flags": RES_SHARED, "version": 0, "disks": disks}]
    assert [client.call("inquire", slkfd=fd) for fd in (fd1, fd2, fd3, fd4)] == [shared, shared, shared, []]
    for fd in (fd2, fd1):
        assert client.call("release", LS, name, disks, slkfd=fd) is None
        assert client.errno("acquire", LS, name, disks, slkfd=fd4) == EEXIST
    owners = client.call("read_resource_owners", LS, name, disks)
    assert [(h["host_id"], h["timestamp"]) for h in owners] == [(1, 0)], "a local holder remains: held on disk"
    assert client.call("release", LS, name, disks, slkfd=fd3) is None
    assert acquire_once_released(client, name, disks, fd4) is None
    assert client.call("inquire", slkfd=fd4) == [{**shared[0], "flags": RES_LVER, "version": 2}]
    assert client.call("release", LS, name, disks, slkfd=fd4) is None


def acquire_once_released(agent: Agent, name: bytes, disks: list[tuple[str, int]], slkfd: int) -> object:
    """Acquire ``name`` on ``slkfd`` once the daemon has finished releasing it; what ``sanlock.acquire`` returned.

    The disk shows the lease free, and the holder's registration is gone, a
    moment before the daemon has finished that release; until then both
    daemons answer EAGAIN, as sanlock 3.8's acquire_token does for a resource
    still being released.  Any other answer fails the test.
    """

    def acquired() -> tuple[object] | None:
        try:
            return (agent.call("acquire", LS, name, disks, slkfd=slkfd),)
        except SanlockFailure as exc:
            if exc.errno == EAGAIN:
                return None
            raise

    (result,) = wait_for(acquired, 10, f"{name!r} acquired once its release finished")
    return result


def test_acquire_on_behalf_of_registered_pid(pool: Pool, py: Callable[[], Agent]) -> None:
    holder, manager, name = py(), py(), pool.take()
    disks = pool.leases.disks(name)
    fd = holder.call("register")
    assert manager.call("acquire", LS, name, disks, pid=holder.pid) is None
    held = [{"lockspace": LS, "resource": name, "flags": RES_LVER, "version": 1, "disks": disks}]
    assert holder.call("inquire", slkfd=fd) == held
    assert manager.call("inquire", pid=holder.pid) == held
    assert manager.call("release", LS, name, disks, pid=holder.pid) is None
    assert holder.call("inquire", slkfd=fd) == []

    # the lease belongs to the holder's registration: its exit releases it
    assert manager.call("acquire", LS, name, disks, pid=holder.pid) is None
    holder.kill()
    wait_for(lambda: manager.call("read_resource_owners", LS, name, disks) == [], 10, "lease released at exit")
    wait_for(lambda: manager.errno("inquire", pid=holder.pid) == ESRCH, 10, "dead pid unregistered")
    own = manager.call("register")
    assert acquire_once_released(manager, name, disks, own) is None
    assert manager.call("inquire", slkfd=own)[0]["version"] == 3


def test_closing_the_registered_fd_releases(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd = client.call("register")
    assert client.call("acquire", LS, name, disks, slkfd=fd) is None
    assert client.eval(f"os.close({fd})") is None
    wait_for(lambda: client.call("read_resource_owners", LS, name, disks) == [], 10, "lease released on close")
    fd2 = client.call("register")
    assert acquire_once_released(client, name, disks, fd2) is None
    assert client.call("inquire", slkfd=fd2)[0]["version"] == 2


def test_lvb(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name, plain = py(), pool.take(), pool.take()
    disks = pool.leases.disks(name)
    fd = client.call("register")
    assert client.errno("set_lvb", LS, name, disks, b"x") == ENOENT  # not held
    assert client.errno("get_lvb", LS, name, disks, 16) == ENOENT
    assert client.call("acquire", LS, name, disks, slkfd=fd, lvb=True) is None
    assert client.call("get_lvb", LS, name, disks, 16) == bytes(16)
    assert client.call("set_lvb", LS, name, disks, b"hello") is None
    assert client.call("get_lvb", LS, name, disks, 8) == b"hello\0\0\0"
    assert client.call("release", LS, name, disks, slkfd=fd) is None
    # written to disk at release: the next holder reads it back
    assert client.call("acquire", LS, name, disks, slkfd=fd, lvb=True) is None
    assert client.call("get_lvb", LS, name, disks, 5) == b"hello"
    assert client.call("release", LS, name, disks, slkfd=fd) is None

    plain_disks = pool.leases.disks(plain)
    assert client.call("acquire", LS, plain, plain_disks, slkfd=fd) is None
    assert client.errno("set_lvb", LS, plain, plain_disks, b"x") == EINVAL  # held without lvb=True
    assert client.call("release", LS, plain, plain_disks, slkfd=fd) is None


def test_rem_lockspace_unused_refused_while_leases_held(pool: Pool, py: Callable[[], Agent]) -> None:
    client, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd = client.call("register")
    assert client.call("acquire", LS, name, disks, slkfd=fd) is None
    assert client.errno("rem_lockspace", LS, 1, pool.leases.path, 0, unused=True) == EBUSY
    assert client.errno("rem_lockspace", LS, 1, pool.leases.path, 0, wait=False, unused=True) == EBUSY
    assert client.call("inq_lockspace", LS, 1, pool.leases.path, 0) is True
    assert client.call("release", LS, name, disks, slkfd=fd) is None


def test_add_lockspace_async_and_remove_async(pool: Pool, py: Callable[[], Agent], tmp_path: Path) -> None:
    client = py()
    other = write_leases(client, tmp_path / "ls2.img", b"LS2", [])
    args = (b"LS2", 1, other.path, 0)
    assert client.call("add_lockspace", *args, iotimeout=1, wait=False) is None
    assert client.call("inq_lockspace", *args) is None  # being added
    assert {"lockspace": b"LS2", "host_id": 1, "path": other.path, "offset": 0, "flags": LSFLAG_ADD} in client.call(
        "get_lockspaces"
    )
    assert client.errno("get_hosts", b"LS2") == ENOENT
    assert client.errno("add_lockspace", *args, iotimeout=1, wait=False) == EINPROGRESS
    wait_for(lambda: client.call("inq_lockspace", *args), 15, "async add_lockspace completes")
    assert {"lockspace": b"LS2", "host_id": 1, "path": other.path, "offset": 0, "flags": 0} in client.call(
        "get_lockspaces"
    )

    assert client.call("rem_lockspace", *args, wait=False) is None
    wait_for(lambda: client.call("inq_lockspace", *args) is False, 15, "async rem_lockspace completes")
    assert [ls["lockspace"] for ls in client.call("get_lockspaces")] == [LS]


def test_convert_with_the_cli(pool: Pool, py: Callable[[], Agent]) -> None:
    # python3-sanlock 3.8.5 has no convert(): `sanlock client convert -p PID` sends CONVERT for the pid
    holder, name = py(), pool.take()
    disks = pool.leases.disks(name)
    fd = holder.call("register")
    assert holder.call("acquire", LS, name, disks, slkfd=fd) is None

    converted = cli(pool.daemon, "convert", "-r", pool.leases.spec(name, "SH"), "-p", str(holder.pid))
    assert (converted.returncode, converted.stdout.splitlines()[-1]) == (0, "convert done 0")
    shared = {"lockspace": LS, "resource": name, "flags": RES_SHARED, "version": 0, "disks": disks}
    assert holder.call("inquire", slkfd=fd) == [shared]
    again = cli(pool.daemon, "convert", "-r", pool.leases.spec(name, "SH"), "-p", str(holder.pid))
    assert (again.returncode, again.stdout.splitlines()[-1]) == (1, "convert done -114")  # EALREADY

    back = cli(pool.daemon, "convert", "-r", pool.leases.spec(name), "-p", str(holder.pid))
    assert (back.returncode, back.stdout.splitlines()[-1]) == (0, "convert done 0")
    assert holder.call("inquire", slkfd=fd) == [{**shared, "flags": RES_LVER, "version": 2}]

    unheld = pool.take()
    missing = cli(pool.daemon, "convert", "-r", pool.leases.spec(unheld), "-p", str(holder.pid))
    assert (missing.returncode, missing.stdout.splitlines()[-1]) == (1, "convert done -2")  # ENOENT
    assert holder.call("release", LS, name, disks, slkfd=fd) is None


def test_convert_to_exclusive_beside_another_local_shared_holder(
    pool: Pool, py: Callable[[], Agent], request: pytest.FixtureRequest
) -> None:
    """Where leased keeps exclusion and sanlock 3.8.5 does not: the one answer here that differs on purpose.

    sanlock's convert_token never looks at the other local tokens: its ballot
    skips our own mode block, so it converts, and the other local holder still
    believes it shares the lease; releasing it then fails ("release_token
    exclusive not last", SANLK_ERROR).  leased answers EAGAIN, as for shared
    holders on other hosts, and both keep their shared hold.
    """
    first, second, name = py(), py(), pool.take()
    disks = pool.leases.disks(name)
    fd1, fd2 = first.call("register"), second.call("register")
    assert first.call("acquire", LS, name, disks, slkfd=fd1, shared=True) is None
    assert second.call("acquire", LS, name, disks, slkfd=fd2, shared=True) is None
    converted = cli(pool.daemon, "convert", "-r", pool.leases.spec(name), "-p", str(first.pid))
    shared = {"lockspace": LS, "resource": name, "flags": RES_SHARED, "version": 0, "disks": disks}
    if "sanlock" in request.node.callspec.id:
        assert converted.stdout.splitlines()[-1] == "convert done 0"
        assert first.call("inquire", slkfd=fd1)[0]["flags"] == RES_LVER
        assert second.call("inquire", slkfd=fd2) == [shared]
        assert second.errno("release", LS, name, disks, slkfd=fd2) == -201  # SANLK_ERROR
        assert first.call("release", LS, name, disks, slkfd=fd1) is None
        return
    assert converted.stdout.splitlines()[-1] == "convert done -11"
    assert first.call("inquire", slkfd=fd1) == [shared]
    assert second.call("inquire", slkfd=fd2) == [shared]
    assert second.call("release", LS, name, disks, slkfd=fd2) is None
    assert first.call("release", LS, name, disks, slkfd=fd1) is None


def test_cli_status_version_log_dump_host_status(pool: Pool, py: Callable[[], Agent]) -> None:
    holder, idle, name, sh_name = py(), py(), pool.take(), pool.take()
    fd = holder.call("register")
    idle.call("register")
    assert holder.call("acquire", LS, name, pool.leases.disks(name), slkfd=fd) is None
    assert holder.call("acquire", LS, sh_name, pool.leases.disks(sh_name), slkfd=fd, shared=True) is None

    version = cli(pool.daemon, "version")
    assert version.returncode == 0
    assert "daemon version 3.8.5 (0x03080500)" in version.stdout.splitlines()
    assert "daemon socket protocol 0.1" in version.stdout.splitlines()

    status = cli(pool.daemon, "status")
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert lines[0] == "daemon host1"
    assert f"p {holder.pid} " in lines  # python's acquire sets an empty owner name
    assert f"p {idle.pid} {idle.pid}" in lines  # registered, never acquired: named after its pid
    assert f"s LS:1:{pool.leases.path}:0" in lines
    assert f"r {pool.leases.spec(name, '1')} p {holder.pid}" in lines
    assert f"r {pool.leases.spec(sh_name, 'SH')} p {holder.pid}" in lines
    detailed = cli(pool.daemon, "status", "-D")
    assert detailed.returncode == 0 and "    version_str=3.8.5" in detailed.stdout.splitlines()

    gets = cli(pool.daemon, "gets", "-h", "1")
    assert gets.returncode == 0
    assert gets.stdout.splitlines()[0] == f"s LS:1:{pool.leases.path}:0 "
    assert gets.stdout.splitlines()[1].startswith("h 1 gen ") and gets.stdout.splitlines()[1].endswith(" LIVE")
    host_status = cli(pool.daemon, "host_status", "-s", "LS")
    assert host_status.returncode == 0 and host_status.stdout.splitlines()[0].startswith("1 timestamp ")

    log_dump = cli(pool.daemon, "log_dump")
    assert log_dump.returncode == 1  # the 3.8.5 CLI exits 1 after printing a dump, from the real daemon too
    assert any("cmd_register" in line and f"pid {holder.pid}" in line for line in log_dump.stdout.splitlines())

    holder.close()  # the process exits: its leases go, status forgets it
    wait_for(lambda: f"p {holder.pid}" not in cli(pool.daemon, "status").stdout, 10, "status drops the exited pid")
    assert f"r {pool.leases.spec(name, '1')}" not in cli(pool.daemon, "status").stdout


# --------------------------------------------------------------------------
# Hosts sharing one lease file


@dataclass
class Hosts:
    """``daemons[i]`` joined to ``LS`` as host id i + 1 on one lease file."""

    daemons: list[Daemon]
    leases: Leases


@pytest.fixture
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hosts]:
    """One daemon per kind in ``request.param`` (host ids 1, 2, ...), each having seen the others live."""
    kinds: tuple[str, ...] = request.param
    with ExitStack() as stack:
        daemons = [
            stack.enter_context(any_daemon(kind, tmp_path, f"host{i}", f"host{i}"))
            for i, kind in enumerate(kinds, start=1)
        ]
        clients = [stack.enter_context(agent(daemon)) for daemon in daemons]
        leases = write_leases(clients[0], tmp_path / "leases.img", LS, [b"R1", b"R2", b"R3"])
        for host_id, client in enumerate(clients, start=1):
            assert client.call("add_lockspace", LS, host_id, leases.path, 0, iotimeout=1, wait=False) is None
        for host_id, client in enumerate(clients, start=1):
            assert client.call("inq_lockspace", LS, host_id, leases.path, 0, wait=True, timeout=60) is True

        def all_live(client: Agent) -> bool:
            live = {h["host_id"] for h in hosts_ready(client, LS) or [] if h["flags"] == HOST_LIVE}
            return live == set(range(1, len(kinds) + 1))

        wait_for(lambda: all(all_live(client) for client in clients), 20, "every host sees the others live")
        yield Hosts(daemons, leases)


ONE_HOST = [
    pytest.param(("leased",), id="leased"),
    pytest.param(("sanlock",), id="sanlock", marks=pytest.mark.sanlock),
]
TWO_HOSTS = [
    pytest.param(("leased", "leased"), id="leased"),
    pytest.param(("sanlock", "sanlock"), id="sanlock", marks=pytest.mark.sanlock),
    pytest.param(("sanlock", "leased"), id="sanlock+leased", marks=pytest.mark.sanlock),
    pytest.param(("leased", "sanlock"), id="leased+sanlock", marks=pytest.mark.sanlock),
]


@pytest.mark.parametrize("hosts", TWO_HOSTS, indirect=True)
def test_two_hosts_contention(hosts: Hosts) -> None:
    daemon1, daemon2 = hosts.daemons
    leases = hosts.leases
    with agent(daemon1) as one, agent(daemon2) as two:
        fd1, fd2 = one.call("register"), two.call("register")
        assert one.call("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd1) is None
        assert one.call("acquire", LS, b"R2", leases.disks(b"R2"), slkfd=fd1, shared=True) is None
        assert one.call("acquire", LS, b"R3", leases.disks(b"R3"), slkfd=fd1, shared=True) is None

        assert two.errno("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd2) == SANLK_ACQUIRE_IDLIVE
        assert two.errno("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd2, shared=True) == SANLK_ACQUIRE_IDLIVE
        assert two.call("acquire", LS, b"R2", leases.disks(b"R2"), slkfd=fd2, shared=True) is None
        assert two.errno("acquire", LS, b"R3", leases.disks(b"R3"), slkfd=fd2) == EAGAIN
        assert two.call("inquire", slkfd=fd2) == [
            {"lockspace": LS, "resource": b"R2", "flags": RES_SHARED, "version": 0, "disks": leases.disks(b"R2")}
        ]
        owners = two.call("read_resource_owners", LS, b"R2", leases.disks(b"R2"))
        assert sorted(h["host_id"] for h in owners) == [1, 2]
        (owner,) = two.call("read_resource_owners", LS, b"R1", leases.disks(b"R1"))
        assert owner["host_id"] == 1

        # a lease held by the other host is not ours to release
        assert two.errno("release", LS, b"R1", leases.disks(b"R1"), slkfd=fd2) == EPERM

        # released on host 1, it is free for host 2, and then busy for host 1
        assert one.call("release", LS, b"R1", leases.disks(b"R1"), slkfd=fd1) is None
        assert two.call("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd2) is None
        assert one.errno("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd1) == SANLK_ACQUIRE_IDLIVE
        versions = {r["resource"]: r["version"] for r in two.call("inquire", slkfd=fd2)}
        assert versions == {b"R1": 2, b"R2": 0}

        # host 2 leaves the lockspace only once its leases are gone
        assert two.errno("rem_lockspace", LS, 2, leases.path, 0, unused=True) == EBUSY
        for name in (b"R1", b"R2"):
            assert two.call("release", LS, name, leases.disks(name), slkfd=fd2) is None
        assert two.call("rem_lockspace", LS, 2, leases.path, 0, unused=True) is None
        assert two.call("inq_lockspace", LS, 2, leases.path, 0) is False
        assert two.errno("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd2) == ENOSPC


@pytest.mark.parametrize("hosts", ONE_HOST, indirect=True)
def test_shutdown(hosts: Hosts) -> None:
    """``shutdown`` without force is refused while a lockspace is joined; forced, it SIGKILLs lease holders."""
    (daemon1,) = hosts.daemons
    leases = hosts.leases
    with agent(daemon1) as holder, agent(daemon1) as bystander:
        fd = holder.call("register")
        bystander.call("register")
        assert holder.call("acquire", LS, b"R1", leases.disks(b"R1"), slkfd=fd) is None

        refused = cli(daemon1, "shutdown", "-w", "1")
        assert (refused.returncode, refused.stdout.splitlines()[-1]) == (1, "shutdown done -16")  # EBUSY
        assert daemon1.alive()

        done = cli(daemon1, "shutdown", "-f", "1", "-w", "1")
        assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "shutdown done 0")
        assert daemon1.process.wait(15) == 0
        assert holder.process.wait(15) == -signal.SIGKILL
        assert bystander.process.poll() is None  # registered, but held nothing
