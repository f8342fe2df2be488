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

The watchdog mode (``Options.watchdog``) stops playing: every host gets its
own real wdmd and its daemon runs with ``-w 1``.  ``daemon_kill`` then kills
the daemon only; its workers go on using the leases they hold
(``orphaned``).  Each host's :class:`~leased.torture.host_watchdog.HostWatchdog`
follows its wdmd's device through the model of the kernel timer and, when
the model says the host has been reset, resets it: whatever made the timer
fire (a killed daemon, a long stop, failing storage) is handled the same
way, and a daemon_kill whose reset never comes is a violation.  What a
reset does to the host's daemon and workers (SIGKILL at once, then a boot:
the daemon, the join, new workers) it asks of the harness through
:class:`~leased.torture.host_watchdog.HostRun`, which ``_HostRun`` here is.

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from leased import delta_lease, paxos_lease
from leased.client import Registration, SanlockError
from leased.geometry import Geometry, legacy_geometry
from leased.storage import FileStorage
from leased.timeouts import host_dead_seconds
from leased.torture.checker import Report, check
from leased.torture.faultfs import FaultFS, Mode
from leased.torture.history import History, read_history
from leased.torture.host_watchdog import HostWatchdog, Reset, reset_bound, resets_text
from leased.torture.hosts import (
    CLIENT_FAULTS,
    ROGUE_FAULTS,
    STORAGE_FAULTS,
    Host,
    Options,
    TortureError,
    make_hosts,
    storage_for,
)
from leased.torture.local_daemons import SANLOCK_DAEMON_ENV, leased_daemon_argv, sanlock_binary, sanlock_daemon_argv
from leased.torture.wdmd import ShimUnavailable, build_shim, wdmd_binary
from leased.torture.worker import BLOCK, WorkerConfig

log = logging.getLogger(__name__)

LOCKSPACE = "TORTURE"


class Torture:
    def __init__(
        self,
        options: Options,
        mounts: list[FaultFS],
        lease_path: Path,
        data_path: Path,
        shim_library: Path | None = None,
    ) -> None:
        self.options = options
        self.data_path = data_path
        self.seed = options.seed if options.seed is not None else random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.history = History(options.workdir / "history.jsonl")
        self.ending = False
        self.interrupted = 0
        self.fault_ids = 0
        self.resources: list[tuple[str, int]] = []
        self.resets: list[Reset] = []
        """Watchdog mode: one entry per modelled reset acted on (for the report)."""
        self.hosts = make_hosts(options, mounts, lease_path)
        self.watchdogs = self._watchdogs(shim_library)

    # -- set-up

    def _watchdogs(self, shim_library: Path | None) -> dict[str, HostWatchdog]:
        """Watchdog mode: each host's watchdog, by host name, sharing ``resets``; otherwise none."""
        if not self.options.watchdog:
            return {}
        if shim_library is None:
            raise TortureError("watchdog mode without the shim library")
        return {
            host.name: HostWatchdog.create(
                host.name,
                self.options.workdir / host.name / "wd",
                shim_library,
                self.history,
                self.options,
                self.resets,
            )
            for host in self.hosts
        }

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
        watchdog = self.watchdogs.get(host.name)
        if host.kind == "leased":
            argv = leased_daemon_argv(
                host.name,
                watchdog_fire_timeout=self.options.wft,
                faultpoints=self.options.faultpoints,
                use_watchdog=watchdog is not None,
            )
        else:
            binary = sanlock_binary()
            if binary is None:
                raise TortureError("sanlock hosts asked for, but no sanlock binary (apt-get install sanlock)")
            argv = sanlock_daemon_argv(binary, host.name, use_watchdog=watchdog is not None)
            env.update(SANLOCK_DAEMON_ENV)
        if watchdog is not None:
            await watchdog.start()
            env = watchdog.env(env)
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
        await trio.lowlevel.checkpoint()  # a reset while the thread ran cancels this join: no workers then
        host.ready.set()

    @contextlib.contextmanager
    def host_op(self, host: Host) -> Iterator[trio.CancelScope]:
        """Work on a host's daemon that a reset of the host ends (quietly: the host is booting anew)."""
        with trio.CancelScope() as scope:
            host.ops.add(scope)
            try:
                yield scope
            finally:
                host.ops.discard(scope)

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
            sh_fraction=self.options.sh_fraction_on(host),
            persistent_fraction=self.options.persistent_fraction if host.kind == "leased" else 0.0,
            hold_max=self.options.hold_max_on(host),
            iterations=iterations,
            hold_when_orphaned=self.options.watchdog,
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
        for it) is skipped for this round.  With ``fault_count`` it returns
        once that many faults were injected and are over; else never.
        """
        limit = self.options.fault_count
        injected = 0
        await self._workers_up()
        async with trio.open_nursery() as nursery:
            while self.options.faults and not (limit and injected >= limit):
                kinds = list(self.options.faults)
                self.rng.shuffle(kinds)
                for kind in kinds:
                    await trio.sleep(self.rng.expovariate(1 / self.options.fault_interval))
                    hosts = self._applicable(kind)
                    if hosts:
                        nursery.start_soon(getattr(self, f"fault_{kind}"), self.rng.choice(hosts))
                        injected += 1
                        if limit and injected >= limit:
                            break
        if not limit:
            await trio.sleep_forever()

    async def _workers_up(self, timeout: float = 60) -> None:
        """Wait until every host's worker slots have a worker that wrote its ``start`` record (bounded).

        A fault before the run is up tests little (a daemon killed before any
        worker ran takes no lease with it), and how soon workers start
        depends on the machine's load, which no run may depend on.
        """
        wanted = {host.name: self.options.clients_on(host) for host in self.hosts}
        path = self.history.path
        with trio.move_on_after(timeout):
            while True:
                started: dict[str, set[int]] = {}
                for record in await trio.to_thread.run_sync(lambda: list(read_history(path))):
                    if record["k"] == "start":
                        started.setdefault(record["h"], set()).add(record["p"])
                if all(len(started.get(name, ())) >= count for name, count in wanted.items()):
                    return
                await trio.sleep(0.1)
        log.warning("faults start before every worker is up (%d s)", timeout)

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
            watchdog = self.watchdogs.get(host.name)
            if watchdog is not None:
                # The daemon only: its workers run on, and its wdmd sees a client that stopped renewing.
                # The host's monitor resets it when the model says the watchdog fired; the fault heals then.
                host.process.kill()
                watchdog.daemon_killed(fault)
                with trio.CancelScope(shield=True):
                    await host.process.wait()
                host.process = None
                return
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
                await self.rejoin(host)
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
                    if self._rebooting(host) or host.process is None:
                        continue
                    host.not_ready()
                    self.history.record("lockspace_lost", target=host.name)
                    with self.host_op(host):
                        await self.rejoin(host)

    def _rebooting(self, host: Host) -> bool:
        watchdog = self.watchdogs.get(host.name)
        return watchdog is not None and watchdog.rebooting

    async def _has_lockspace(self, host: Host) -> bool:
        spaces = await trio.to_thread.run_sync(host.client(timeout=30).get_lockspaces)
        return any(s.name == LOCKSPACE.encode() and not s.removing for s in spaces)

    async def rejoin(self, host: Host) -> None:
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
            except OSError as exc:  # the daemon went (a watchdog reset); the reset's boot joins anew
                log.warning("%s: join failed (%s); retrying", host.name, exc)
                await trio.sleep(1)

    # -- the end

    async def finish(self) -> None:
        self.ending = True
        if self.watchdogs:
            # A host whose daemon was killed comes back only through its reset: wait for it (and its boot).
            with trio.move_on_after(reset_bound(self.options) + 120):
                while not all(watchdog.settled for watchdog in self.watchdogs.values()):
                    await trio.sleep(0.2)
        for host in self.hosts:
            async with host.lock:
                if host.process is None:
                    await self.start_daemon(host)
                if host.ready.is_set() and not await self._has_lockspace(host):
                    host.not_ready()
                    self.history.record("lockspace_lost", target=host.name)
                if not host.ready.is_set():
                    await self.rejoin(host)
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
        self.history.record("run", seed=self.seed, options=self.options.jsonable())
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
            async with trio.open_nursery() as monitors:
                for host in self.hosts:
                    if host.name in self.watchdogs:
                        monitors.start_soon(self.watchdogs[host.name].watch, _HostRun(self, host))
                await self._work()
                monitors.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for host in self.hosts:
                    if host.workers:  # an interrupted run: what its workers see now is the shutdown
                        self.history.record("host_down", target=host.name)
                    for process in list(host.workers.values()):
                        with contextlib.suppress(ProcessLookupError):
                            process.kill()
                    await self.stop_daemon(host)
                    if host.name in self.watchdogs:
                        await self.watchdogs[host.name].stop()
                self.history.close()

    async def _work(self) -> None:
        """Workers and faults for ``duration`` (or until ``fault_count`` faults are over), the end, the check."""
        async with trio.open_nursery() as nursery:
            for host in self.hosts:
                for _ in range(self.options.clients_on(host)):
                    nursery.start_soon(self.worker_slot, host)
            async with trio.open_nursery() as faults:
                faults.start_soon(self.watch_lockspaces)
                with trio.move_on_after(self.options.duration):
                    await self.fault_loop()
                faults.cancel_scope.cancel()
            await self.finish()
            nursery.cancel_scope.cancel()
        await self.final_check()


@dataclass(eq=False)
class _HostRun:
    """One host's daemon and workers as its watchdog's reset reaches them (:class:`HostRun`)."""

    torture: Torture
    host: Host

    def halt(self) -> list[int]:
        host = self.host
        host.not_ready()
        for scope in list(host.ops):
            scope.cancel()
        workers = list(host.workers.items())
        for _, worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
        if host.process is not None and host.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                host.process.kill()
        return [pid for pid, _ in workers]

    async def reboot(self, watchdog: HostWatchdog) -> None:
        host = self.host
        async with host.lock:
            if host.process is not None:
                await host.process.wait()
            host.process = None
            host.stopped = False
            await watchdog.new_boot()
            await self.torture.start_daemon(host)
            await self.torture.rejoin(host)


def run_torture(options: Options) -> Report:
    """Run, check, write ``report.txt`` and ``report.json`` to the work directory; return the report."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    history_path = options.workdir / "history.jsonl"
    if history_path.exists():
        history_path.unlink()
    problems = options.problems()
    if problems:
        raise TortureError("; ".join(problems))
    library = None
    if options.watchdog:
        try:
            wdmd_binary()
            library = build_shim()
        except ShimUnavailable as exc:
            raise TortureError(f"watchdog mode: {exc}") from exc
    with storage_for(options) as (mounts, lease_path):
        if not mounts:
            options.faults = tuple(f for f in options.faults if f not in STORAGE_FAULTS)
        torture = Torture(options, mounts, lease_path, options.workdir / "counters", library)
        trio.run(torture.run)
    report = check(read_history(history_path))
    text = f"seed: {torture.seed}\n" + report.text()
    if options.watchdog:
        text = resets_text(torture.resets, options) + text
    (options.workdir / "report.txt").write_text(text)
    summary = {
        "seed": torture.seed,
        "passed": report.passed,
        "duration": report.duration,
        "operations": dict(report.operations),
        "acquired_by_host": dict(report.acquired_by_host),
        "faults": dict(report.faults),
        "violations": [v.__dict__ for v in report.violations],
    }
    if options.watchdog:
        summary["watchdog_resets"] = torture.resets
        summary["host_dead_seconds"] = host_dead_seconds(options.io_timeout, options.wft)
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
