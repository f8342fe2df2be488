"""One torture client process: acquire, check, release, over and over, writing down what it believes.

Run as ``python -m leased.torture.worker CONFIG_JSON`` by the harness, one
process per client, so that SIGKILL and SIGSTOP hit a real process with a
real registered connection.  It uses the ordinary blocking
:class:`leased.client.Client`, which speaks sanlock's protocol, so the same
worker runs against leased and real sanlock hosts.

While it holds a lease exclusively it does a devcount-style check on a data
block beside the lease (its own file, never through the faulty filesystem):
read the counter, write counter + 1 with its pid, hold a while, read it back;
anything else there means somebody else wrote while we held the lease.  A
shared holder reads the counter when it gets the lease and when it lets go:
no exclusive holder may have written in between.

Modes:

* ``normal``: the loop above until SIGUSR1 (finish, release, exit);
* ``interleave`` (rogue): hold a lease, then send two calls on its registered
  connection the way two unlocked threads would (header, header, body, body),
  and check that the daemon kept the connection and the lease;
* ``vanish`` (rogue): hold a lease, then exit half way through a message.

SIGTERM (what a daemon sends when this host's leases can no longer be
trusted) is written down as ``fenced`` and ends the process at once.

When its daemon goes away (the connection breaks) a worker writes
``daemon_gone`` and exits, unless ``hold_when_orphaned`` (the harness's
watchdog mode): then it runs on until something kills it, as a VM whose
host lost its lock daemon would, and if it holds a lease it writes
``orphaned`` and goes on using that lease, devcount and all.  Only the
watchdog's reset of the host may end it, and that must come before another
host takes the lease.  (In this mode a worker asks inquire before every
release, so a daemon that dies while it holds is found while it holds.)
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import random
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

from leased.client import Client, Registration, SanlockError
from leased.protocol import HEADER_SIZE, TARGET_SELF, Cmd, Disk, Header, Options, Resource
from leased.text_forms import parse_state
from leased.torture.history import History

BLOCK = 4096
COUNTER = struct.Struct("<QQ")

GONE = frozenset(-e for e in (errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED, errno.ENOENT))
"""Reply codes that mean the daemon (or our connection to it) is gone, not that a call failed."""


@dataclass(frozen=True)
class WorkerConfig:
    run_dir: str
    history: str
    host: str
    lockspace: str
    resources: list[tuple[str, str, int]]
    """(name, lease path as this host sees it, offset)."""
    data_path: str
    data_blocks: dict[str, int]
    """Resource name to the index of its counter block in ``data_path``."""
    seed: int
    mode: str = "normal"
    sh_fraction: float = 0.3
    persistent_fraction: float = 0.0
    """Share of exclusive acquires that are persistent and adopt an orphan (leased hosts)."""
    hold_max: float = 0.05
    call_timeout: float = 120.0
    hold_when_orphaned: bool = False
    """Daemon gone while holding a lease: keep using it until killed (watchdog mode) instead of exiting."""
    iterations: int = 0
    """Stop after this many acquires (0: until SIGUSR1)."""

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        raw: dict[str, Any] = json.loads(text)
        raw["resources"] = [tuple(r) for r in raw["resources"]]
        return cls(**raw)


class Counters:
    """The devcount blocks: one per resource, read and written with O_DIRECT where the filesystem allows."""

    def __init__(self, path: str) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.buffer = mmap.mmap(-1, BLOCK)

    def read(self, index: int) -> tuple[int, int]:
        if os.preadv(self.fd, [self.buffer], index * BLOCK) != BLOCK:
            raise OSError(errno.EIO, "short read of a counter block")
        count, pid = COUNTER.unpack_from(self.buffer)
        return count, pid

    def write(self, index: int, count: int, pid: int) -> None:
        self.buffer[:] = bytes(BLOCK)
        COUNTER.pack_into(self.buffer, 0, count, pid)
        if os.pwritev(self.fd, [self.buffer], index * BLOCK) != BLOCK:
            raise OSError(errno.EIO, "short write of a counter block")


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.history = History(config.history, config.host)
        self.rng = random.Random(config.seed)
        self.counters = Counters(config.data_path)
        self.stopping = False
        self.pid = os.getpid()
        self.holding: tuple[str, bool, tuple[int, int]] | None = None
        """(resource, shared, the counter as it must read) while the lease is in use."""

    # -- signals

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._fenced)
        signal.signal(signal.SIGUSR1, self._stop)

    def _fenced(self, signum: int, frame: FrameType | None) -> None:
        self.history.record("fenced", sig=signum)
        os._exit(0)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    # -- the loop

    def run(self) -> int:
        self.install_signals()
        self.history.record("start", mode=self.config.mode)
        try:
            registration = Client(self.config.run_dir, timeout=self.config.call_timeout).register()
        except (SanlockError, OSError) as exc:
            self.history.record("daemon_gone", detail=str(exc))
            return 0
        done = 0
        while not self.stopping and (not self.config.iterations or done < self.config.iterations):
            done += 1
            name, path, offset = self.rng.choice(self.config.resources)
            shared = self.config.mode == "normal" and self.rng.random() < self.config.sh_fraction
            persistent = not shared and self.rng.random() < self.config.persistent_fraction
            if not self._acquire(registration, name, path, offset, shared, persistent):
                time.sleep(self.rng.uniform(0.01, 0.1))
                continue
            if self.config.mode == "interleave":
                self._interleave(registration, name, path, offset)
            elif self.config.mode == "vanish":
                self._vanish(registration)
            self._hold(registration, name, shared)
            self._release(registration, name)
        self.history.record("exit")
        registration.close()
        return 0

    def _gone(self, registration: Registration, exc: SanlockError) -> bool:
        if registration.broken is not None or exc.rc in GONE:
            if self.config.hold_when_orphaned and self.holding is not None:
                self._orphaned(*self.holding)
            self.history.record("daemon_gone", rc=exc.rc, detail=str(exc))
            if self.config.hold_when_orphaned:
                while True:  # holding nothing, but running on as its host does, until the host is reset
                    time.sleep(1)
            os._exit(0)
        return False

    def _orphaned(self, name: str, shared: bool, expected: tuple[int, int]) -> NoReturn:
        """Keep using the lease with no daemon behind it, checking nobody else writes, until killed."""
        self.history.record("orphaned", r=name, m="SH" if shared else "EX")
        index = self.config.data_blocks[name]
        while True:
            time.sleep(0.2)
            seen = self.counters.read(index)
            if seen != expected:
                detail = f"{name}: counter {seen} while holding it (orphaned), expected {expected}"
                self.history.record("violation", r=name, what="devcount", detail=detail)
                os._exit(1)
            if not shared:
                expected = (seen[0] + 1, self.pid)
                self.counters.write(index, *expected)
                self.history.record("devcount", r=name, n=expected[0])

    def _acquire(
        self, registration: Registration, name: str, path: str, offset: int, shared: bool, persistent: bool
    ) -> bool:
        """Acquire; a persistent acquire also adopts the lease if an exited process left it as an orphan."""
        mode = "SH" if shared else "EX"
        self.history.record("acquire", r=name, m=mode, persistent=persistent)
        disks = [(path, offset)]
        try:
            if persistent:
                lease = registration.acquire(self.config.lockspace, name, disks, persistent=True, orphan=True)
            else:
                lease = registration.acquire(self.config.lockspace, name, disks, shared=shared)
        except SanlockError as exc:
            self._gone(registration, exc)
            self.history.record("acquire_failed", r=name, m=mode, rc=exc.rc)
            return False
        self.history.record("held", r=name, m=mode, lver=lease.lver)
        return True

    def _holds(self, registration: Registration, name: str) -> bool:
        try:
            held = registration.inquire()
        except SanlockError as exc:
            self._gone(registration, exc)
            return True  # could not ask: no evidence either way
        return any(lease.resource == name.encode() for lease in held)

    def _hold(self, registration: Registration, name: str, shared: bool) -> None:
        index = self.config.data_blocks[name]
        before = self.counters.read(index)
        expected = before
        if not shared:
            expected = (before[0] + 1, self.pid)
            self.counters.write(index, *expected)
            self.history.record("devcount", r=name, n=expected[0])
        self.holding = (name, shared, expected)
        time.sleep(self.rng.uniform(0, self.config.hold_max))
        ask = self.rng.random() < 0.3 or self.config.hold_when_orphaned  # orphaned: find out while holding
        if ask and not self._holds(registration, name):
            self.holding = None
            self.history.record("lost", r=name)
            return
        after = self.counters.read(index)
        if after != expected:
            what = "shared" if shared else "exclusive"
            detail = f"{name}: counter {after} while holding {what}, expected {expected}"
            self.history.record("violation", r=name, what="devcount", detail=detail)

    def _release(self, registration: Registration, name: str) -> None:
        self.holding = None  # its use ends here: a release that fails does not resume it
        for attempt in range(10):
            self.history.record("releasing", r=name)
            try:
                registration.release(self.config.lockspace, name)
            except SanlockError as exc:
                self._gone(registration, exc)
                self.history.record("released", r=name, rc=exc.rc)
                if not self._holds(registration, name):
                    self.history.record("lost", r=name)
                    return
                time.sleep(0.05 * (attempt + 1))
                continue
            self.history.record("released", r=name, rc=0)
            return
        # Still held after ten tries: closing the registration lets the daemon release it.
        self.history.record("vanish", r=name, detail="release kept failing; closing the registration")
        os._exit(1)

    # -- rogue modes

    def _interleave(self, registration: Registration, name: str, path: str, offset: int) -> None:
        """header_1, header_2, body_1, body_2 on our registered connection, as two unlocked threads send them.

        Neither call can change what we hold: the acquire names a resource
        outside the run's set and the release one we do not hold, so if the
        daemon misreads the stream the worst it may do is refuse them.  Then a
        well-formed inquire on the same connection must answer, listing our
        lease.  This bypasses the registration's lock on purpose.
        """
        ls = self.config.lockspace.encode()
        body_1 = Resource(ls, b"rogue-" + name.encode(), disks=(Disk(path, offset),)).encode() + Options().encode()
        header_1 = Header(Cmd.ACQUIRE, length=HEADER_SIZE + len(body_1), data=1, data2=TARGET_SELF).encode()
        body_2 = Resource(ls, b"rogue-nothing", num_disks=1).encode(with_disks=False)
        header_2 = Header(Cmd.RELEASE, length=HEADER_SIZE + len(body_2), data=1, data2=TARGET_SELF).encode()
        sock = socket.socket(fileno=os.dup(registration.fileno()))
        try:
            sock.settimeout(self.config.call_timeout)
            sock.sendall(header_1 + header_2 + body_1 + body_2)
            sock.sendall(Header(Cmd.INQUIRE, data2=TARGET_SELF).encode())
            replies = 0
            while True:
                reply = Header.decode(_recv_exactly(sock, HEADER_SIZE))
                payload = _recv_exactly(sock, reply.length - HEADER_SIZE)
                replies += 1
                if reply.cmd == Cmd.INQUIRE:
                    break
        except OSError as exc:
            if not self._daemon_answers():
                self.history.record("daemon_gone", detail=f"while interleaving: {exc}")
                os._exit(0)
            self.history.record("violation", r=name, what="stream", detail=f"connection lost after interleaving: {exc}")
            os._exit(1)
        finally:
            sock.close()
        names = [r.name.decode() for r in parse_state(payload.decode())] if payload.strip(b"\0") else []
        if reply.result != 0 or name not in names:
            self.history.record("lost", r=name, detail=f"after interleaving: inquire {reply.result} {names}")
            return
        self.history.record("interleaved", r=name, replies=replies)

    def _daemon_answers(self) -> bool:
        """Whether the daemon itself is there (a lost connection is a finding only if it is)."""
        try:
            Client(self.config.run_dir, timeout=5).version()
        except (SanlockError, OSError):
            return False
        return True

    def _vanish(self, registration: Registration) -> None:
        """Send half a header, then die: the daemon must release what we held."""
        self.history.record("vanish")
        os.write(registration.fileno(), Header(Cmd.INQUIRE, data2=TARGET_SELF).encode()[: HEADER_SIZE // 2])
        os._exit(0)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError(errno.ECONNRESET, f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return Worker(WorkerConfig.from_json(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
