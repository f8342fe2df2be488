"""What a torture run is made of: its options, its fault kinds, its hosts and the lease storage they share.

Everything here is decided before the first daemon starts and changes
shape no more once the run is under way: :class:`Options` (with the
watchdog mode's constraints, :meth:`Options.problems`), the fault kinds by
family, :class:`Host` (one daemon's run directory, host id, view of the
lease file and the processes the run starts on it) and :func:`storage_for`,
the lease file and the faultfs mounts its hosts reach it through.  Starting
and stopping those processes, and the faults, are :mod:`leased.torture.harness`'s.

:class:`TortureError` is the one error of the run's set-up and end, as
opposed to a violation, which the checker reports.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from leased.client import Client
from leased.torture.faultfs import FaultFS, FaultFSUnavailable, fault_fs
from leased.torture.wdmd import WDMD_FIRE_TIMEOUT, WDMD_TEST_INTERVAL

log = logging.getLogger(__name__)

CLIENT_FAULTS = ("client_kill", "client_stop")
DAEMON_FAULTS = ("daemon_stop", "daemon_kill")
STORAGE_FAULTS = ("storage_eio", "storage_stall")
ROGUE_FAULTS = ("rogue_interleave", "rogue_vanish")
ALL_FAULTS = CLIENT_FAULTS + DAEMON_FAULTS + STORAGE_FAULTS + ROGUE_FAULTS

DEFAULT_FAULTPOINTS = "acquire.prepare=0.02,acquire.commit=0.01,release.prepare=0.02,orphan.move=0.02"

PROFILES = ("mixed", "shared-local")

WATCHDOG_MIN_IO_TIMEOUT = 2
"""Below this wdmd 3.8.5 starves a healthy host (docs/watchdog.md): the expiry, renewal + 8N, is always
within its 10 s test interval."""
WATCHDOG_IO_TIMEOUT = 3
"""The io_timeout of watchdog mode unless one is given: 2 leaves 2 s of margin over wdmd's test interval."""


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
    watchdog: bool = False
    """Each host runs its own real wdmd under the shim, daemons with -w 1; resets come from the modelled timer."""
    fault_count: int = 0
    """Stop injecting after this many faults, and end the fault phase once they are over (0: no limit)."""
    profile: str = "mixed"
    """``mixed``: every worker takes leases shared or exclusive at random.  ``shared-local``: the first
    leased host runs twice the workers, all taking leases shared and holding them longer, so several of
    its processes share each hold (joins, and releases that leave the hold to the others), while every
    other host's workers take the same leases exclusive only (issue 24)."""

    def shared_host(self, host: Host) -> bool:
        """In the shared-local profile, the host whose many local clients share holds."""
        return self.profile == "shared-local" and host.kind == "leased" and host.index == 0

    def clients_on(self, host: Host) -> int:
        return 2 * self.clients if self.shared_host(host) else self.clients

    def sh_fraction_on(self, host: Host) -> float:
        if self.profile != "shared-local":
            return self.sh_fraction
        return 1.0 if self.shared_host(host) else 0.0

    def hold_max_on(self, host: Host) -> float:
        return 4 * self.hold_max if self.shared_host(host) else self.hold_max

    @property
    def wft(self) -> int:
        if self.watchdog:
            return WDMD_FIRE_TIMEOUT
        if self.watchdog_fire_timeout is not None:
            return self.watchdog_fire_timeout
        return 60 if self.sanlock_hosts else 5

    def problems(self) -> list[str]:
        """What makes these options unusable, in words for the command line."""
        found = []
        if self.watchdog and self.io_timeout < WATCHDOG_MIN_IO_TIMEOUT:
            found.append(
                f"--watchdog needs --io-timeout >= {WATCHDOG_MIN_IO_TIMEOUT} (default {WATCHDOG_IO_TIMEOUT}): with "
                f"{self.io_timeout} the expiry (renewal + 8N) is always within wdmd's {WDMD_TEST_INTERVAL} s test "
                "interval and wdmd 3.8.5 stops petting the device of a healthy host"
            )
        if self.watchdog and self.watchdog_fire_timeout not in (None, WDMD_FIRE_TIMEOUT):
            found.append(f"--watchdog: the fire timeout is wdmd's fixed {WDMD_FIRE_TIMEOUT} s")
        if self.fault_count < 0:
            found.append("--fault-count must be 0 (no limit) or more")
        if self.profile not in PROFILES:
            found.append(f"--profile must be one of {', '.join(PROFILES)}")
        if self.profile == "shared-local" and self.leased_hosts < 1:
            found.append("--profile shared-local needs a leased host (its many local clients share holds)")
        return found

    def jsonable(self) -> dict[str, object]:
        """The options as the history's ``run`` record carries them (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


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
    ops: set[trio.CancelScope] = field(default_factory=set)
    """Work on the daemon in progress (a rejoin): a watchdog reset cancels it, the daemon it talks to is gone."""

    def client(self, timeout: float = 30) -> Client:
        return Client(self.run_dir, timeout=timeout)

    def not_ready(self) -> None:
        if self.ready.is_set():
            self.ready = trio.Event()


def make_hosts(options: Options, mounts: list[FaultFS], lease_path: Path) -> list[Host]:
    """The run's hosts, leased ones first, each with its home in the work directory (made here).

    With faultfs mounts, host ``i`` reaches the lease file through mount ``i``;
    the first host, if it runs leased, is the one whose storage faults fail.
    """
    kinds = ["leased"] * options.leased_hosts + ["sanlock"] * options.sanlock_hosts
    hosts = []
    for index, kind in enumerate(kinds):
        name = f"{kind}-{index + 1}"
        fs = mounts[index] if mounts else None
        path = str(fs.mountpoint / lease_path.name) if fs else str(lease_path)
        home = options.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        host = Host(index, kind, name, index + 1, home / "run", path, home / "daemon.log", fs=fs)
        host.faulty_storage = fs is not None and index == 0 and kind == "leased"
        hosts.append(host)
    return hosts


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
