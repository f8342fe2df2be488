"""python3-sanlock's API in pure Python: ``import leased.sanlock as sanlock`` and nothing else changes.

Debian's ``python3-sanlock`` 3.8.5 is a C extension over libsanlock; this
module offers the same functions, arguments, defaults, return values,
exceptions and constants, and talks to the daemon (real sanlock or leased)
through leased's sans-I/O client core (:mod:`leased.client.exchanges`)
driven over blocking Unix sockets (:class:`leased.client.blocking._SyncConnection`).

What "the same" means here, function by function, is what the binding does
on the wire and in Python:

* every call but ``register``, ``killpath``, the event fd and the ``slkfd=``
  calls opens a one-shot connection to ``$SANLOCK_RUN_DIR/sanlock.sock``
  (else ``/run/sanlock``), sends one request and reads its reply;
* ``register()`` returns the registered socket's fd, which the program
  owns: pass it as ``slkfd``, and close it (``os.close``) to let the daemon
  release its leases, as when the process exits;
* ``get_alignment`` reads the device itself (no daemon), as libsanlock's
  ``sanlock_direct_align`` does;
* one difference on purpose: calls on one ``slkfd`` from several threads
  take turns (a lock per fd number, :mod:`~leased.sanlock.transport`),
  where libsanlock lets their requests and replies interleave;
* a failure is ``SanlockException(errno, message, strerror)``: a result
  between -200 and 0 becomes the positive errno and ``os.strerror``'s text,
  any other (sanlock's own codes such as -243, and the binding's own
  positive EINVAL) stays as it is with ``sanlock_strerror``'s text;
* argument errors the binding raises before sending anything (names that are
  not bytes, disks that are not a list of ``(path, offset)`` tuples, an
  align or sector it does not know, a size outside 1..4096) are the same
  ``TypeError``/``ValueError`` with the same message.

Where the exchanges of :mod:`leased.client.exchanges` send what libsanlock
sends, they are used as they are; where the binding differs from leased's own
client (WRITE_RESOURCE carries max_hosts in ``data``; ACQUIRE is not followed
by an INQUIRE; REQUEST and ACQUIRE send any number of disks and let the
daemon judge them; KILLPATH escapes arguments the binding's way) the
exchange is built here from the same primitives.  ``register()`` runs the
core's ``_register`` (REGISTER, then an INQUIRE whose reply shows the daemon
took it), so it returns a registration the daemon already knows.  No trio,
no lease algorithm, no storage module is imported: this module sits in the
client stack (``tests/test_layers.py``), and ``tests/test_pure_sanlock.py``
compares it call for call with the C binding on both daemons.

The package: :mod:`~leased.sanlock.results` (the exception and the return
dicts), :mod:`~leased.sanlock.arguments` (the binding's argument rules),
:mod:`~leased.sanlock.exchanges` (the requests built here),
:mod:`~leased.sanlock.transport` (connections and fds), and here the API
itself, one function per binding function.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import socket
import stat
import struct
from contextlib import suppress
from typing import Final

from leased.client.exchanges import (
    _END_EVENT_MARK,
    EVENT_CB_SIZE,
    _add_lockspace,
    _end_event,
    _geometry_flags,
    _get_hosts,
    _get_lockspaces,
    _get_lvb,
    _inq_lockspace,
    _inquire,
    _parse_events,
    _read_lockspace,
    _read_resource,
    _read_resource_owners,
    _reg_event,
    _register,
    _release,
    _rem_lockspace,
    _set_event,
    _set_lvb,
    _write_lockspace,
)
from leased.client.results import HostInfo
from leased.errors import LeaseError
from leased.protocol import (
    LSF_ADD,
    LSF_REM,
    MAX_DISKS,
    MAX_LVB,
    PATH_LEN,
    RES_LVER,
    RES_SHARED,
    SETEV_ALL_HOSTS,
    SETEV_CLEAR_EVENT,
    SETEV_CLEAR_HOSTID,
    SETEV_CUR_GENERATION,
    SETEV_REPLACE_EVENT,
    HostEvent,
    HostState,
    Resource,
)
from leased.sanlock.arguments import (
    _HELPER_LEN,
    _U32,
    _U64,
    ALIGN_SIZE,
    SECTOR_SIZE,
    _bytes_arg,
    _checked_path,
    _disks,
    _geometry,
    _int,
    _list,
    _name,
    _path,
    _path_bytes,
    _version,
)
from leased.sanlock.exchanges import (
    _acquire_exchange,
    _escape_killpath_arg,
    _killpath_exchange,
    _request_exchange,
    _write_resource_exchange,
)
from leased.sanlock.results import (
    Disks,
    HeldResource,
    HostStatus,
    JoinedLockspace,
    LockspaceEvent,
    LockspaceInfo,
    PathArgument,
    ResourceInfo,
    SanlockException,
    _error,
)
from leased.sanlock.transport import _adopt, _kept, _on_fd, _one_shot, _target, _targeted

__all__ = [
    "ALIGN_SIZE",
    "HOST_DEAD",
    "HOST_FAIL",
    "HOST_FREE",
    "HOST_LIVE",
    "HOST_UNKNOWN",
    "LSFLAG_ADD",
    "LSFLAG_REM",
    "REQ_FORCE",
    "REQ_GRACEFUL",
    "RES_LVER",
    "RES_SHARED",
    "SECTOR_SIZE",
    "SETEV_ALL_HOSTS",
    "SETEV_CLEAR_EVENT",
    "SETEV_CLEAR_HOSTID",
    "SETEV_CUR_GENERATION",
    "SETEV_REPLACE_EVENT",
    "SanlockException",
    "acquire",
    "add_lockspace",
    "end_event",
    "get_alignment",
    "get_event",
    "get_hosts",
    "get_lockspaces",
    "get_lvb",
    "inq_lockspace",
    "inquire",
    "killpath",
    "read_lockspace",
    "read_resource",
    "read_resource_owners",
    "reg_event",
    "register",
    "release",
    "rem_lockspace",
    "request",
    "set_event",
    "set_lvb",
    "write_lockspace",
    "write_resource",
]

# --------------------------------------------------------------------------
# Module constants, as python3-sanlock 3.8.5 defines them

LSFLAG_ADD: Final = LSF_ADD
LSFLAG_REM: Final = LSF_REM
REQ_FORCE: Final = 1
REQ_GRACEFUL: Final = 2
HOST_UNKNOWN: Final = int(HostState.UNKNOWN)
HOST_FREE: Final = int(HostState.FREE)
HOST_LIVE: Final = int(HostState.LIVE)
HOST_FAIL: Final = int(HostState.FAIL)
HOST_DEAD: Final = int(HostState.DEAD)
# SETEV_*, RES_LVER and RES_SHARED are leased.protocol's, under the binding's names.


_BLKSSZGET: Final = 0x1268
"""ioctl: a block device's logical sector size."""


def _hosts(hosts: list[HostInfo]) -> list[HostStatus]:
    return [
        {
            "host_id": host.host_id,
            "generation": host.generation,
            "timestamp": host.timestamp,
            "io_timeout": host.io_timeout,
            "flags": host.flags,
        }
        for host in hosts
    ]


# --------------------------------------------------------------------------
# The API


def register() -> int:
    """register() -> int
    Register to sanlock daemon and return the connection fd."""
    return _kept("Sanlock registration failed", _register())


def get_alignment(path: PathArgument, /) -> int:
    """get_alignment(path) -> int
    Get device alignment."""
    raw = _path_bytes(path)[: PATH_LEN - 1]
    try:
        fd = os.open(raw, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise _error(-(exc.errno or _errno.ENODEV), "Unable to get device alignment") from None
    try:
        sector = 512
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            buf = fcntl.ioctl(fd, _BLKSSZGET, struct.pack("i", 0))
            sector = struct.unpack("i", buf)[0]
    except OSError as exc:
        raise _error(-(exc.errno or _errno.EIO), "Unable to get device alignment") from None
    finally:
        os.close(fd)
    if sector == 512:
        return 1048576
    if sector == 4096:
        return 8388608
    raise _error(-_errno.EINVAL, "Unable to get device alignment")


def write_lockspace(
    lockspace: bytes,
    path: PathArgument,
    offset: int = 0,
    max_hosts: int = 0,
    iotimeout: int = 0,
    align: int = 1048576,
    sector: int = 512,
) -> None:
    """write_lockspace(lockspace, path, offset=0, max_hosts=0, iotimeout=0, align=1048576, sector=512)
    Initialize or update a device to be used as sanlock lockspace.
    Align can be one of (1048576, 2097152, 4194304, 8388608).
    Sector can be one of (512, 4096)."""
    name, disk_path = _name(lockspace), _path(path)
    offset, max_hosts, iotimeout = _int(offset) & _U64, _int(max_hosts), _int(iotimeout) & _U32
    align, sector = _geometry(align, sector)
    exchange = _write_lockspace(name, disk_path, offset, iotimeout, align, sector, max_hosts)
    _one_shot("Sanlock lockspace write failure", exchange)


def read_lockspace(
    path: PathArgument,
    offset: int = 0,
    align: int = 1048576,
    sector: int = 512,
) -> LockspaceInfo:
    """read_lockspace(path, offset=0, align=1048576, sector=512)
     -> dict
    Read the lockspace information from a device at a specific offset.
    Align can be one of (1048576, 2097152, 4194304, 8388608).
    Sector can be one of (512, 4096)."""
    disk_path, offset = _path(path), _int(offset) & _U64
    align, sector = _geometry(align, sector)
    record = _one_shot("Sanlock lockspace read failure", _read_lockspace(disk_path, offset, 0, align, sector))
    return {"lockspace": record.name, "iotimeout": record.io_timeout}


def write_resource(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    max_hosts: int = 0,
    num_hosts: int = 0,
    clear: bool = False,
    align: int = 1048576,
    sector: int = 512,
) -> None:
    """write_resource(lockspace, resource, disks, max_hosts=0, num_hosts=0, clear=False, align=1048576, sector=512)
    Initialize a device to be used as sanlock resource.
    The disks must be in the format: [(path, offset), ... ].
    If clear is True, the resource is cleared so subsequent read will
    return an error.
    Align can be one of (1048576, 2097152, 4194304, 8388608).
    Sector can be one of (512, 4096)."""
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    max_hosts, num_hosts, clear_flag = _int(max_hosts), _int(num_hosts), bool(_int(clear))
    parsed = _disks(disks)
    align, sector = _geometry(align, sector)
    message = "Sanlock resource write failure"
    if not parsed or len(parsed) > MAX_DISKS:
        raise _error(-_errno.EINVAL, message)
    res = Resource(ls_name, res_name, flags=_geometry_flags(align, sector), disks=tuple(parsed))
    _one_shot(message, _write_resource_exchange(res, max_hosts, num_hosts, clear_flag))


def read_resource(
    path: PathArgument,
    offset: int = 0,
    align: int = 1048576,
    sector: int = 512,
) -> ResourceInfo:
    """read_resource(path, offset=0, align=1048576, sector=512) -> dict
    Read the resource information from a device at a specific offset.
    Align can be one of (1048576, 2097152, 4194304, 8388608).
    Sector can be one of (512, 4096)."""
    disk_path, offset = _checked_path(path), _int(offset) & _U64
    align, sector = _geometry(align, sector)
    info = _one_shot("Sanlock resource read failure", _read_resource(disk_path, offset, align, sector))
    return {"lockspace": info.lockspace, "resource": info.name, "version": info.lver}


def add_lockspace(
    lockspace: bytes,
    host_id: int,
    path: PathArgument,
    offset: int = 0,
    iotimeout: int = 0,
    wait: bool = True,
) -> None:
    """add_lockspace(lockspace, host_id, path, offset=0, iotimeout=0, wait=True)
    Add a lockspace, acquiring a host_id in it. If wait is False the function
    will return immediately and the status can be checked using inq_lockspace.
    The iotimeout option configures the io timeout for the specific lockspace,
    overriding the default value (see the sanlock daemon parameter -o)."""
    name, host, disk_path = _name(lockspace), _int(host_id) & _U64, _path(path)
    offset, iotimeout, waiting = _int(offset) & _U64, _int(iotimeout) & _U32, bool(_int(wait))
    exchange = _add_lockspace(name, host, disk_path, offset, iotimeout, waiting)
    _one_shot("Sanlock lockspace add failure", exchange)


def inq_lockspace(
    lockspace: bytes,
    host_id: int,
    path: PathArgument,
    offset: int = 0,
    wait: bool = False,
) -> bool | None:
    """inq_lockspace(lockspace, host_id, path, offset=0, wait=False)
    Return True if the sanlock daemon currently owns the host_id in lockspace,
    False otherwise. The special value None is returned when the daemon is
    still in the process of acquiring or releasing the host_id. If the wait
    flag is set to True the function will block until the host_id is either
    acquired or released."""
    name, host, disk_path = _name(lockspace), _int(host_id) & _U64, _path(path)
    offset, waiting = _int(offset) & _U64, bool(_int(wait))
    return _one_shot("Sanlock lockspace inquire failure", _inq_lockspace(name, host, disk_path, offset, waiting))


def rem_lockspace(
    lockspace: bytes,
    host_id: int,
    path: PathArgument,
    offset: int = 0,
    wait: bool = True,
    unused: bool = False,
) -> None:
    """rem_lockspace(lockspace, host_id, path, offset=0, wait=True, unused=False)
    Remove a lockspace, releasing the acquired host_id. If wait is False the
    function will return immediately and the status can be checked using
    inq_lockspace. If unused is True the command will fail (EBUSY) if there is
    at least one acquired resource in the lockspace. Otherwise (the default)
    sanlock will try to terminate processes holding resource leases and upon
    successful termination these leases will be released."""
    name, host, disk_path = _name(lockspace), _int(host_id) & _U64, _path(path)
    offset, waiting, only_unused = _int(offset) & _U64, bool(_int(wait)), bool(_int(unused))
    exchange = _rem_lockspace(name, host, disk_path, offset, waiting, only_unused)
    _one_shot("Sanlock lockspace remove failure", exchange)


def get_lockspaces(*args: object, **kwargs: object) -> list[JoinedLockspace]:
    """get_lockspaces() -> list
    Return the list of lockspaces currently managed by sanlock. The reported
    flag indicates whether the lockspace is acquired (0) or in transition.
    The possible transition values are LSFLAG_ADD if the lockspace is in the
    process of being acquired, and LSFLAG_REM if it's in the process of being
    released.
    """
    # The binding declares keywords but parses none: any arguments are ignored.
    lockspaces = _one_shot("Sanlock get lockspaces failure", _get_lockspaces())
    return [
        {"lockspace": ls.name, "host_id": ls.host_id, "path": ls.path, "offset": ls.offset, "flags": ls.flags}
        for ls in lockspaces
    ]


def get_hosts(lockspace: bytes, host_id: int = 0) -> list[HostStatus]:
    """get_hosts(lockspace, host_id=0) -> list
    Return the list of hosts currently alive in a lockspace. When the host_id
    is specified then only the requested host status is returned. The reported
    flag indicates whether the host is free (HOST_FREE), alive (HOST_LIVE),
    failing (HOST_FAIL), dead (HOST_DEAD) or unknown (HOST_UNKNOWN).
    The unknown state is the default when sanlock just joined the lockspace
    and didn't collect enough information to determine the real status of other
    hosts. The dictionary returned also contains: the generation, the last
    timestamp and the io_timeout.
    """
    name, host = _name(lockspace), _int(host_id) & _U64
    return _hosts(_one_shot("Sanlock get hosts failure", _get_hosts(name, host)))


def read_resource_owners(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    align: int = 1048576,
    sector: int = 512,
) -> list[HostStatus]:
    """read_resource_owners(lockspace, resource, disks, align=1048576, sector=512) -> list
    Returns the list of hosts owning a resource, the list is not filtered and
    it might contain hosts that are currently failing or dead. The hosts are
    returned in the same format used by get_hosts.
    The disks must be in the format: [(path, offset), ... ].
    Align can be one of (1048576, 2097152, 4194304, 8388608).
    Sector can be one of (512, 4096)."""
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    align, sector = _int(align), _int(sector)
    parsed = _disks(disks)
    align, sector = _geometry(align, sector)
    message = "Unable to read resource owners"
    if not parsed or len(parsed) > MAX_DISKS:
        raise _error(-_errno.EINVAL, message)
    _, owners = _one_shot(message, _read_resource_owners(ls_name, res_name, parsed, align, sector))
    return _hosts(owners)


def acquire(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    slkfd: int = -1,
    pid: int = -1,
    shared: bool = False,
    lvb: bool = False,
    version: int | None = None,
) -> None:
    """acquire(lockspace, resource, disks [, slkfd=fd, pid=owner, shared=False, version=None, lvb=False])
    Acquire a resource lease for the current process (using the slkfd argument
    to specify the sanlock file descriptor) or for another process (using the
    pid argument). If shared is True the resource will be acquired in the shared
    mode. The version is the version of the lease that must be acquired or fail.
    The disks must be in the format: [(path, offset), ... ]
    If lvb is True the resource will be acquired with the LVB flag enabled
    to allow access to LVB data.
    """
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    fd, target, is_shared, with_lvb = _int(slkfd), _int(pid), bool(_int(shared)), bool(_int(lvb))
    message = "Sanlock resource not acquired"
    if fd == -1 and target == -1:
        raise _error(_errno.EINVAL, "Invalid slkfd and pid values")
    parsed = _disks(disks)
    lver = _version(version)
    if len(parsed) > MAX_DISKS:
        raise _error(-_errno.EINVAL, message)
    flags = (RES_SHARED if is_shared else 0) | (RES_LVER if lver is not None else 0)
    res = Resource(ls_name, res_name, lver=lver or 0, flags=flags, disks=tuple(parsed))
    _, data2 = _target(fd, target)
    _targeted(fd, target, message, _acquire_exchange(res, with_lvb, data2))


def inquire(slkfd: int = -1, pid: int = -1) -> list[HeldResource]:
    """inquire(slkfd=-1, pid=-1)
    Return list of resources held by current process (using the slkfd
    argument to specify the sanlock file descriptor) or for another
    process (using the pid argument).

    Does not access storage. To learn about resource state on storage,
    use sanlock.read_resource() and sanlock.read_resource_owners().

    Arguments
      slkfd (int):  The file descriptor returned from sanlock.register().
      pid (int):    The program pid to query.

    Returns
        List of resource dicts with the following keys:
          lockspace (bytes):    lockspace name
          resource (bytes):     resource name
          flags (int):          resource flags (sanlock.RES_*)
          version (int):        resource version
          disks (list):         list of disk tuples (path, offset)
    """
    fd, target = _int(slkfd), _int(pid)
    if fd == -1 and target == -1:
        raise _error(-_errno.EINVAL, "Invalid slkfd and pid values")
    _, data2 = _target(fd, target)
    held = _targeted(fd, target, "Inquire error", _inquire(data2))
    return [
        {
            "lockspace": lease.lockspace,
            "resource": lease.resource,
            "flags": RES_SHARED if lease.shared else RES_LVER,
            "version": 0 if lease.shared else lease.lver or 0,
            "disks": [(disk.path, disk.offset) for disk in lease.disks],
        }
        for lease in held
    ]


def release(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    slkfd: int = -1,
    pid: int = -1,
) -> None:
    """release(lockspace, resource, disks [, slkfd=fd, pid=owner])
    Release a resource lease for the current process.
    The disks must be in the format: [(path, offset), ... ]"""
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    fd, target = _int(slkfd), _int(pid)
    _disks(disks)
    # Neither slkfd nor pid: libsanlock asks for pid -1 on a new connection,
    # which is not registered (the daemon answers EBUSY).
    _, data2 = _target(fd, target)
    _targeted(fd, target, "Sanlock resource not released", _release(data2, ls_name, res_name))


def request(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    action: int = REQ_GRACEFUL,
    version: int | None = None,
) -> None:
    """request(lockspace, resource, disks [, action=REQ_GRACEFUL, version=None])
    Request the owner of a resource to do something specified by action.
    The possible values for action are: REQ_GRACEFUL to request a graceful
    release of the resource and REQ_FORCE to sigkill the owner of the
    resource (forcible release). The version should be either the next version
    to acquire or None (which automatically uses the next version).
    The disks must be in the format: [(path, offset), ... ]"""
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    force_mode = _int(action)
    parsed = _disks(disks)
    lver = _version(version)
    # Built here, not with exchanges._request_lease: the binding sends any
    # number of disks and lets the daemon judge them (-ERANGE).
    res = Resource(ls_name, res_name, lver=lver or 0, flags=RES_LVER if lver is not None else 0, disks=tuple(parsed))
    _one_shot("Sanlock request not submitted", _request_exchange(res, force_mode, next_lver=lver is None))


def killpath(
    path: PathArgument,
    args: list[PathArgument],
    slkfd: int = -1,
) -> None:
    """killpath(path, args [, slkfd=fd])
    Configure the path and arguments of the executable used to fence a
    process either by causing the pid to exit (kill) or putting it into
    a safe state (resources released).
    The arguments must be in the format: ["arg1", "arg2", ...]"""
    program = _path_bytes(path)
    items = _list(args, 2)
    fd = _int(slkfd)
    if len(program) + 1 > _HELPER_LEN:
        raise _error(_errno.EINVAL, "Killpath path argument too long")
    text = b""
    for item in items:
        escaped = _escape_killpath_arg(_path_bytes(item))
        if len(text) + len(escaped) + 2 > _HELPER_LEN:
            raise _error(_errno.EINVAL, "Killpath arguments are too long")
        text = text + b" " + escaped if text else escaped
    # Without slkfd libsanlock sends on fd -1: EBADF, nothing reaches a daemon.
    _on_fd(fd, "Killpath script not configured", _killpath_exchange(os.fsdecode(program), os.fsdecode(text)))


def reg_event(lockspace: bytes, /) -> int:
    """reg_event(lockspace) -> int
    Register an event listener for lockspace and return an open file descriptor
    for waiting for lockspace events. When the file descriptor becomes readable,
    you can use get_event to get pending events. When you are done, you must
    unregister the event listener using end_event."""
    return _kept("Unable to register event fd", _reg_event(_name(lockspace)))


def get_event(fd: int, /) -> list[LockspaceEvent]:
    """get_event(fd) -> list
    Get list of lockspace events.

    Each event is a dictionary with the following keys:
      from_host_id      host id of the host setting this event (int)
      from_generation   host generation of the host setting this event (int)
      host_id           my host id (int)
      generation        my generation where the event was set (int)
      event             event number (int)
      data              optional event data (int)
    """
    message = "Unable to get events"
    sock = _adopt(_int(fd), message)
    events: list[LockspaceEvent] = []
    try:
        while True:
            try:
                record = sock.recv(EVENT_CB_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return events
            except OSError as exc:
                raise _error(-(exc.errno or _errno.EIO), message) from None
            if len(record) != EVENT_CB_SIZE:  # EOF or a torn record: libsanlock's -1
                raise _error(-1, message)
            try:
                (event,) = _parse_events(record)
            except LeaseError as exc:
                raise _error(exc.rc, message) from None
            events.append(
                {
                    "from_host_id": event.from_host_id,
                    "from_generation": event.from_generation,
                    "host_id": event.host_id,
                    "generation": event.generation,
                    "event": event.event,
                    "data": event.data,
                }
            )
    finally:
        sock.detach()


def end_event(fd: int, lockspace: bytes, /) -> None:
    """end_event(fd, lockspace)
    Unregister an event listener for lockspace registered with reg_event."""
    event_fd, name = _int(fd), _name(lockspace)
    message = "Unable to unregister event fd"
    # As libsanlock: the end mark, then the fd is closed whatever happened;
    # if the mark could not be written that is EALREADY and the daemon is
    # not asked.
    try:
        os.write(event_fd, _END_EVENT_MARK)
        marked = True
    except OSError:
        marked = False
    with suppress(OSError):
        os.close(event_fd)
    if not marked:
        raise _error(-_errno.EALREADY, message)
    _one_shot(message, _end_event(name))


def set_event(lockspace: bytes, host_id: int, generation: int, event: int, data: int = 0, flags: int = 0) -> None:
    """set_event(lockspace, host_id, generation, event, data=0, flags=0)
    Set events to hosts on a lockspace.

    Arguments
      lockspace         lockspace name (str)
      host_id           recipient host_id (int)
      generation        recipient generation (int)
      event             event number (int)
      data              optional event data (int)
      flags             optional combination of event flags (int)

    Flags
      SETEV_CUR_GENERATION      if generation is zero, use current host
                                generation.
      SETEV_CLEAR_HOSTID        clear the host_id in the next renewal so host_id
                                will stop seeing this event. If the same event
                                was sent to other hosts, they will continue to
                                see the event until the event is cleared.
      SETEV_CLEAR_EVENT         Clear the event/data/generation values in the
                                next renewal, ending this event.
      SETEV_REPLACE_EVENT       Replace the existing event/data values of the
                                current event. Without this flag, the operation
                                will raise SanlockException with -EBUSY error.
      SETEV_ALL_HOSTS           set event for all hosts.

    Examples

      Send event 1 to host 42 on lockspace 'foo', using current host generation:
      set_event('foo', 42, 0, 1, flags=SETEV_CUR_GENERATION)

      Send the same event also to host 7 on lockspace 'foo', using current host
      generation. Both host 42 and host 7 will see the same event:
      set_event('foo', 7, 0, 1, flags=SETEV_CUR_GENERATION)

      Send event 3 to all hosts on lockspace 'foo', replacing previous events
      sent to other hosts. Note that you must use a valid host_id, but the
      generation is ignored:
      set_event('foo', 1, 0, 3, flags=SETEV_ALL_HOSTS|SETEV_REPLACE_EVENT)

    Notes

    Sequential set_events with different event/data values, within a short
    time span is likely to produce unwanted results, because the new
    event/data values replace the previous values before the previous values
    have been read.

    Unless SETEV_REPLACE_EVENT flag is used, sanlock will raise SanlockException
    with -EBUSY error in this case.
    """
    name = _name(lockspace)
    values = [_int(value) & _U64 for value in (host_id, generation, event, data)]
    host_event = HostEvent(values[0], values[1], values[2], values[3])
    _one_shot("Unable to set event", _set_event(name, host_event, _int(flags) & _U32))


def set_lvb(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    data: bytes,
) -> None:
    """set_lvb(lockspace, resource, disks, data)
    Set Lock Value Block for a given resource

    Arguments
      lockspace         lockspace name (str)
      resource          resource name (int)
      disks             path and offset (tuple)
      data              data to write (bytes)

    Notes
      The resource must be acquired with lvb=true.
      The size of data is limited by the sector size (512/4K).
      The new data is visible after the resource is released.
    """
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    value = _bytes_arg(data)
    _disks(disks)
    _one_shot("Unable to set lvb", _set_lvb(ls_name, res_name, value))


def get_lvb(
    lockspace: bytes,
    resource: bytes,
    disks: Disks,
    size: int,
) -> bytes:
    """get_lvb(lockspace, resource, disks, size) -> bytes
    Read Lock Value Block for a given resource

    Arguments
      lockspace         lockspace name (str)
      resource          resource name (int)
      disks             path and offset (tuple)
      size              amount of data to read (int)

    Returns
      data              data written with set_lvb

    Notes
      The resource must be acquired with lvb=True.
      size has to be in range 0 < n <= 4096.
    """
    ls_name, res_name = _name(lockspace), _name(resource)
    _list(disks, 3)
    wanted = _int(size) & _U32
    if not 0 < wanted <= MAX_LVB:
        raise ValueError(f"Invalid size {wanted}, must be in range: 0 < size <= {MAX_LVB}")
    _disks(disks)
    # libsanlock asks for the whole block (data2 0) and copies what fits.
    block = _one_shot("Unable to get lvb", _get_lvb(ls_name, res_name, 0))
    return block[:wanted].ljust(wanted, b"\0")
