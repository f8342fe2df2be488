"""Every lease timeout as a pure function of io_timeout (on-disk spec §8).

Two inputs drive all of sanlock's timing: the lockspace's ``io_timeout`` (N)
and the ``watchdog_fire_timeout`` (W).  sanlock 3.8.5 fixes W at 60; later
releases make it configurable, and so does leased, because leased-only
takeover tests would otherwise wait minutes.  A cluster that mixes in real
sanlock 3.8.5 must keep W = 60 on every host: W is not stored on disk and
every host assumes its own W applies to all.

Computations about *another* host use that host's io_timeout, as read from its
delta lease (our own if the field is 0).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_IO_TIMEOUT = 10
"""sanlock 3.8.5's default io_timeout, seconds."""

DEFAULT_WATCHDOG_FIRE_TIMEOUT = 60
"""sanlock 3.8.5's fixed watchdog fire timeout, seconds."""

DEFAULT_KILL_GRACE_SECONDS = 40
WRITE_INIT_IO_TIMEOUT = 60
"""I/O timeout for init writes, which may be large and slow."""


def id_renewal_seconds(io_timeout: int) -> int:
    """Interval between delta-lease renewals."""
    return 2 * io_timeout


def id_renewal_warn_seconds(io_timeout: int) -> int:
    return 6 * io_timeout


def id_renewal_fail_seconds(io_timeout: int) -> int:
    """Renewal gap after which our lockspace has failed (and others see FAIL)."""
    return 8 * io_timeout


def host_dead_seconds(io_timeout: int, watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT) -> int:
    """Gap after which another host counts as dead and its leases can be taken."""
    return 8 * io_timeout + watchdog_fire_timeout


def delta_short_delay(io_timeout: int) -> int:
    """Wait between the delta-lease write and its verifying read."""
    return 2 * io_timeout


def delta_large_delay(io_timeout: int) -> int:
    return 8 * io_timeout


def delta_takeover_delay(io_timeout: int, watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT) -> int:
    """How long a delta acquire waits on a host_id held under another name."""
    return max(host_dead_seconds(io_timeout, watchdog_fire_timeout), delta_large_delay(io_timeout))


def set_bitmap_seconds(io_timeout: int) -> int:
    return 6 * io_timeout


def renewal_read_extend_seconds(io_timeout: int) -> int:
    return io_timeout


def kill_grace_seconds(watchdog_fire_timeout: int, configured: int | None = None) -> int:
    """Grace before SIGKILL: -g if given, else 40, shortened for small W as post-3.8.5 does."""
    if configured is not None:
        return configured
    if watchdog_fire_timeout >= 60:
        return DEFAULT_KILL_GRACE_SECONDS
    if watchdog_fire_timeout >= 30:
        return 15
    return 0


@dataclass(frozen=True)
class Timeouts:
    """The two inputs, carried together so callers cannot mix up W between hosts."""

    io_timeout: int = DEFAULT_IO_TIMEOUT
    watchdog_fire_timeout: int = DEFAULT_WATCHDOG_FIRE_TIMEOUT

    def other_io_timeout(self, recorded: int) -> int:
        """Another host's io_timeout: the value in its delta lease, or ours if 0."""
        return recorded or self.io_timeout

    def host_dead_seconds(self, other_io_timeout: int | None = None) -> int:
        return host_dead_seconds(other_io_timeout or self.io_timeout, self.watchdog_fire_timeout)

    @property
    def id_renewal_seconds(self) -> int:
        return id_renewal_seconds(self.io_timeout)

    @property
    def id_renewal_fail_seconds(self) -> int:
        return id_renewal_fail_seconds(self.io_timeout)
