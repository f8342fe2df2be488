"""One host's watchdog in the torture run's watchdog mode: its wdmd, the model of its timer, and its reset.

:mod:`leased.torture.wdmd` has the parts (the shim, wdmd's command line,
the model of the kernel timer fed from the shim's log); a
:class:`HostWatchdog` puts them together for one host of a run: it starts
and stops that host's real wdmd, follows the shim's log through the model
(:meth:`HostWatchdog.watch`, the host's monitor) and, when the model says
the watchdog fired, resets the host.

A reset preempts everything, as the hardware's does: nothing of the host
runs on, at once and without waiting for any lock; then the history gets
the records (after the kills, so it never says a worker died earlier than
it did), and the host boots: a clean /run and shm for a new wdmd, then its
daemon, the join and new workers.  What a reset does to the host's daemon
and workers is the harness's: this module reaches them only through
:class:`HostRun`, which the harness provides per host.

A ``daemon_kill`` of watchdog mode kills the daemon only and leaves the
rest to the watchdog (:meth:`HostWatchdog.daemon_killed`): a reset that has
not come by :func:`reset_bound` is a violation, and the monitor then resets
the host itself.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from leased.timeouts import host_dead_seconds
from leased.torture.history import History
from leased.torture.hosts import Options, TortureError
from leased.torture.wdmd import (
    WDMD_TEST_INTERVAL,
    LogFollower,
    ShimDir,
    ShimUnavailable,
    check_shim_loads,
    wdmd_argv,
    wdmd_binary,
)

MONITOR_INTERVAL = 0.2
"""How often a host's monitor reads its shim log: the latest a modelled reset is acted on, after it."""

Reset = dict[str, object]
"""One modelled reset acted on, as the report lists it (``host``, ``fire_at``, ``acted_at``, ...)."""


def reset_bound(options: Options) -> float:
    """The latest a reset may come after daemon_kill: renewal + 8N expires, wdmd's last ping (by then, give
    or take a test interval), plus W; later than that the watchdog failed the host."""
    return 8 * options.io_timeout + WDMD_TEST_INTERVAL + options.wft + 5


class HostRun(Protocol):
    """One host's daemon and workers as its watchdog's reset reaches them; the harness provides one per host."""

    def halt(self) -> list[int]:
        """At once, with no await: the host not ready, work on its daemon cancelled, its workers and its
        daemon SIGKILLed.  Returns the pids of the workers killed."""
        ...

    async def reboot(self, watchdog: HostWatchdog) -> None:
        """Under the host's lock, once the daemon :meth:`halt` killed is gone: ``watchdog.new_boot()``, then
        the daemon (whose start starts the new wdmd, :meth:`HostWatchdog.start`) and the join."""
        ...


@dataclass(eq=False)
class HostWatchdog:
    name: str
    """The host's name, as the history knows it."""
    shim: ShimDir
    """This host's watchdog world (its wdmd's run dir, fake device and log)."""
    history: History
    bound: float
    """:func:`reset_bound` of the run."""
    resets: list[Reset]
    """Every reset the run acted on, in order: shared by the run's hosts, for the report."""
    wdmd: trio.Process | None = None
    follower: LogFollower = field(default_factory=LogFollower.start)
    """The modelled timer of this boot's log, and how much of the log it has read."""
    log_offset: int = 0
    boot: int = 0
    rebooting: bool = False
    """Reset and not yet back: the monitor leaves the host alone, nothing else touches it."""
    killed_at: float | None = None
    """When daemon_kill killed the daemon, until the reset that must follow."""
    pending: list[int] = field(default_factory=list)
    """Ids of faults that end only when the host is back from its reset (daemon_kill)."""

    @classmethod
    def create(
        cls, name: str, path: Path, library: Path, history: History, options: Options, resets: list[Reset]
    ) -> HostWatchdog:
        """The watchdog of host ``name``, its shim directory at ``path``, cleared as after a reboot."""
        try:
            shim = ShimDir.create(path, library)
        except ValueError as exc:
            raise TortureError(f"{exc} (--workdir is too long for watchdog mode)") from exc
        shim.reboot(0)  # a work directory used before: start from a clean boot
        return cls(name, shim, history, reset_bound(options), resets, follower=LogFollower.start(shim.device_timeout))

    @property
    def settled(self) -> bool:
        """No reset owed (after a daemon_kill) or under way."""
        return self.killed_at is None and not self.rebooting

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus what puts the host's daemon under this shim."""
        return self.shim.env(base)

    def daemon_killed(self, fault: int) -> None:
        """daemon_kill killed the daemon (fault ``fault``): a reset must follow, and heals the fault."""
        self.killed_at = time.monotonic()
        self.pending.append(fault)

    async def start(self) -> None:
        """This host's real wdmd under its shim, once its socket accepts; a running one is kept."""
        shim = self.shim
        if self.wdmd is not None and self.wdmd.returncode is None:
            return
        try:
            await trio.to_thread.run_sync(check_shim_loads, shim)  # never a wdmd that could reach a real device
        except ShimUnavailable as exc:
            raise TortureError(f"{self.name}: {exc}") from None
        log_path = shim.path / "wdmd.log"
        with log_path.open("ab") as log_file:
            self.wdmd = await trio.lowlevel.open_process(
                wdmd_argv(shim, wdmd_binary()),
                env=shim.env(),
                stdin=None,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        with trio.move_on_after(15):
            while not shim.listening():
                if self.wdmd.returncode is not None:
                    raise TortureError(f"{self.name}: wdmd exited with {self.wdmd.returncode}; see {log_path}")
                await trio.sleep(0.05)
            return
        raise TortureError(f"{self.name}: wdmd not listening on {shim.socket} after 15 s; see {log_path}")

    async def stop(self) -> None:
        """SIGTERM (a clean stop disarms); SIGKILL if it stays, as it does while a client holds its refcount."""
        process = self.wdmd
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        self.wdmd = None

    async def watch(self, run: HostRun) -> None:
        """Follow the host's shim log through the timer model; reset the host when the model says it was."""
        while True:
            await trio.sleep(MONITOR_INTERVAL)
            if self.rebooting:
                continue
            self.follower = self.follower.feed(self._read_log())
            now = time.monotonic()
            fire = self.follower.reset_due(now)
            if fire is not None:
                await self.reset(run, fire)
            elif self.killed_at is not None and now > self.killed_at + self.bound:
                detail = f"{self.name}: no watchdog reset {now - self.killed_at:.1f} s after its daemon was killed"
                self.history.record("violation", what="watchdog", target=self.name, detail=detail)
                await self.reset(run, None)

    def _read_log(self) -> bytes:
        try:
            with self.shim.log.open("rb") as f:
                f.seek(self.log_offset)
                chunk = f.read()
        except FileNotFoundError:
            return b""
        self.log_offset += len(chunk)
        return chunk

    async def reset(self, run: HostRun, fire_at: float | None) -> None:
        """The host is reset: nothing of it runs on (at once, not waiting for any lock), then it boots.

        The kills come first and the records after them, so the history says
        the workers died no earlier than they did.  ``fire_at`` is the
        modelled reset (None: the harness's own, after a reset that never came).
        """
        self.rebooting = True
        workers = run.halt()
        if self.wdmd is not None and self.wdmd.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.wdmd.kill()
        now = self.history.record(
            "host_down",
            target=self.name,
            why="watchdog reset",
            fire_at=fire_at,
            daemon_killed_at=self.killed_at,
            faults=list(self.pending),
            workers=workers,
        )
        for pid in workers:
            self.history.record("client_kill", pid=pid, why="watchdog reset")
        self.resets.append(
            {
                "host": self.name,
                "fire_at": fire_at,
                "acted_at": now,
                "daemon_killed_at": self.killed_at,
                "workers_killed": len(workers),
                "cause": "daemon_kill" if self.killed_at is not None else "other",
            }
        )
        self.killed_at = None
        await run.reboot(self)
        self.rebooting = False
        for fault in self.pending:
            self.history.record("heal", kind="daemon_kill", target=self.name, id=fault)
        self.pending.clear()

    async def new_boot(self) -> None:
        """The watchdog world after a reset: the killed wdmd gone, a clean /run and shm, a fresh log and timer."""
        if self.wdmd is not None:
            await self.wdmd.wait()
        self.wdmd = None
        self.boot += 1
        self.shim.reboot(self.boot)
        self.follower, self.log_offset = LogFollower.start(self.shim.device_timeout), 0


def resets_text(resets: list[Reset], options: Options) -> str:
    """The resets the run acted on: when each came after its daemon's SIGKILL, against host_dead_seconds."""
    dead = host_dead_seconds(options.io_timeout, options.wft)
    lines = [f"watchdog mode: io_timeout {options.io_timeout}, host_dead_seconds {dead}"]
    lines.append(f"watchdog resets: {len(resets)}")
    for reset in resets:
        fire, acted, killed = reset["fire_at"], reset["acted_at"], reset["daemon_killed_at"]
        assert isinstance(acted, float)
        when = f"modelled at {fire:.3f}, acted on {acted - fire:.2f} s later" if isinstance(fire, float) else "NONE"
        after = (
            f", {fire - killed:.1f} s after its daemon's SIGKILL"
            if isinstance(fire, float) and isinstance(killed, float)
            else ""
        )
        lines.append(f"  {reset['host']}: {when}{after}, {reset['workers_killed']} workers killed")
    return "\n".join(lines) + "\n"
