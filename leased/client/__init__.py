"""A client of sanlock's wire protocol: blocking (:class:`Client`) or awaited, on trio or on asyncio.

It speaks to a real sanlock 3.8.5 daemon or to leased's own, over
``<run_dir>/sanlock.sock``, exactly as libsanlock does: one fresh connection
per command, except for the *registered* connection, which is the lease
context of this process for as long as it stays open.

Why one lock per connection
---------------------------
A sanlock connection is a bare request/reply pipe.  A request is a 32-byte
header followed by a body whose shape only the command defines, and a reply
carries no request id (``seq`` is echoed, but libsanlock leaves it 0 and
nothing checks it).  The daemon reads one header, then exactly the body that
command expects, then the next header.  So the bytes of two requests must
never mix: if thread A writes its ACQUIRE header, thread B its INQUIRE header,
and then A its body, the daemon reads B's header as part of A's resource, A's
body as a stream of bogus headers, and the two threads pick up each other's
replies.  A thread may then believe it holds a lease it never got, or release
one another thread relies on.  That is how sanlock users lost leases: the
registered connection belongs to the whole process (the daemon knows it only
by the pid on the other end), every thread that acquires or releases for the
process uses it, and libsanlock left the serialising to its callers.

So the rules here are:

* Every connection owns one lock (``threading.Lock``, ``trio.Lock`` or
  ``asyncio.Lock``), held from the first byte of a request until the last
  byte of its reply has been read.  The header and body go out in a single
  ``sendall``.
* A call that stops half way (timeout, cancellation, a short read, a
  malformed reply) leaves the connection out of step: nobody can tell which
  reply the next read would return.  The connection is then marked broken and
  refuses further calls; only closing it is safe (and closing a registered
  connection releases its leases, which is the truthful outcome).
* Each request carries a fresh ``seq`` and the reply must echo it and the
  command, so a mix-up that happens anyway is detected, not acted upon.
* Calls that need two exchanges to mean one thing (ACQUIRE, then INQUIRE to
  learn the lease version used as a fencing token) hold the lock across both.
* Unregistered commands open their own connection per call, as libsanlock
  does, so they never wait for each other.

The protocol part is sans-I/O: each command is a generator that yields
"send these bytes", "read exactly n bytes" or "read until EOF" steps and
returns the parsed result; :class:`Client`, :class:`AsyncClient` and
:class:`AsyncioClient` only drive those generators over their sockets.
Replies are framed per command (wire spec §2.3), never by trusting
``length`` blindly, and every size is bounded.

The package, from the bottom up:

* :mod:`leased.client.results`: errors, result types, ``AcquireOptions``,
  the socket location;
* :mod:`leased.client.waiting`: acquire with a deadline, as policy only:
  which codes are contention (``RETRYABLE``), the jittered backoff, the
  deadline (``AcquireWait``); the shells read their clock and sleep;
* :mod:`leased.client.exchanges`: the sans-I/O core, one exchange per
  command, and ``_advance``, the one way a shell steps an exchange;
* :mod:`leased.client.blocking`: :class:`Client`, :class:`Registration`,
  :class:`EventChannel` over blocking sockets and ``threading.Lock``;
* :mod:`leased.client.trio_shell`: :class:`AsyncClient`,
  :class:`AsyncRegistration`, :class:`AsyncEventChannel` over trio streams.
  It is imported on first use of one of its names (module ``__getattr__``),
  so the blocking client and the command line never load trio;
* :mod:`leased.client.asyncio_shell`: :class:`AsyncioClient`,
  :class:`AsyncioRegistration`, :class:`AsyncioEventChannel`, the trio
  shell's twins over asyncio streams and ``asyncio.Lock`` (no trio), for
  asyncio programs; imported on first use of one of its names as well.

The shells mirror each other method for method; ``tests/test_client_shells.py``
compares their signatures, docstrings and bodies and names every deliberate
difference.  Of leased, the package imports only the facts and the wire
format (``leased.constants``, ``errors``, ``schema``, ``protocol``), so a
program that talks to a daemon loads no lease algorithm, storage or daemon
code.

Errors: a negative result raises :class:`SanlockError` (a
:class:`~leased.errors.LeaseError`) with ``rc`` set to the code; a connection
that closes or stalls where a reply is due raises it with ``-ENOTCONN`` /
``-ETIMEDOUT``; a reply that does not fit the request raises
:class:`SanlockProtocolError` (``-EPROTO``).  Arguments that cannot be encoded
(a name longer than 48 bytes, a path too long) raise ``LeaseError`` before
anything is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leased.client.blocking import Client, EventChannel, HealthChannel, Registration
from leased.client.results import (
    DEFAULT_RUN_DIR,
    SOCKET_NAME,
    AcquiredLease,
    AcquireOptions,
    AlreadyHeld,
    DiskLike,
    Event,
    HeldLease,
    HostInfo,
    LockspaceInfo,
    LockspaceRecord,
    Name,
    ResourceInfo,
    SanlockError,
    SanlockProtocolError,
    StatusRecord,
    VersionInfo,
    WaitExpired,
    default_run_dir,
    socket_path,
    state_fields,
)
from leased.client.waiting import RETRYABLE, AcquireWait, Backoff
from leased.protocol import HealthNotice, HealthState, HostState

if TYPE_CHECKING:
    from leased.client.asyncio_shell import (
        AsyncioClient,
        AsyncioEventChannel,
        AsyncioHealthChannel,
        AsyncioRegistration,
    )
    from leased.client.trio_shell import AsyncClient, AsyncEventChannel, AsyncHealthChannel, AsyncRegistration

__all__ = [
    "DEFAULT_RUN_DIR",
    "RETRYABLE",
    "SOCKET_NAME",
    "AcquireOptions",
    "AcquireWait",
    "AcquiredLease",
    "AlreadyHeld",
    "AsyncClient",
    "AsyncEventChannel",
    "AsyncHealthChannel",
    "AsyncRegistration",
    "AsyncioClient",
    "AsyncioEventChannel",
    "AsyncioHealthChannel",
    "AsyncioRegistration",
    "Backoff",
    "Client",
    "DiskLike",
    "Event",
    "EventChannel",
    "HealthChannel",
    "HealthNotice",
    "HealthState",
    "HeldLease",
    "HostInfo",
    "HostState",
    "LockspaceInfo",
    "LockspaceRecord",
    "Name",
    "Registration",
    "ResourceInfo",
    "SanlockError",
    "SanlockProtocolError",
    "StatusRecord",
    "VersionInfo",
    "WaitExpired",
    "default_run_dir",
    "socket_path",
    "state_fields",
]

_TRIO_SHELL = frozenset({"AsyncClient", "AsyncEventChannel", "AsyncHealthChannel", "AsyncRegistration"})
_ASYNCIO_SHELL = frozenset({"AsyncioClient", "AsyncioEventChannel", "AsyncioHealthChannel", "AsyncioRegistration"})


def __getattr__(name: str) -> object:
    """Load the trio or asyncio shell when one of its names is first asked for (PEP 562)."""
    if name in _TRIO_SHELL:
        from leased.client import trio_shell

        return getattr(trio_shell, name)
    if name in _ASYNCIO_SHELL:
        from leased.client import asyncio_shell

        return getattr(asyncio_shell, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
