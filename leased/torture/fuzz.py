"""``leased torture --fuzz``: hostile and broken clients against a daemon while a victim holds leases.

The rule this checks is the project's reason to exist: no input from any
client may crash the daemon, close another connection, or make it release
a lease whose holder still runs.  So a run sets up two lockspaces on files
of its own: VICTIM, where this process (the victim) registers and holds two
exclusive leases for the whole run, and FUZZ, which the fuzz workers may do
anything to.  Then worker processes, each dropped to uid ``nobody`` when
run as root (a hostile local process is not root; the daemon's socket
group is kept so it can connect), open many connections at once and send
the streams of :mod:`leased.torture.fuzz_messages`: mutated and random
messages, registered clients acquiring and releasing FUZZ leases, peers
that close right after sending, vanish mid-message, trickle, flood, or are
SIGKILLed with everything open (the coordinator kills a random worker
every ``kill_interval`` and starts a fresh one).

Every ``check_interval`` and at the end the coordinator checks: the daemon
process lives and answers; the victim's leases are held by its own
inquire and on disk (leader owner = its host id, read from the file, not
asked of the daemon); the daemon's fds and RSS (from /proc, its pid from
SO_PEERCRED) are sampled.  At the end, after the workers are gone, the
fds must come back near where they started.  The same run works against
real sanlock (``--daemon sanlock``), for comparison, or against a daemon
already running (``--run-dir``), which only gains the two lockspaces.

Worker streams are derived from ``--seed`` and the worker's index, so a
finding can be replayed; their interleaving is not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from leased import paxos_lease
from leased.client import Client, Registration, SanlockError, socket_path
from leased.storage import FileStorage
from leased.torture.fuzz_messages import (
    MessageFactory,
    SessionPlan,
    Vocabulary,
    protected_lockspace,
    protected_path,
)
from leased.torture.local_daemons import SANLOCK_DAEMON_ENV, leased_daemon_argv, sanlock_binary, sanlock_daemon_argv

MiB = 1 << 20
VICTIM = b"VICTIM"
VICTIM_RESOURCES = (b"V1", b"V2")
FUZZ = b"FUZZ"
FUZZ_LOCKSPACES = (FUZZ, b"FUZZ2")
FUZZ_RESOURCES = (b"F0", b"F1", b"F2", b"F3")
NOBODY = 65534


class FuzzError(Exception):
    """The run could not be set up (no daemon, no storage): not a verdict."""


# --------------------------------------------------------------------------
# Worker: one process, many connections, no threads


@dataclass
class WorkerCounts:
    sessions: int = 0
    registered: int = 0
    messages: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    vanished: int = 0
    """Connections closed half way through a message."""
    refused: int = 0
    """Connects that failed (backlog full, daemon at its connection limit)."""
    reset: int = 0
    """Connections the daemon closed or reset (a refused REGISTER past the limit, a flood cut off)."""


@dataclass
class _Open:
    sock: socket.socket
    plan: SessionPlan
    sent: int = 0
    close_at: float | None = None


@dataclass(frozen=True)
class WorkerSpec:
    socket_path: str
    seed: int
    vocabulary: Vocabulary
    max_open: int = 24
    flood_bytes: int = 4 * MiB


def run_worker(spec: WorkerSpec, report: Callable[[WorkerCounts], object], stop: list[bool]) -> WorkerCounts:
    """Keep up to ``max_open`` connections busy with planned streams until ``stop[0]``."""
    factory = MessageFactory(random.Random(spec.seed), spec.vocabulary, flood_bytes=spec.flood_bytes)
    rng = random.Random(spec.seed ^ 0x5EED)
    counts = WorkerCounts()
    selector = selectors.DefaultSelector()
    open_: list[_Open] = []
    last_report = 0.0

    def close(conn: _Open) -> None:
        if conn.sent < len(conn.plan.stream):
            counts.vanished += 1
        selector.unregister(conn.sock)
        conn.sock.close()
        open_.remove(conn)

    try:
        while not stop[0]:
            now = time.monotonic()
            while len(open_) < spec.max_open and rng.random() < 0.5:
                plan = factory.session()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(spec.socket_path)
                except (BlockingIOError, OSError):
                    sock.close()
                    counts.refused += 1
                    break
                if plan.cut_at is not None:
                    plan.stream = plan.stream[: plan.cut_at]
                conn = _Open(sock, plan)
                open_.append(conn)
                selector.register(sock, selectors.EVENT_READ, conn)
                counts.sessions += 1
                counts.messages += plan.messages
                counts.registered += plan.registered
            for key, _ in selector.select(timeout=0.005):
                conn = key.data
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    counts.reset += conn.sent < len(conn.plan.stream)
                    close(conn)
                else:
                    counts.bytes_received += len(data)
            for conn in list(open_):
                if conn.sent < len(conn.plan.stream):
                    if conn.plan.chunk < len(conn.plan.stream) and rng.random() < 0.7:
                        continue  # a trickle: some other connection goes first
                    piece = conn.plan.stream[conn.sent : conn.sent + conn.plan.chunk]
                    try:
                        conn.sent += conn.sock.send(piece)
                        counts.bytes_sent += len(piece)
                    except BlockingIOError:
                        continue  # the daemon is not reading this one right now: fine, later
                    except OSError:
                        counts.reset += 1
                        close(conn)
                        continue
                if conn.sent >= len(conn.plan.stream):
                    if conn.close_at is None:
                        conn.close_at = now + conn.plan.linger
                    elif now >= conn.close_at:
                        close(conn)
                elif rng.random() < 0.002:
                    close(conn)  # gone mid-stream, whatever it was doing
            if now - last_report > 0.25:
                report(counts)
                last_report = now
    finally:
        for conn in list(open_):
            close(conn)
        report(counts)
    return counts


def _drop_privileges(socket_file: str) -> str:
    """Become ``nobody``, keeping the socket's group: a hostile local process, not root.

    Returns the path to connect to from then on.  The run directory may sit
    below directories ``nobody`` cannot search (pytest's are 0700), so it is
    opened first (O_PATH) and reached through ``/proc/self/fd``; the socket's
    own mode and group still decide, as for any local process.
    """
    if os.getuid() != 0:
        return socket_file
    group = os.stat(socket_file).st_gid
    directory = os.open(os.path.dirname(socket_file) or ".", os.O_PATH | os.O_DIRECTORY)
    os.setgroups([group])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return f"/proc/self/fd/{directory}/{os.path.basename(socket_file)}"


def worker_main(argv: list[str]) -> int:
    """Entry point of a worker process: one JSON argument, counts as JSON lines on stdout."""
    raw = json.loads(argv[0])
    vocabulary = Vocabulary(
        lockspaces=tuple(bytes.fromhex(x) for x in raw["lockspaces"]),
        resources=tuple(bytes.fromhex(x) for x in raw["resources"]),
        path=raw["path"],
        host_id=raw["host_id"],
        protected_strings=tuple(bytes.fromhex(x) for x in raw["protected_strings"]),
        protected_pids=tuple(raw["protected_pids"]),
    )
    path = _drop_privileges(raw["socket_path"])
    spec = WorkerSpec(path, raw["seed"], vocabulary, raw["max_open"], raw["flood_bytes"])
    stop = [False]

    def on_term(_signo: int, _frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def report(counts: WorkerCounts) -> None:
        sys.stdout.write(json.dumps(asdict(counts)) + "\n")
        sys.stdout.flush()

    run_worker(spec, report, stop)
    return 0


# --------------------------------------------------------------------------
# Coordinator


@dataclass
class FuzzOptions:
    workdir: Path
    duration: float = 30.0
    seed: int = 1
    workers: int = 3
    max_open: int = 24
    kill_interval: float = 2.0
    check_interval: float = 1.0
    io_timeout: int = 1
    host_id: int = 1
    flood_bytes: int = 4 * MiB
    daemon: str = "leased"
    """``leased`` or ``sanlock``: start one in the workdir; ignored when ``run_dir`` is given."""
    run_dir: Path | None = None
    """Fuzz the daemon already listening here (it gains the VICTIM and FUZZ lockspaces)."""


@dataclass
class FuzzReport:
    daemon: str
    seed: int
    duration: float = 0.0
    sessions: int = 0
    registered: int = 0
    messages: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    vanished: int = 0
    refused: int = 0
    reset: int = 0
    workers_started: int = 0
    workers_killed: int = 0
    """SIGKILLed by the run, with all their connections open."""
    workers_fenced: int = 0
    """Killed by the daemon (the fuzz lockspace was removed or overwritten under their leases)."""
    checks: int = 0
    daemon_crashes: int = 0
    leases_lost: int = 0
    fds_before: int = 0
    fds_max: int = 0
    fds_after: int = 0
    rss_before_kib: int = 0
    rss_max_kib: int = 0
    rss_after_kib: int = 0
    fds_after_kinds: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def text(self) -> str:
        lines = [
            f"leased torture --fuzz against {self.daemon}: {'PASS' if self.passed else 'FAIL'}  (seed {self.seed})",
            f"  {self.duration:.0f} s, {self.messages} messages in {self.sessions} connections "
            f"({self.registered} registered, {self.vanished} vanished mid-message), "
            f"{self.bytes_sent / MiB:.1f} MiB sent, {self.bytes_received / MiB:.1f} MiB received",
            f"  connects refused {self.refused}, connections cut by the daemon {self.reset}",
            f"  workers started {self.workers_started}, SIGKILLed {self.workers_killed}, "
            f"killed by the daemon {self.workers_fenced}",
            f"  checks {self.checks}: daemon crashes {self.daemon_crashes}, leases lost {self.leases_lost}",
            f"  daemon fds {self.fds_before} -> max {self.fds_max} -> {self.fds_after}; "
            f"RSS {self.rss_before_kib / 1024:.1f} -> max {self.rss_max_kib / 1024:.1f} "
            f"-> {self.rss_after_kib / 1024:.1f} MiB",
            f"  daemon fds after: {self.fds_after_kinds}",
        ]
        lines += [f"  FAILED: {failure}" for failure in self.failures]
        return "\n".join(lines) + "\n"


def daemon_pid(run_dir: Path) -> int:
    """The pid of whatever listens on the run dir's socket (SO_PEERCRED works both ways)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(socket_path(run_dir))
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", raw)[0]
    return pid


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> str:
    """What a process's fds are, counted by kind (``socket``, ``anon_inode:[pidfd]``, a path): for a report."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kind = target.split(":[")[0] if target.startswith("socket:") else target
            kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda item: -item[1]))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def leader_owner(path: Path, offset: int, lockspace: bytes, name: bytes) -> int:
    """The host id owning a resource lease on disk (0 when free), read from the file itself."""

    async def read() -> int:
        storage = FileStorage(str(path))
        try:
            area = await paxos_lease.discover_resource(storage, offset, lockspace, name, 5)
            leader = await paxos_lease.read_leader(area, 0, 5)
            return leader.owner_id if leader.timestamp else 0
        finally:
            storage.close()

    return trio.run(read)


@contextlib.contextmanager
def own_daemon(kind: str, workdir: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A private daemon of ``kind`` in the workdir, stopped (then killed) at the end."""
    run_dir = workdir / f"{kind}-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SANLOCK_RUN_DIR": str(run_dir)}
    if kind == "leased":
        argv = leased_daemon_argv("fuzz-host")
    elif kind == "sanlock":
        binary = sanlock_binary()
        if binary is None:
            raise FuzzError("--daemon sanlock: no sanlock binary (apt-get install sanlock)")
        argv = sanlock_daemon_argv(binary, "fuzz-host")
        env.update(SANLOCK_DAEMON_ENV)
    else:
        raise FuzzError(f"unknown daemon kind {kind!r} (leased or sanlock)")
    with (workdir / f"{kind}-daemon.log").open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise FuzzError(f"{kind} daemon exited with {process.returncode} at start (see {log.name})")
            try:
                Client(run_dir, timeout=2).version()
                break
            except (SanlockError, OSError):
                if time.monotonic() > deadline:
                    raise FuzzError(f"{kind} daemon did not listen within 30 s") from None
                time.sleep(0.05)
        yield run_dir, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    counts_path: Path


class Fuzz:
    """One fuzz run against the daemon listening in ``run_dir``."""

    def __init__(self, options: FuzzOptions, run_dir: Path, process: subprocess.Popen[bytes] | None) -> None:
        self.options = options
        self.run_dir = run_dir
        self.process = process
        self.client = Client(run_dir, timeout=30)
        self.report = FuzzReport(options.daemon if options.run_dir is None else str(run_dir), options.seed)
        self.rng = random.Random(options.seed)
        self.workers: list[_Worker] = []
        self.finished: list[WorkerCounts] = []
        self.next_index = 0
        workdir = options.workdir
        (workdir / "victim").mkdir(parents=True, exist_ok=True)
        (workdir / "fuzz").mkdir(parents=True, exist_ok=True)
        self.victim_path = workdir / "victim" / "leases"
        self.fuzz_path = workdir / "fuzz" / "leases"
        self.pid = 0

    # -------------------------------------------------------------- setup

    def _lease_file(self, path: Path, lockspace: bytes, resources: tuple[bytes, ...]) -> None:
        with path.open("wb") as f:
            f.truncate((len(resources) + 1) * MiB)
        os.chmod(path, 0o666)  # the fuzz workers (nobody) may name it; the daemon opens it
        self.client.write_lockspace(lockspace, path, 0, io_timeout=self.options.io_timeout)
        for i, name in enumerate(resources):
            self.client.write_resource(lockspace, name, [(str(path), (i + 1) * MiB)])

    def setup(self) -> Registration:
        opts = self.options
        self._lease_file(self.victim_path, VICTIM, VICTIM_RESOURCES)
        self._lease_file(self.fuzz_path, FUZZ, FUZZ_RESOURCES)
        for name, path in ((VICTIM, self.victim_path), (FUZZ, self.fuzz_path)):
            self.client.add_lockspace(name, opts.host_id, path, 0, io_timeout=opts.io_timeout)
        victim = self.client.register()
        for i, name in enumerate(VICTIM_RESOURCES):
            victim.acquire(VICTIM, name, [(str(self.victim_path), (i + 1) * MiB)])
        self.pid = daemon_pid(self.run_dir)
        self.report.fds_before = self.report.fds_max = open_fds(self.pid)
        self.report.rss_before_kib = self.report.rss_max_kib = rss_kib(self.pid)
        return victim

    def vocabulary(self) -> Vocabulary:
        """What workers may name, and what they must never: the victim's and every existing lockspace."""
        protected = {protected_lockspace(VICTIM), protected_path(str(self.victim_path))}
        for info in self.client.get_lockspaces():
            if info.name not in FUZZ_LOCKSPACES:
                protected |= {protected_lockspace(info.name), protected_path(info.path)}
        return Vocabulary(
            lockspaces=FUZZ_LOCKSPACES,
            resources=FUZZ_RESOURCES,
            path=str(self.fuzz_path),
            host_id=self.options.host_id,
            protected_strings=tuple(sorted(protected)),
            protected_pids=(os.getpid(), self.pid),
        )

    # -------------------------------------------------------------- workers

    def start_worker(self, vocabulary: Vocabulary) -> None:
        index = self.next_index
        self.next_index += 1
        spec = {
            "socket_path": socket_path(self.run_dir),
            "seed": self.options.seed * 1_000_003 + index,
            "max_open": self.options.max_open,
            "flood_bytes": self.options.flood_bytes,
            "lockspaces": [x.hex() for x in vocabulary.lockspaces],
            "resources": [x.hex() for x in vocabulary.resources],
            "path": vocabulary.path,
            "host_id": vocabulary.host_id,
            "protected_strings": [x.hex() for x in vocabulary.protected_strings],
            "protected_pids": list(vocabulary.protected_pids),
        }
        counts_path = self.options.workdir / f"worker-{index}.jsonl"
        with counts_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "leased.torture.fuzz", json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
        self.workers.append(_Worker(index, process, counts_path))
        self.report.workers_started += 1

    def _collect(self, worker: _Worker) -> None:
        lines = [line for line in worker.counts_path.read_text().splitlines() if line.endswith("}")]
        if lines:
            self.finished.append(WorkerCounts(**json.loads(lines[-1])))
        self.workers.remove(worker)

    def _reap(self, vocabulary: Vocabulary) -> None:
        """Workers the daemon killed (fencing the fuzz lockspace): count them, start fresh ones."""
        for worker in list(self.workers):
            if worker.process.poll() is not None:
                self.report.workers_fenced += 1
                self._collect(worker)
                self.start_worker(vocabulary)

    def _kill_one(self, vocabulary: Vocabulary) -> None:
        worker = self.rng.choice(self.workers)
        worker.process.kill()
        worker.process.wait()
        self.report.workers_killed += 1
        self._collect(worker)
        self.start_worker(vocabulary)

    def _stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.terminate()
        for worker in list(self.workers):
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            self._collect(worker)

    # -------------------------------------------------------------- checks

    def check(self, victim: Registration) -> bool:
        """Daemon alive and answering, victim's leases held by its inquire and on disk; sample fds, RSS."""
        report = self.report
        report.checks += 1
        if self.process is not None and self.process.poll() is not None:
            report.daemon_crashes += 1
            report.failures.append(f"the daemon exited with {self.process.returncode}")
            return False
        try:
            self._answers()
            held = sorted(lease.resource for lease in victim.inquire())
        except (SanlockError, OSError) as exc:
            report.failures.append(f"the daemon or the victim's connection stopped answering: {exc}")
            report.daemon_crashes += self.process is not None and self.process.poll() is not None
            return False
        lost = [name for name in VICTIM_RESOURCES if name not in held]
        for i, name in enumerate(VICTIM_RESOURCES):
            owner = leader_owner(self.victim_path, (i + 1) * MiB, VICTIM, name)
            if owner != self.options.host_id and name not in lost:
                lost.append(name)
        if lost:
            report.leases_lost += len(lost)
            report.failures.append(f"the victim lost {b', '.join(lost).decode()} (inquire: {held})")
            return False
        report.fds_max = max(report.fds_max, open_fds(self.pid))
        report.rss_max_kib = max(report.rss_max_kib, rss_kib(self.pid))
        return True

    def _answers(self, patience: float = 30) -> None:
        """VERSION on a new connection, retried while the backlog is full (sanlock's is short).

        A connect refused with EAGAIN means the daemon is slow to accept
        under the flood, not that it died; only ``patience`` seconds of that
        count as not answering.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                self.client.version()
                return
            except (SanlockError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _keep_fuzz_lockspace(self) -> None:
        """Workers may remove FUZZ (that is allowed): add it back so leases can be taken again."""
        with contextlib.suppress(SanlockError, OSError):
            if FUZZ not in [info.name for info in self.client.get_lockspaces()]:
                self.client.add_lockspace(
                    FUZZ, self.options.host_id, self.fuzz_path, 0, io_timeout=self.options.io_timeout, wait=False
                )

    def settle_fds(self, bound: int, timeout: float = 30) -> int:
        """The daemon's fd count once closed connections are gone (polled up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            fds = open_fds(self.pid)
            if fds <= bound or time.monotonic() > deadline:
                return fds
            time.sleep(0.1)

    def run(self) -> FuzzReport:
        opts, report = self.options, self.report
        victim = self.setup()
        vocabulary = self.vocabulary()
        started = time.monotonic()
        try:
            for _ in range(opts.workers):
                self.start_worker(vocabulary)
            next_kill = started + opts.kill_interval
            next_check = started + opts.check_interval
            while time.monotonic() - started < opts.duration:
                now = time.monotonic()
                if now >= next_kill:
                    self._kill_one(vocabulary)
                    next_kill = now + opts.kill_interval
                if now >= next_check:
                    if not self.check(victim):
                        break
                    self._reap(vocabulary)
                    self._keep_fuzz_lockspace()
                    next_check = now + opts.check_interval
                time.sleep(0.05)
        finally:
            self._stop_workers()
        report.duration = time.monotonic() - started
        if report.passed:
            report.fds_after = self.settle_fds(report.fds_before + FD_SLACK)
            report.fds_after_kinds = fd_kinds(self.pid)
            self.check(victim)
            report.rss_after_kib = rss_kib(self.pid)
            if report.fds_after > report.fds_before + FD_SLACK:
                report.failures.append(
                    f"the daemon holds {report.fds_after} fds after the run, {report.fds_before} before"
                )
        for counts in self.finished:
            for name, value in asdict(counts).items():
                setattr(report, name, getattr(report, name) + value)
        if report.sessions == 0:
            report.failures.append("no worker could connect (see the workers' refused count): nothing was tested")
        with contextlib.suppress(SanlockError, OSError):
            victim.close()
        return report


FD_SLACK = 16
"""fds the daemon may hold after a run beyond those before: lockspaces the fuzzers joined, cached opens."""


def run_fuzz(options: FuzzOptions) -> FuzzReport:
    options.workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if options.run_dir is not None:
            run_dir, process = options.run_dir, None
        else:
            run_dir, process = stack.enter_context(own_daemon(options.daemon, options.workdir))
        try:
            report = Fuzz(options, run_dir, process).run()
        except (SanlockError, OSError) as exc:
            raise FuzzError(f"setting up the run failed: {exc}") from exc
    (options.workdir / "fuzz-report.txt").write_text(report.text())
    (options.workdir / "fuzz-report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError):
        sys.exit(worker_main(sys.argv[1:]))
    sys.exit(errno.EPIPE)
