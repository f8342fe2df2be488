"""The arguments both command lines take: LOCKSPACE, RESOURCE, areas and ``-A``.

``leased direct`` and ``leased client`` read lockspaces and resources as
sanlock's command line writes them (``NAME:HOST_ID:PATH:OFFSET``,
``LOCKSPACE:NAME:PATH:OFFSET[:LVER|:SH]``, a backslash escaping a ``:`` in a
path), and numbers as sanlock's ``atoll`` reads them.  The values they make
are :mod:`leased.locations`' argument types, which the direct operations take.
A bad argument raises :class:`~leased.errors.LeaseError` (EINVAL, or
ENAMETOOLONG for a name past 48 bytes), which each command line reports as
its own result.

These parse command-line text only; :func:`leased.text_forms.parse_resource`
is a different thing: it parses the resource strings of the wire protocol.
"""

from __future__ import annotations

from leased.constants import NAME_ID_SIZE, MiB
from leased.errors import LeaseError, ResultCode
from leased.locations import DumpTarget, LockspaceArg, ResourceArg


def split_escaped(text: str, sep: str = ":") -> list[str]:
    r"""Split on ``sep``; a backslash makes the next character literal (``a\:b``)."""
    parts, current, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _number(text: str) -> int:
    """atoll-like: leading digits, 0 when there are none; ``M`` multiplies by MiB."""
    digits = ""
    for ch in text.strip():
        if ch.isdigit() or (ch == "-" and not digits):
            digits += ch
        else:
            break
    value = int(digits) if digits not in ("", "-") else 0
    return value * MiB if "M" in text else value


def _check_name(name: str, what: str) -> None:
    if not name:
        raise LeaseError(ResultCode.EINVAL, f"empty {what} name")
    if len(name.encode()) > NAME_ID_SIZE:
        raise LeaseError(ResultCode.ENAMETOOLONG, f"{what} name longer than {NAME_ID_SIZE} bytes: {name!r}")


def parse_lockspace_spec(text: str) -> LockspaceArg:
    """A ``-s`` argument, ``NAME:HOST_ID:PATH:OFFSET``; a bad one is EINVAL (ENAMETOOLONG for a long name)."""
    parts = split_escaped(text)
    if len(parts) < 4:
        raise LeaseError(ResultCode.EINVAL, f"lockspace {text!r} is not NAME:HOST_ID:PATH:OFFSET")
    _check_name(parts[0], "lockspace")
    if not parts[2]:
        raise LeaseError(ResultCode.EINVAL, f"lockspace {text!r} has no path")
    return LockspaceArg(parts[0], _number(parts[1]), parts[2], _number(parts[3]))


def parse_resource_spec(text: str) -> ResourceArg:
    """A ``-r`` argument, ``LOCKSPACE:NAME:PATH:OFFSET[:LVER|:SH]``; a bad one is EINVAL (ENAMETOOLONG)."""
    parts = split_escaped(text)
    if len(parts) < 4:
        raise LeaseError(ResultCode.EINVAL, f"resource {text!r} is not LOCKSPACE:RESOURCE:PATH:OFFSET[:LVER|:SH]")
    _check_name(parts[0], "lockspace")
    _check_name(parts[1], "resource")
    if not parts[2]:
        raise LeaseError(ResultCode.EINVAL, f"resource {text!r} has no path")
    extra = parts[4] if len(parts) > 4 else ""
    shared = extra.upper() == "SH"
    return ResourceArg(parts[0], parts[1], parts[2], _number(parts[3]), 0 if shared else _number(extra), shared)


def parse_align_option(text: str) -> int:
    """``-A``: exactly 1M, 2M, 4M or 8M, anything else is 0 (as in sanlock)."""
    return {"1M": 1, "2M": 2, "4M": 4, "8M": 8}.get(text, 0) * MiB


def parse_dump_target(text: str) -> DumpTarget:
    """A ``dump`` or ``cluster`` argument, ``PATH[:OFFSET[:SIZE]]``."""
    parts = split_escaped(text)
    offset = _number(parts[1]) if len(parts) > 1 else 0
    size = _number(parts[2]) if len(parts) > 2 else 0
    return DumpTarget(parts[0], offset, size)
