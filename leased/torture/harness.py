"""The torture run: hosts, workers and faults on one lockspace, then the checker's verdict.

A *host* is one daemon (leased, or real sanlock when asked for) with its own
run directory and host id, plus the worker processes registered with it.
All hosts share one lease file or device.  For the whole run the harness
keeps ``clients`` workers alive per host, and injects faults at random:

=====================  ======================================================
``client_kill``        SIGKILL a worker (it may hold leases)
``client_stop``        SIGSTOP a worker for up to 3N, then SIGCONT
``daemon_stop``        SIGSTOP a daemon for up to 3N (less than the 8N after
                       which it fails), then SIGCONT
``daemon_kill``        SIGKILL a daemon; its workers are SIGKILLed at once, as
                       the watchdog of a real host would reset it; restart it
                       and rejoin
``storage_eio``        reads and writes of one host fail with EIO (faultfs)
                       for 1N..12N: past 8N its daemon must fence its workers
``storage_stall``      the same host's I/O hangs past io_timeout, then fails
``rogue_interleave``   a worker sends two calls unserialized on its
                       connection; its lease and connection must survive
``rogue_vanish``       a worker exits half way through a message
=====================  ======================================================

and leased daemons run with fault points armed (``--faultpoints``, through
:mod:`leased.torture.armed_daemon`) so that acquire, release and ownership
moves fail with MemoryError at their prepare points.

About ``daemon_kill``: without a watchdog nothing stops the workers of a dead
daemon, so the harness plays the watchdog and kills them.  Killing them at
once is the earliest a watchdog could fire; the latest (8N + W after the last
renewal) is what host_dead_seconds already allows for.

At the end faults stop, every host is brought back, workers finish their
current lease and exit, and every resource must be acquirable afresh (the
``final`` records).  Then :mod:`leased.torture.checker` reads the history.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from leased import delta_lease, paxos_lease
from leased.client import Client, Registration, SanlockError
from leased.geometry import Geometry, legacy_geometry
from leased.storage import FileStorage
from leased.timeouts import host_dead_seconds
from leased.torture.checker import Report, check
from leased.torture.faultfs import FaultFS, FaultFSUnavailable, Mode, fault_fs
from leased.torture.history import History, read_history
from leased.torture.local_daemons import SANLOCK_DAEMON_ENV, leased_daemon_argv, sanlock_binary, sanlock_daemon_argv
from leased.torture.worker import BLOCK, WorkerConfig

log = logging.getLogger(__name__)

LOCKSPACE = "TORTURE"

CLIENT_FAULTS = ("client_kill", "client_stop")
DAEMON_FAULTS = ("daemon_stop", "daemon_kill")
STORAGE_FAULTS = ("storage_eio", "storage_stall")
ROGUE_FAULTS = ("rogue_interleave", "rogue_vanish")
ALL_FAULTS = CLIENT_FAULTS + DAEMON_FAULTS + STORAGE_FAULTS + ROGUE_FAULTS

DEFAULT_FAULTPOINTS = "acquire.prepare=0.02,acquire.commit=0.01,release.prepare=0.02,orphan.move=0.02"


class TortureError(RuntimeError):
    """The run could not be set up or brought to an end (not a violation: those are in the report)."""


@dataclass
class Options:
    workdir: Path
    duration: float = 120.0
    leased_hosts: int = 2
    sanlock_hosts: int = 1
    clients: int = 2
    resources: int = 4
    io_timeout: int = 1
    watchdog_fire_timeout: int | None = None
    """None: 60 when real sanlock takes part (its fixed value, which every host must share), else 5."""
    fault_interval: float = 3.0
    faults: tuple[str, ...] = ALL_FAULTS
    device: str | None = None
    """Use this file or block device (its content is destroyed) instead of a file in ``workdir``."""
    seed: int | None = None
    faultpoints: str = DEFAULT_FAULTPOINTS
    hold_max: float = 0.05
    sh_fraction: float = 0.3
    persistent_fraction: float = 0.2

    @property
    def wft(self) -> int:
        if self.watchdog_fire_timeout is not None:
            return self.watchdog_fire_timeout
        return 60 if self.sanlock_hosts else 5


@dataclass
class Host:
    index: int
    kind: str
    """``leased`` or ``sanlock``."""
    name: str
    host_id: int
    run_dir: Path
    lease_path: str
    """The lease file or device as this host sees it (through faultfs for the faulty host)."""
    log_path: Path
    process: trio.Process | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    """Set while the daemon runs and has the lockspace; replaced by a fresh one when it goes."""
    lock: trio.Lock = field(default_factory=trio.Lock)
    """Held by whoever takes the host down or brings it back, so only one does at a time."""
    workers: dict[int, trio.Process] = field(default_factory=dict)
    stopped: bool = False
    fs: FaultFS | None = None
    """This host's own passthrough mount of the shared backing file, when faultfs runs here."""
    faulty_storage: bool = False

    def client(self, timeout: float = 30) -> Client:
        return Client(self.run_dir, timeout=timeout)

    def not_ready(self) -> None:
        if self.ready.is_set():
            self.ready = trio.Event()


class Torture:
    def __init__(self, options: Options, mounts: list[FaultFS], lease_path: Path, data_path: Path) -> None:
        self.options = options
        self.mounts = mounts
        self.lease_path = lease_path
        self.data_path = data_path
        self.seed = options.seed if options.seed is not None else random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.history = History(options.workdir / "history.jsonl")
        self.ending = False
        self.interrupted = 0
        self.fault_ids = 0
        self.resources: list[tuple[str, int]] = []
        self.hosts = self._hosts()

    # -- set-up

    def _hosts(self) -> list[Host]:
        o = self.options
        kinds = ["leased"] * o.leased_hosts + ["sanlock"] * o.sanlock_hosts
        hosts = []
        for index, kind in enumerate(kinds):
            name = f"{kind}-{index + 1}"
            fs = self.mounts[index] if self.mounts else None
            path = str(fs.mountpoint / self.lease_path.name) if fs else str(self.lease_path)
            home = o.workdir / name
            home.mkdir(parents=True, exist_ok=True)
            host = Host(index, kind, name, index + 1, home / "run", path, home / "daemon.log", fs=fs)
            host.faulty_storage = fs is not None and index == 0 and kind == "leased"
            hosts.append(host)
        return hosts

    async def init_storage(self) -> None:
        """A fresh lockspace and resources R0..Rn-1, one align area each, and zeroed counter blocks."""
        storage = FileStorage(self.hosts[0].lease_path)
        try:
            geometry: Geometry = legacy_geometry(storage.logical_sector_size())
            await delta_lease.init_lockspace(storage, 0, LOCKSPACE, geometry, self.options.io_timeout)
            for i in range(self.options.resources):
                offset = (i + 1) * geometry.align_size
                await paxos_lease.init_resource(storage, offset, LOCKSPACE, f"R{i}", geometry)
                self.resources.append((f"R{i}", offset))
        finally:
            storage.close()
        with self.data_path.open("wb") as f:
            f.truncate(BLOCK * self.options.resources)

    # -- daemons

    async def start_daemon(self, host: Host) -> None:
        host.run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, SANLOCK_RUN_DIR=str(host.run_dir))
        if host.kind == "leased":
            argv = leased_daemon_argv(
                host.name, watchdog_fire_timeout=self.options.wft, faultpoints=self.options.faultpoints
            )
        else:
            binary = sanlock_binary()
            if binary is None:
                raise TortureError("sanlock hosts asked for, but no sanlock binary (apt-get install sanlock)")
            argv = sanlock_daemon_argv(binary, host.name)
            env.update(SANLOCK_DAEMON_ENV)
        with host.log_path.open("ab") as log_file:
            host.process = await trio.lowlevel.open_process(
                argv, env=env, stdin=None, stdout=log_file, stderr=log_file, start_new_session=True
            )
        host.stopped = False
        with trio.fail_after(30):
            while True:
                if host.process.returncode is not None:
                    status = host.process.returncode
                    raise TortureError(f"{host.name}: daemon exited with {status}; see {host.log_path}")
                try:
                    await trio.to_thread.run_sync(lambda: host.client(timeout=2).version())
                    break
                except (SanlockError, OSError):
                    await trio.sleep(0.05)

    async def join(self, host: Host) -> None:
        """Add the lockspace and wait until the daemon holds its host id; then workers may run."""
        client = host.client(timeout=host_dead_seconds(self.options.io_timeout, self.options.wft) + 120)
        await trio.to_thread.run_sync(
            lambda: client.add_lockspace(
                LOCKSPACE, host.host_id, host.lease_path, 0, io_timeout=self.options.io_timeout, wait=True
            )
        )
        host.ready.set()

    async def stop_daemon(self, host: Host) -> None:
        process = host.process
        if process is None:
            return
        if host.stopped:
            process.send_signal(signal.SIGCONT)
            host.stopped = False
        if process.returncode is None:
            with contextlib.suppress(SanlockError, OSError):
                await trio.to_thread.run_sync(lambda: host.client(timeout=30).shutdown(force=True, wait=True))
            with trio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        host.process = None

    # -- workers

    def worker_config(self, host: Host, mode: str, iterations: int = 0) -> WorkerConfig:
        return WorkerConfig(
            run_dir=str(host.run_dir),
            history=str(self.history.path),
            host=host.name,
            lockspace=LOCKSPACE,
            resources=[(name, host.lease_path, offset) for name, offset in self.resources],
            data_path=str(self.data_path),
            data_blocks={name: i for i, (name, _) in enumerate(self.resources)},
            seed=self.rng.randrange(1 << 32),
            mode=mode,
            sh_fraction=self.options.sh_fraction,
            persistent_fraction=self.options.persistent_fraction if host.kind == "leased" else 0.0,
            hold_max=self.options.hold_max,
            iterations=iterations,
        )

    async def run_worker(self, host: Host, mode: str = "normal", iterations: int = 0) -> None:
        config = self.worker_config(host, mode, iterations)
        argv = [sys.executable, "-m", "leased.torture.worker", config.to_json()]
        log_path = self.options.workdir / host.name / "workers.log"
        with log_path.open("ab") as log_file:
            process = await trio.lowlevel.open_process(argv, stdin=None, stdout=log_file, stderr=log_file)
        host.workers[process.pid] = process
        try:
            status = await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    self.history.record("client_kill", pid=process.pid, why="harness ending")
                    process.kill()
                    status = await process.wait()
                host.workers.pop(process.pid, None)
                self.history.record("client_exit", pid=process.pid, status=status, target=host.name)

    async def worker_slot(self, host: Host) -> None:
        """Keep one worker running on ``host`` for as long as the run lasts."""
        while not self.ending:
            await host.ready.wait()
            if self.ending:
                return
            await self.run_worker(host)
            await trio.sleep(0.05)

    # -- faults

    def _next_fault_id(self) -> int:
        self.fault_ids += 1
        return self.fault_ids

    def _applicable(self, kind: str) -> list[Host]:
        up = [h for h in self.hosts if h.ready.is_set() and not h.lock.locked() and not h.stopped]
        if kind in CLIENT_FAULTS:
            return [h for h in up if h.workers]
        if kind in STORAGE_FAULTS:
            return [h for h in up if h.faulty_storage]
        if kind in ROGUE_FAULTS:
            return [h for h in up if h.kind == "leased"]
        return up

    async def fault_loop(self) -> None:
        """Faults at random intervals (mean ``fault_interval``), every kind once per round in random order.

        Rounds rather than independent draws, so that a short run still
        injects every kind: a kind that cannot apply right now (no host up
        for it) is skipped for this round.
        """
        async with trio.open_nursery() as nursery:
            while True:
                kinds = list(self.options.faults)
                self.rng.shuffle(kinds)
                if not kinds:
                    return
                for kind in kinds:
                    await trio.sleep(self.rng.expovariate(1 / self.options.fault_interval))
                    hosts = self._applicable(kind)
                    if hosts:
                        nursery.start_soon(getattr(self, f"fault_{kind}"), self.rng.choice(hosts))

    async def fault_client_kill(self, host: Host) -> None:
        if not host.workers:
            return
        pid, process = self.rng.choice(list(host.workers.items()))
        self.history.record("fault", kind="client_kill", target=host.name, pid=pid)
        self.history.record("client_kill", pid=pid, why="fault")
        process.kill()

    async def fault_client_stop(self, host: Host) -> None:
        if not host.workers:
            return
        pid, process = self.rng.choice(list(host.workers.items()))
        fault = self._next_fault_id()
        self.history.record("fault", kind="client_stop", target=host.name, pid=pid, id=fault)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGSTOP)
        try:
            await trio.sleep(self.rng.uniform(0.1, 3 * self.options.io_timeout))
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
            self.history.record("heal", kind="client_stop", target=host.name, id=fault)

    async def fault_daemon_stop(self, host: Host) -> None:
        async with host.lock:
            if host.process is None or not host.ready.is_set():
                return
            fault = self._next_fault_id()
            self.history.record("fault", kind="daemon_stop", target=host.name, id=fault)
            host.process.send_signal(signal.SIGSTOP)
            host.stopped = True
            try:
                await trio.sleep(self.rng.uniform(0.5, 3 * self.options.io_timeout))
            finally:
                if host.process is not None:
                    host.process.send_signal(signal.SIGCONT)
                host.stopped = False
                self.history.record("heal", kind="daemon_stop", target=host.name, id=fault)

    async def fault_daemon_kill(self, host: Host) -> None:
        async with host.lock:
            if host.process is None or not host.ready.is_set():
                return
            fault = self._next_fault_id()
            self.history.record("fault", kind="daemon_kill", target=host.name, id=fault)
            host.not_ready()
            host.process.kill()
            # The watchdog's reset: nothing of this host runs on.
            self.history.record("host_down", target=host.name)
            for pid, worker in list(host.workers.items()):
                self.history.record("client_kill", pid=pid, why="watchdog reset")
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
            with trio.CancelScope(shield=True):
                await host.process.wait()
                host.process = None
                await trio.sleep(self.rng.uniform(0.5, 3))
                await self.start_daemon(host)
                await self._rejoin(host)
                self.history.record("heal", kind="daemon_kill", target=host.name, id=fault)

    async def _storage_fault(self, host: Host, kind: str, mode: Mode) -> None:
        fs = host.fs
        if fs is None:
            return
        async with host.lock:
            fault = self._next_fault_id()
            duration = self.rng.uniform(1, 12) * self.options.io_timeout
            self.history.record("fault", kind=kind, target=host.name, id=fault, seconds=round(duration, 2))
            await trio.to_thread.run_sync(lambda: fs.set(read=mode, write=mode))
            try:
                await trio.sleep(duration)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: fs.heal(fail_stalled=True))
                    self.history.record("heal", kind=kind, target=host.name, id=fault)

    async def fault_storage_eio(self, host: Host) -> None:
        await self._storage_fault(host, "storage_eio", "eio")

    async def fault_storage_stall(self, host: Host) -> None:
        await self._storage_fault(host, "storage_stall", "stall")

    async def fault_rogue_interleave(self, host: Host) -> None:
        self.history.record("fault", kind="rogue_interleave", target=host.name)
        await self.run_worker(host, "interleave", iterations=3)

    async def fault_rogue_vanish(self, host: Host) -> None:
        self.history.record("fault", kind="rogue_vanish", target=host.name)
        await self.run_worker(host, "vanish", iterations=1)

    # -- the lockspace watch

    async def watch_lockspaces(self) -> None:
        """A host whose daemon dropped the lockspace (renewal failed) is told to rejoin it."""
        while True:
            await trio.sleep(1)
            for host in self.hosts:
                if host.lock.locked() or host.stopped or host.process is None or not host.ready.is_set():
                    continue
                try:
                    if await self._has_lockspace(host):
                        continue
                except (SanlockError, OSError):
                    continue
                async with host.lock:
                    host.not_ready()
                    self.history.record("lockspace_lost", target=host.name)
                    await self._rejoin(host)

    async def _has_lockspace(self, host: Host) -> bool:
        spaces = await trio.to_thread.run_sync(host.client(timeout=30).get_lockspaces)
        return any(s.name == LOCKSPACE.encode() and not s.removing for s in spaces)

    async def _rejoin(self, host: Host) -> None:
        """Join until it works: a join can fail for a while (its storage was just failing, or the host id
        lease of its previous life is still being released); the lockspace may also already be back."""
        while True:
            try:
                await self.join(host)
                return
            except SanlockError as exc:
                if exc.rc == -errno.EEXIST and await self._has_lockspace(host):
                    host.ready.set()
                    return
                log.warning("%s: join failed (%s); retrying", host.name, exc)
                await trio.sleep(1)

    # -- the end

    async def finish(self) -> None:
        self.ending = True
        for host in self.hosts:
            async with host.lock:
                if host.process is None:
                    await self.start_daemon(host)
                if host.ready.is_set() and not await self._has_lockspace(host):
                    host.not_ready()
                    self.history.record("lockspace_lost", target=host.name)
                if not host.ready.is_set():
                    await self._rejoin(host)
        for host in self.hosts:
            for process in list(host.workers.values()):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGUSR1)
        with trio.move_on_after(60):
            while any(h.workers for h in self.hosts):
                await trio.sleep(0.1)

    async def final_check(self) -> None:
        """Every resource must be free for a new owner, at most host_dead_seconds after the last fault."""
        for other in self.hosts:
            if other.kind == "leased":
                await self._release_orphans(other)
        host = self.hosts[0]
        limit = host_dead_seconds(self.options.io_timeout, self.options.wft) + 30
        registration = await trio.to_thread.run_sync(lambda: host.client(timeout=limit + 30).register())
        try:
            for name, offset in self.resources:
                free = False
                with trio.move_on_after(limit):
                    while not free:
                        try:
                            await trio.to_thread.run_sync(
                                partial(registration.acquire, LOCKSPACE, name, [(host.lease_path, offset)])
                            )
                            free = True
                        except SanlockError:
                            await trio.sleep(0.5)
                self.history.record("final", r=name, free=free)
                if free:
                    await release_retrying(registration, LOCKSPACE, name)
        finally:
            registration.close()

    async def _release_orphans(self, host: Host) -> None:
        """Persistent leases of workers that died and were never adopted: let them go, and count them."""
        registration = await trio.to_thread.run_sync(host.client(timeout=60).register)
        try:
            count = await trio.to_thread.run_sync(registration.release_orphans, LOCKSPACE)
        finally:
            registration.close()
        self.history.record("orphans_released", target=host.name, count=count)

    async def run(self) -> None:
        """The whole run; SIGTERM or SIGHUP end it early, still stopping every daemon, worker and mount."""
        async with trio.open_nursery() as outer:
            work = trio.CancelScope()
            outer.start_soon(self._stop_on_signals, work)
            with work:
                await self._run()
            outer.cancel_scope.cancel()
        if self.interrupted:
            raise TortureError(f"interrupted by signal {self.interrupted}; history so far in {self.history.path}")

    async def _stop_on_signals(self, scope: trio.CancelScope) -> None:
        # Keeps receiving until the run is over: a second signal (timeout(1), a shell and a
        # process group all sending one) must not kill the harness half way through its clean-up.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                self.interrupted = self.interrupted or signum
                scope.cancel()

    async def _run(self) -> None:
        await self.init_storage()
        self.history.record("run", seed=self.seed, options=_jsonable(self.options))
        try:
            for host in self.hosts:
                await self.start_daemon(host)
            failures: list[str] = []

            async def first_join(host: Host) -> None:
                try:
                    await self.join(host)
                except SanlockError as exc:
                    failures.append(f"{host.name}: {exc}")

            async with trio.open_nursery() as nursery:
                for host in self.hosts:
                    nursery.start_soon(first_join, host)
            if failures:
                raise TortureError(f"could not join the lockspace: {'; '.join(failures)}")
            async with trio.open_nursery() as nursery:
                for host in self.hosts:
                    for _ in range(self.options.clients):
                        nursery.start_soon(self.worker_slot, host)
                async with trio.open_nursery() as faults:
                    faults.start_soon(self.fault_loop)
                    faults.start_soon(self.watch_lockspaces)
                    await trio.sleep(self.options.duration)
                    faults.cancel_scope.cancel()
                await self.finish()
                nursery.cancel_scope.cancel()
            await self.final_check()
        finally:
            with trio.CancelScope(shield=True):
                for host in self.hosts:
                    if host.workers:  # an interrupted run: what its workers see now is the shutdown
                        self.history.record("host_down", target=host.name)
                    for process in list(host.workers.values()):
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                    await self.stop_daemon(host)
                self.history.close()


def _jsonable(options: Options) -> dict[str, object]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}


@contextlib.contextmanager
def storage_for(options: Options) -> Iterator[tuple[list[FaultFS], Path]]:
    """The lease file, and when storage faults are asked for, one faultfs mount of it per host.

    Every host goes through a mount of its own, not only the faulty one:
    the filesystem does buffered I/O on the backing file, and a host doing
    ``O_DIRECT`` on that same file beside it collides with the page cache
    (the kernel then fails direct writes with EIO and warns of corruption).
    With one mount per host all I/O on the backing file is buffered, and
    coherent; each mount still passes ``O_DIRECT`` semantics to its host.
    """
    workdir = options.workdir
    if options.device is not None:
        yield [], Path(options.device)
        return
    backing = workdir / "backing"
    backing.mkdir(parents=True, exist_ok=True)
    path = backing / "leases"
    _new_lease_file(path, options)
    wants_fs = any(f in STORAGE_FAULTS for f in options.faults) and options.leased_hosts > 0
    if wants_fs:
        try:
            with contextlib.ExitStack() as stack:
                mounts = []
                for index in range(options.leased_hosts + options.sanlock_hosts):
                    top = workdir / f"fs-{index + 1}"
                    top.mkdir(parents=True, exist_ok=True)
                    if not (top / "backing").exists():
                        (top / "backing").symlink_to(backing)
                    mounts.append(stack.enter_context(fault_fs(top)))
                yield mounts, path
                return
        except FaultFSUnavailable as exc:
            log.warning("storage faults disabled: %s", exc)
    yield [], path


def _new_lease_file(path: Path, options: Options) -> None:
    with path.open("wb") as f:
        f.truncate((options.resources + 1) * 8 * 1024 * 1024)


def run_torture(options: Options) -> Report:
    """Run, check, write ``report.txt`` and ``report.json`` to the work directory; return the report."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    history_path = options.workdir / "history.jsonl"
    if history_path.exists():
        history_path.unlink()
    with storage_for(options) as (mounts, lease_path):
        if not mounts:
            options.faults = tuple(f for f in options.faults if f not in STORAGE_FAULTS)
        torture = Torture(options, mounts, lease_path, options.workdir / "counters")
        trio.run(torture.run)
    report = check(read_history(history_path))
    (options.workdir / "report.txt").write_text(f"seed: {torture.seed}\n" + report.text())
    summary = {
        "seed": torture.seed,
        "passed": report.passed,
        "duration": report.duration,
        "operations": dict(report.operations),
        "acquired_by_host": dict(report.acquired_by_host),
        "faults": dict(report.faults),
        "violations": [v.__dict__ for v in report.violations],
    }
    (options.workdir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return report


async def release_retrying(registration: Registration, lockspace: str, name: str, limit: float = 60) -> None:
    """Release a lease the final check took, retrying what the armed fault points inject.

    The leased hosts still run with their fault points armed, so a release
    can answer -ENOMEM (it left the lease held, by the prepare-then-commit
    rule): that is the injected fault working, not a finding, and the
    check must not end on it.  Any other failure is retried the same way
    for ``limit`` seconds, then reported.
    """
    deadline = trio.current_time() + limit
    while True:
        try:
            await trio.to_thread.run_sync(registration.release, lockspace, name)
            return
        except SanlockError as exc:
            if trio.current_time() > deadline:
                raise TortureError(f"final check: release of {name} failed for {limit} s: {exc}") from exc
            log.info("final check: release of %s answered %s; retrying", name, exc)
            await trio.sleep(0.2)
