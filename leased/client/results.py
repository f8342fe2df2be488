"""What the client returns and raises, and where it finds the daemon.

Plain values, no I/O: the errors (:class:`SanlockError` and its
:class:`SanlockProtocolError`), the result types the commands return, the
options of ``acquire``, the argument types ``Name`` and ``DiskLike``, and the
socket location.  The sans-I/O core builds them and every shell returns them,
so they sit below both; a program may import them without loading a shell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final, NamedTuple, TypeAlias, TypedDict

from leased.errors import LeaseError, ResultCode
from leased.protocol import (
    HOST_STATE_MASK,
    LSF_ADD,
    LSF_REM,
    RES_SHARED,
    Disk,
    Host,
    HostState,
    Lockspace,
    Resource,
    StateRecord,
    StateType,
)

DEFAULT_RUN_DIR: Final = "/run/sanlock"
SOCKET_NAME: Final = "sanlock.sock"
MiB: Final = 1024 * 1024

Name: TypeAlias = bytes | str
DiskLike: TypeAlias = Disk | tuple[str | os.PathLike[str], int]


# --------------------------------------------------------------------------
# Errors


class SanlockError(LeaseError):
    """A command failed: ``rc`` is the negative code the daemon (or the transport) gave."""

    def __init__(self, rc: int, detail: str, cmd: str = "") -> None:
        super().__init__(rc, detail)
        self.cmd = cmd


class SanlockProtocolError(SanlockError):
    """A reply that does not answer the request sent: the connection is out of step."""

    def __init__(self, detail: str, cmd: str = "") -> None:
        super().__init__(ResultCode.EPROTO, detail, cmd)


class AlreadyHeld(SanlockError):
    """-17 (EEXIST) because the process the acquire is for holds the lease already.

    Raised by an acquire with ``wait`` (which asks the daemon, on the same
    connection, who holds it): waiting for ourselves could never end, so it
    is not retried.  A plain acquire raises the bare -17 as sanlock does.
    """

    def __init__(self, detail: str, cmd: str = "acquire") -> None:
        super().__init__(ResultCode.EEXIST, detail, cmd)


class WaitExpired(SanlockError):
    """An acquire with ``wait`` met contention until its deadline passed.

    ``rc`` is the last attempt's contention code (-243 another live host
    holds it, -17 another local process, ...); ``waited`` the seconds from
    the first attempt's start to the last one's end; ``attempts`` how many
    acquires were sent.  The error of the last attempt is its ``__cause__``.
    """

    def __init__(self, rc: int, waited: float, attempts: int, detail: str, cmd: str = "acquire") -> None:
        super().__init__(rc, f"{detail}: still contended after {attempts} attempts in {waited:.3f} s", cmd)
        self.waited = waited
        self.attempts = attempts


# --------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class HostInfo:
    host_id: int
    generation: int
    timestamp: int
    io_timeout: int
    flags: int

    @property
    def state(self) -> HostState | None:
        """The host state from GET_HOSTS; None where the daemon reports none (read_resource_owners)."""
        try:
            return HostState(self.flags & HOST_STATE_MASK)
        except ValueError:
            return None

    @classmethod
    def _from(cls, host: Host) -> HostInfo:
        return cls(host.host_id, host.generation, host.timestamp, host.io_timeout, host.flags)


@dataclass(frozen=True)
class LockspaceInfo:
    name: bytes
    host_id: int
    path: str
    offset: int
    flags: int

    @property
    def adding(self) -> bool:
        return bool(self.flags & LSF_ADD)

    @property
    def removing(self) -> bool:
        return bool(self.flags & LSF_REM)

    @property
    def joined(self) -> bool:
        return not self.flags & (LSF_ADD | LSF_REM)


@dataclass(frozen=True)
class HeldLease:
    """One lease a registered client holds, as INQUIRE reports it.

    ``lver`` is the lease version of the acquire that got it (a fencing
    token: it grows with every exclusive acquire); None for a shared lease,
    which sanlock reports as ``SH`` without a version.
    """

    lockspace: bytes
    resource: bytes
    disks: tuple[Disk, ...]
    shared: bool
    lver: int | None


@dataclass(frozen=True)
class AcquiredLease(HeldLease):
    """The lease an acquire got, with ``lver`` read by an INQUIRE on the same connection.

    ``lver`` is None for a shared lease, and also when the lease was no
    longer held (released on our behalf by another connection) by the time of
    that INQUIRE, or when INQUIRE failed (sanlock 3.8.5 fails it with
    -ELIBSCN when a held lease's path contains a space).

    ``waited`` and ``attempts`` report an acquire with ``wait``: seconds from
    its first attempt's start to the successful one's end, and how many
    acquires it sent.  A plain acquire leaves them at 0.0 and 1.  Neither
    takes part in comparisons: two results for the same lease compare equal
    however long each waited.
    """

    waited: float = field(default=0.0, compare=False)
    attempts: int = field(default=1, compare=False)


@dataclass(frozen=True)
class ResourceInfo:
    lockspace: bytes
    name: bytes
    lver: int
    flags: int = 0

    @property
    def shared(self) -> bool:
        return bool(self.flags & RES_SHARED)


class LockspaceRecord(NamedTuple):
    name: bytes
    io_timeout: int


class VersionInfo(NamedTuple):
    version_num: int
    proto: int

    @property
    def version(self) -> str:
        """``major.minor.patch`` from ``major<<24 | minor<<16 | patch<<8 | build``."""
        num = self.version_num
        return f"{num >> 24 & 0xFF}.{num >> 16 & 0xFF}.{num >> 8 & 0xFF}"


@dataclass(frozen=True)
class StatusRecord:
    """One record of a STATUS stream, with the struct that follows LOCKSPACE and RESOURCE records."""

    state: StateRecord
    lockspace: Lockspace | None = None
    resource: Resource | None = None

    @property
    def type(self) -> StateType:
        return StateType(self.state.type)

    @property
    def fields(self) -> dict[str, str]:
        return state_fields(self.state.text)


@dataclass(frozen=True)
class Event:
    """An event another host set for us (``event_cb``, delivered on a REG_EVENT connection)."""

    host_id: int
    generation: int
    event: int
    data: int
    from_host_id: int
    from_generation: int


class AcquireOptions(TypedDict, total=False):
    """Keyword options of ``acquire`` (all default to off/None).

    ``shared``: a shared lease.  ``lver``: fail with -240 unless the on-disk
    lease version equals it.  ``lvb``: load the lease value block (enables
    set_lvb/get_lvb).  ``owner_nowait``: -247 instead of waiting for a dead
    owner's lease to expire.  ``orphan``: adopt an orphan of the same mode.
    ``num_hosts``: set a new num_hosts on the lease.  ``persistent``: the
    lease becomes an orphan, not released, when the process goes.
    ``owner_name``: the name ``sanlock client status`` shows for the process.
    """

    shared: bool
    lver: int | None
    lvb: bool
    owner_nowait: bool
    orphan: bool
    num_hosts: int | None
    persistent: bool
    owner_name: Name


def state_fields(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a status record's text."""
    pairs = (item.partition("=") for item in text.rstrip("\0").split(" ") if item)
    return {key: value for key, _, value in pairs}


# --------------------------------------------------------------------------
# Socket location


def default_run_dir() -> str:
    return os.environ.get("SANLOCK_RUN_DIR") or DEFAULT_RUN_DIR


def socket_path(run_dir: str | os.PathLike[str] | None = None) -> str:
    """``<run_dir>/sanlock.sock``; run_dir defaults to $SANLOCK_RUN_DIR, else /run/sanlock."""
    return os.path.join(os.fspath(run_dir) if run_dir is not None else default_run_dir(), SOCKET_NAME)
