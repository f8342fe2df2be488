"""The requests python3-sanlock sends where leased's own client sends something else.

Sans-I/O exchanges built from :mod:`leased.client.exchanges`' primitives:
WRITE_RESOURCE carries max_hosts in ``data`` and num_hosts in ``data2``
(sanlock 3.8.5 reads num_hosts from ``data``, wire spec §5.15); ACQUIRE is
not followed by an INQUIRE; REQUEST and ACQUIRE send any number of disks and
let the daemon judge them; KILLPATH arguments are escaped the binding's way.
"""

from __future__ import annotations

from leased.client.exchanges import _Exchange, _simple
from leased.protocol import (
    ACQUIRE_LVB,
    REQUEST_NEXT_LVER,
    TARGET_SELF,
    WRITE_CLEAR,
    Cmd,
    Killpath,
    Options,
    Resource,
)


def _write_resource_exchange(res: Resource, max_hosts: int, num_hosts: int, clear: bool) -> _Exchange[int]:
    # libsanlock sends max_hosts in `data` and num_hosts in `data2`; sanlock
    # 3.8.5 takes num_hosts from `data` (wire spec §5.15): kept as it is.
    flags = WRITE_CLEAR if clear else 0
    body = res.encode()
    return (
        yield from _simple(Cmd.WRITE_RESOURCE, body, "write_resource", flags=flags, data=max_hosts, data2=num_hosts)
    )


def _acquire_exchange(res: Resource, lvb: bool, target: int) -> _Exchange[int]:
    body = res.encode() + Options().encode()
    flags = ACQUIRE_LVB if lvb else 0
    return (yield from _simple(Cmd.ACQUIRE, body, "acquire", flags=flags, data=1, data2=target))


def _request_exchange(res: Resource, force_mode: int, next_lver: bool) -> _Exchange[int]:
    flags = REQUEST_NEXT_LVER if next_lver else 0
    return (yield from _simple(Cmd.REQUEST, res.encode(), "request", flags=flags, data=force_mode))


def _escape_killpath_arg(arg: bytes) -> bytes:
    return arg.replace(b"\\", b"\\\\").replace(b" ", b"\\ ")


def _killpath_exchange(path: str, args: str) -> _Exchange[int]:
    return (yield from _simple(Cmd.KILLPATH, Killpath(path, args).encode(), "killpath", data2=TARGET_SELF))
