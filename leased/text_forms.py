"""The text forms of the wire protocol: resource and state strings, killpath arguments.

INQUIRE answers with a *state string* (wire spec §6.1, §6.2): the held
leases as ``LS:RES:path:offset[:path:offset]:lver`` (``SH`` for a shared
one) separated by spaces, with a backslash before every space and colon a
path or name contains.  :func:`format_resource` writes one the way
libsanlock's parser reads it back, :func:`parse_resource` and
:func:`parse_state` read them as libsanlock does.  A KILLPATH request's
arguments are one string split on unescaped whitespace
(:func:`split_killpath_args`).

Pure functions of text and :mod:`leased.protocol`'s typed views: no I/O,
shared by the daemon, the client and the command lines.
"""

from __future__ import annotations

from leased.errors import LeaseError, ResultCode
from leased.protocol import MAX_DISKS, NAME_LEN, PATH_LEN, RES_LVER, RES_SHARED, Disk, Resource


def escape_path(path: str) -> str:
    """Backslash before every unescaped space and colon; an existing escape is kept."""
    out, chars = [], iter(path)
    for ch in chars:
        if ch == "\\":
            out.append(ch + next(chars, ""))
        elif ch in " :":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def format_resource(resource: Resource, lver: int | None) -> str:
    """``LS:RES:path:offset[:path:offset]:lver`` or ``...:SH`` (lver None means shared)."""
    parts = [resource.lockspace.decode(errors="surrogateescape"), resource.name.decode(errors="surrogateescape")]
    for disk in resource.disks:
        parts += [escape_path(disk.path), str(disk.offset)]
    parts.append("SH" if lver is None else str(lver))
    return ":".join(parts)


def _split_unescaped(text: str, sep: str) -> list[str]:
    fields, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    fields.append("".join(current))
    return fields


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for ch in chars:
        out.append(next(chars, "") if ch == "\\" else ch)
    return "".join(out)


def parse_resource(text: str) -> Resource:
    """One resource of a state string, as libsanlock's parser reads it."""
    fields = _split_unescaped(text, ":")
    separators = len(fields) - 1
    if separators < 1 or separators == 2:
        raise LeaseError(ResultCode.EINVAL, f"resource string {text!r} has {separators} separators")
    num_disks = (separators - 1) // 2
    if num_disks > MAX_DISKS:
        raise LeaseError(ResultCode.EINVAL, f"resource string {text!r} has more than {MAX_DISKS} disks")
    lockspace, name = _unescape(fields[0]).encode(), _unescape(fields[1]).encode()
    if len(lockspace) > NAME_LEN or len(name) > NAME_LEN:
        raise LeaseError(ResultCode.EINVAL, f"name too long in {text!r}")
    disks = []
    for index in range(num_disks):
        path = _unescape(fields[2 + 2 * index])
        if not path or len(path.encode()) >= PATH_LEN:
            raise LeaseError(ResultCode.EINVAL, f"bad path in {text!r}")
        disks.append(Disk(path, int(fields[3 + 2 * index] or "0", 0)))
    flags, lver = 0, 0
    if (separators - 1) % 2:
        last = fields[-1]
        if last.startswith("SH"):
            flags |= RES_SHARED
        else:
            flags |= RES_LVER
            lver = int(last, 0)
    return Resource(lockspace, name, lver=lver, flags=flags, num_disks=len(disks), disks=tuple(disks))


def split_state(state: str) -> list[str]:
    """Split a state string into resource strings on unescaped spaces."""
    return [part for part in _split_unescaped(state.rstrip("\0"), " ") if part]


def parse_state(state: str) -> list[Resource]:
    return [parse_resource(part) for part in split_state(state)]


def split_killpath_args(text: str) -> list[str]:
    """A KILLPATH request's arguments, split on unescaped whitespace (backslash escapes as libsanlock writes them)."""
    args: list[str] = []
    current, escaped, any_char = [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped, any_char = False, True
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if any_char:
                args.append("".join(current))
            current, any_char = [], False
        else:
            current.append(ch)
            any_char = True
    if any_char:
        args.append("".join(current))
    return args
