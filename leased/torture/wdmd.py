"""The real wdmd on a machine with no watchdog device: the shim, the daemon, and a model of the kernel timer.

sanlock's promise that a host which stops renewing is reset before another
host may take its leases rests on wdmd and /dev/watchdog.  This machine has
no watchdog device, and the real wdmd refuses anything else as one.  So the
real ``/usr/sbin/wdmd`` runs under ``wdmd_shim.c`` (an ``LD_PRELOAD``
library, built here with gcc into a cache directory) which fakes the device,
writes every ping and close to ``<dir>/watchdog.log``, and moves
``/run/wdmd`` and the ``/wdmd`` shm marker into the test directory, so any
number of wdmd instances run side by side and none touches the system
(docs/watchdog.md has the details).

What the kernel would do with those pings is not a process but a function:
:class:`WatchdogTimer` is fed the logged events in order and says whether
and when the host would have been reset.  It is pure (no clock, no files);
the log is the only channel between the two halves.

The module is in two parts, pure first:

* :func:`parse_log`, :class:`DeviceEvent`, :class:`WatchdogTimer`,
  :func:`model` -- text in, a verdict out;
* :func:`build_shim`, :class:`ShimDir`, :func:`running_wdmd` -- gcc, files
  and processes.  Each failure says what is missing (:class:`ShimUnavailable`
  for "cannot run here", :class:`WdmdFailed` for "wdmd would not start").

Times are ``CLOCK_MONOTONIC`` seconds, the clock of :func:`time.monotonic`,
of wdmd and of sanlock, so a test can put its own observations on the same
axis as the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import grp
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

WDMD_PATH = "/usr/sbin/wdmd"
SHIM_SOURCE = Path(__file__).with_name("wdmd_shim.c")

ENV_DIR = "WDMD_SHIM_DIR"
"""The test directory: device, log, redirected run dir and shm marker live under it.

(Not ``LEASED_*``: a leased daemon under the shim reads every ``LEASED_*``
variable as a setting and refuses one it does not know.)"""
ENV_TIMEOUT = "WDMD_SHIM_TIMEOUT"
"""The timeout the fake device reports before anyone sets one (the shim's default is 60)."""

WDMD_FIRE_TIMEOUT = 60
"""wdmd 3.8.5's fire timeout, fixed in the binary: the W of every host it watches."""

DEFAULT_DEVICE_TIMEOUT = WDMD_FIRE_TIMEOUT
"""What the shim's device reports until WDIOC_SETTIMEOUT (wdmd sets its fire timeout if it differs)."""

WDMD_TEST_INTERVAL = 10
"""wdmd 3.8.5 tests its clients (and pets the device if all pass) every 10 s; not configurable."""

VIRTUAL_DEVICE = "/leased-wdmd-shim/watchdog"
"""The device path wdmd is given (``-w``); the shim maps it to ``<dir>/watchdog``.

A fixed short name because wdmd 3.8.5 cuts its ``-w`` argument at 63
characters (a longer path becomes its parent directory: EISDIR), and a test
directory is often longer than that.
"""

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1


# --------------------------------------------------------------------------
# The log (pure)


class EventKind(enum.Enum):
    """What the shim saw a process do with the fake device."""

    OPEN = "open"
    GETTIMEOUT = "gettimeout"
    SETTIMEOUT = "settimeout"
    KEEPALIVE = "keepalive"
    WRITE = "write"
    MAGIC = "magic"
    DISABLE = "disable"
    ENABLE = "enable"
    CLOSE_CLEAN = "close clean"
    CLOSE_UNCLEAN = "close unclean"


_VALUED = {EventKind.GETTIMEOUT, EventKind.SETTIMEOUT, EventKind.WRITE, EventKind.MAGIC}


@dataclass(frozen=True)
class DeviceEvent:
    """One line of ``watchdog.log``: ``time`` (monotonic s), the process, what it did, and its number if any."""

    time: float
    pid: int
    kind: EventKind
    value: int | None = None


class BadLogLine(ValueError):
    """A complete line of the log that the shim cannot have written."""


def parse_line(line: str) -> DeviceEvent:
    """One line without its newline; :class:`BadLogLine` if it is not ``<time> <pid> <event> [<value>]``."""
    fields = line.split()
    try:
        when, pid, rest = float(fields[0]), int(fields[1]), fields[2:]
        if rest[0] == "close":
            kind, value = EventKind(" ".join(rest)), None
        else:
            kind = EventKind(rest[0])
            value = int(rest[1]) if kind in _VALUED else None
            if len(rest) != (2 if kind in _VALUED else 1):
                raise ValueError("wrong field count")
    except (IndexError, ValueError) as exc:
        raise BadLogLine(f"not a wdmd shim log line: {line!r} ({exc})") from exc
    return DeviceEvent(when, pid, kind, value)


def parse_log(text: str) -> list[DeviceEvent]:
    """The events of a log, in file order.

    A last line without its newline is being written right now (the shim
    writes each line with one ``write()``, so it can only be cut when read
    mid-write): it is left for the next read, not an error.
    """
    lines = text.split("\n")
    return [parse_line(line) for line in lines[:-1] if line]


# --------------------------------------------------------------------------
# The kernel's timer (pure)


@dataclass(frozen=True)
class WatchdogTimer:
    """The kernel watchdog as linux/drivers/watchdog/watchdog_dev.c runs it, one event at a time.

    Opening the device starts the timer; a keepalive, a write or a new
    timeout restarts it; a write containing "V" arms the magic close, any
    other write disarms it; a close after the magic stops the timer, any
    other close (or the process dying) leaves it running.  Once
    ``last_ping + timeout`` has passed with the timer running the host is
    reset (``fired_at``), and nothing after that can matter: the events a
    shim logs after that moment happened on a host that real hardware would
    already have rebooted.
    """

    timeout: float = DEFAULT_DEVICE_TIMEOUT
    running: bool = False
    last_ping: float | None = None
    magic: bool = False
    fired_at: float | None = None

    def feed(self, event: DeviceEvent) -> WatchdogTimer:
        """The timer after ``event`` (events must come in time order)."""
        if self.fired_at is not None:
            return self
        deadline = self.deadline
        if deadline is not None and event.time > deadline:
            return dataclasses.replace(self, fired_at=deadline)
        replace = dataclasses.replace
        match event.kind:
            case EventKind.OPEN | EventKind.ENABLE:
                return replace(self, running=True, last_ping=event.time, magic=False)
            case EventKind.SETTIMEOUT:
                assert event.value is not None
                return replace(self, timeout=event.value, last_ping=event.time if self.running else self.last_ping)
            case EventKind.KEEPALIVE:
                return replace(self, last_ping=event.time if self.running else self.last_ping)
            case EventKind.WRITE | EventKind.MAGIC:
                ping = event.time if self.running else self.last_ping
                return replace(self, last_ping=ping, magic=event.kind is EventKind.MAGIC)
            case EventKind.DISABLE:
                return replace(self, running=False)
            case EventKind.CLOSE_CLEAN:
                return replace(self, running=False, magic=False)
            case EventKind.CLOSE_UNCLEAN:
                return replace(self, magic=False)
            case EventKind.GETTIMEOUT:
                return self

    @property
    def deadline(self) -> float | None:
        """When the running timer fires unless pinged again; None when it is stopped."""
        if not self.running or self.last_ping is None:
            return None
        return self.last_ping + self.timeout

    @property
    def fire_at(self) -> float | None:
        """When the host is (or, left alone, will be) reset; None when the timer was stopped cleanly."""
        return self.fired_at if self.fired_at is not None else self.deadline

    def reset_by(self, when: float) -> bool:
        """Whether the host has been reset at time ``when``."""
        fire_at = self.fire_at
        return fire_at is not None and fire_at <= when


def model(events: Iterable[DeviceEvent], timeout: float = DEFAULT_DEVICE_TIMEOUT) -> WatchdogTimer:
    """Run the timer over ``events`` from a stopped device whose timeout is ``timeout``."""
    timer = WatchdogTimer(timeout=timeout)
    for event in events:
        timer = timer.feed(event)
    return timer


@dataclass(frozen=True)
class LogFollower:
    """The timer of a log that is still being written, fed what was appended since the last read.

    A host's monitor reads the new bytes of ``watchdog.log`` every fraction
    of a second and asks whether the host would have been reset by now.
    Feeding the log in any pieces gives the timer :func:`model` gives the
    whole of it: a line cut by the read (the shim was writing it) waits in
    ``partial`` for the rest.
    """

    timer: WatchdogTimer = WatchdogTimer()
    partial: bytes = b""

    @classmethod
    def start(cls, timeout: float = DEFAULT_DEVICE_TIMEOUT) -> LogFollower:
        return cls(WatchdogTimer(timeout=timeout))

    def feed(self, chunk: bytes) -> LogFollower:
        """The follower after ``chunk`` (appended to the log); :class:`BadLogLine` on a line the shim never writes."""
        *lines, rest = (self.partial + chunk).split(b"\n")
        timer = self.timer
        for line in lines:
            if line.strip():
                timer = timer.feed(parse_line(line.decode(errors="replace")))
        return LogFollower(timer, rest)

    def reset_due(self, now: float) -> float | None:
        """When the host was reset, if the timer says it has been by ``now``; else None.

        ``now`` is CLOCK_MONOTONIC.  A running timer whose deadline has passed
        counts even though no later event "proved" it: the kernel needs no
        event to fire.
        """
        return self.timer.fire_at if self.timer.reset_by(now) else None


def pings(events: Iterable[DeviceEvent]) -> list[float]:
    """The times at which the device was pinged (keepalive ioctls and writes), in order."""
    kinds = {EventKind.KEEPALIVE, EventKind.WRITE, EventKind.MAGIC}
    return [event.time for event in events if event.kind in kinds]


# --------------------------------------------------------------------------
# The shim (gcc, files)


class ShimUnavailable(RuntimeError):
    """The shim cannot run on this machine (no gcc, no wdmd); the message says what to install."""


class WdmdFailed(RuntimeError):
    """wdmd did not come up; the message carries the tail of its stderr."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/leased`` (else ``~/.cache/leased``): built shims are kept per source hash."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leased"


def build_shim(cache_dir: Path | None = None, *, compiler: str = "gcc") -> Path:
    """The shim as a shared library, compiled on first use and kept under the hash of its source.

    Parallel builders (pytest-xdist workers) each compile into their own
    temporary file and rename it into place, so a reader never sees half a
    library.  :class:`ShimUnavailable` when there is no compiler;
    :class:`subprocess.CalledProcessError` (with gcc's output) when the
    source does not compile.
    """
    gcc = shutil.which(compiler)
    if gcc is None:
        raise ShimUnavailable(f"{compiler} not found: the wdmd shim is C (apt-get install gcc)")
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = cache_dir or default_cache_dir()
    library = cache / f"wdmd_shim-{digest}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=cache, prefix=".wdmd_shim-", suffix=".so")
    os.close(fd)
    try:
        subprocess.run(
            [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", partial, str(SHIM_SOURCE), "-ldl"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        os.replace(partial, library)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return library


def wdmd_binary() -> str:
    """The real wdmd, or :class:`ShimUnavailable` saying which package provides it."""
    if not os.access(WDMD_PATH, os.X_OK):
        raise ShimUnavailable(f"{WDMD_PATH} missing (apt-get install sanlock, which ships wdmd)")
    return WDMD_PATH


@dataclass(frozen=True)
class ShimDir:
    """One simulated host's watchdog world: a test directory and the library that maps the system into it."""

    path: Path
    library: Path
    device_timeout: int = DEFAULT_DEVICE_TIMEOUT

    @classmethod
    def create(cls, path: Path, library: Path, device_timeout: int = DEFAULT_DEVICE_TIMEOUT) -> ShimDir:
        """Make the directory and the fake device file; :class:`ValueError` if the socket path would not fit."""
        shim = cls(path.absolute(), library, device_timeout)
        if len(os.fsencode(shim.socket)) > _SUN_PATH_MAX:
            raise ValueError(f"{shim.socket}: longer than an AF_UNIX socket path may be; use a shorter directory")
        shim.path.mkdir(parents=True, exist_ok=True)
        shim.device.touch()
        return shim

    @property
    def device(self) -> Path:
        """The fake /dev/watchdog (a regular file; the shim answers its ioctls), known to wdmd as VIRTUAL_DEVICE."""
        return self.path / "watchdog"

    @property
    def log(self) -> Path:
        return self.path / "watchdog.log"

    @property
    def run_dir(self) -> Path:
        """Where /run/wdmd lands."""
        return self.path / "run"

    @property
    def socket(self) -> Path:
        return self.run_dir / "wdmd.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "wdmd.pid"

    @property
    def marker(self) -> Path:
        """wdmd's "not cleanly stopped" marker, POSIX shm ``/wdmd`` in the real system."""
        return self.path / "shm" / "wdmd"

    @property
    def syslog(self) -> Path:
        return self.path / "syslog.log"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) plus what puts a process under this shim."""
        env = dict(os.environ if base is None else base)
        preload = env.get("LD_PRELOAD")
        env["LD_PRELOAD"] = f"{self.library} {preload}" if preload else str(self.library)
        env[ENV_DIR] = str(self.path)
        env[ENV_TIMEOUT] = str(self.device_timeout)
        return env

    def events(self) -> list[DeviceEvent]:
        """The device events logged so far."""
        try:
            return parse_log(self.log.read_text())
        except FileNotFoundError:
            return []

    def timer(self) -> WatchdogTimer:
        """The modelled kernel timer after every event logged so far."""
        return model(self.events(), self.device_timeout)

    def listening(self) -> bool:
        """Whether a wdmd accepts connections on this directory's socket."""
        return _accepts(self.socket)

    def reboot(self, boot: int) -> Path:
        """What a reboot does to this host's watchdog world: an empty /run and /dev/shm, a new log.

        A wdmd killed with clients leaves its shm marker and run directory
        behind, and a new one refuses to start over them; a reboot clears
        both.  The logs of the life that ended move to ``boot-<boot>/`` (kept
        for the post-mortem), so the next life's model starts from a stopped
        device.  Only for a directory no live process uses.
        """
        kept = self.path / f"boot-{boot}"
        kept.mkdir(exist_ok=True)
        for path in (self.log, self.syslog, self.path / "wdmd.log"):
            with contextlib.suppress(FileNotFoundError):
                path.rename(kept / path.name)
        for directory in (self.run_dir, self.marker.parent):
            shutil.rmtree(directory, ignore_errors=True)
        return kept


# --------------------------------------------------------------------------
# The daemon (processes)


@dataclass
class Wdmd:
    """A running real wdmd under the shim."""

    shim: ShimDir
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def terminate(self, timeout: float = 10) -> bool:
        """SIGTERM, as systemd stops it; True if it exited within ``timeout``.

        wdmd ignores SIGTERM while a client holds a refcount (a joined
        lockspace, or a client that died with an expire time set): False
        then, and it keeps running.
        """
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL and reap: to the model this is an unclean close."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=30)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _socket_group() -> str:
    """The group wdmd gives its socket: the caller's own (``-G``), so the caller's clients may connect."""
    try:
        return grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        return str(os.getegid())


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until true; :class:`TimeoutError` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout} s")
        time.sleep(interval)


def wdmd_argv(shim: ShimDir, binary: str = WDMD_PATH) -> list[str]:
    """Foreground with debug to stderr (-D), no RR scheduling or mlockall (-H 0), our group, the fake device."""
    return [binary, "-D", "-H", "0", "-G", _socket_group(), "-w", VIRTUAL_DEVICE]


def check_shim_loads(shim: ShimDir) -> None:
    """Run a probe under ``shim`` and see its mark; :class:`ShimUnavailable` if the preload did not take.

    The dynamic loader only warns when it cannot preload a library, and a
    wdmd without the shim tries the real ``/dev/watchdog`` next: on a host
    that has one, stopping that wdmd uncleanly would reset the machine.
    """
    mark = shim.path / "shim-loaded"
    mark.unlink(missing_ok=True)
    probe = subprocess.run(
        ["/bin/true"], env=shim.env(), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False
    )
    if not mark.exists():
        raise ShimUnavailable(f"the wdmd shim {shim.library} did not load in a probe process: {probe.stderr.strip()}")


@contextlib.contextmanager
def running_wdmd(shim: ShimDir, *, ready_timeout: float = 15, stop_timeout: float = 10) -> Iterator[Wdmd]:
    """Start the real wdmd under ``shim``; yield once its socket accepts; stop it on exit.

    On exit it gets SIGTERM (a clean stop, which writes the magic "V"), and
    SIGKILL if it is still running after ``stop_timeout`` (it refuses
    SIGTERM while a client is registered).  :class:`WdmdFailed` if it exits
    or does not listen within ``ready_timeout``.
    """
    binary = wdmd_binary()
    check_shim_loads(shim)
    stderr_path = shim.path / "wdmd.log"
    with stderr_path.open("ab") as stderr:
        process = subprocess.Popen(
            wdmd_argv(shim, binary),
            env=shim.env(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    wdmd = Wdmd(shim, process, stderr_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _accepts(shim.socket):
            if not wdmd.alive():
                raise WdmdFailed(f"wdmd exited with {process.returncode}:\n{wdmd.stderr()[-2000:]}")
            if time.monotonic() > deadline:
                raise WdmdFailed(
                    f"wdmd not listening on {shim.socket} after {ready_timeout} s:\n{wdmd.stderr()[-2000:]}"
                )
            time.sleep(0.02)
        yield wdmd
    finally:
        if not wdmd.terminate(stop_timeout):
            wdmd.kill()
