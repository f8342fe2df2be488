"""Fast, checked use of construct schemas.

Plain construct schemas validate as they go but are slow (about 50 µs to
parse a 200-byte leader); ``.compile()`` makes them several times faster but
skips checks, so a short buffer could parse into garbage.  Every hot parse
and build goes through here: the compiled schema, and an exact length check
first.  tests/test_ondisk.py and tests/test_protocol.py check that compiled
and plain schemas agree.

A flat schema (little-endian integers, fixed ``Bytes`` and zero ``Padding``,
which every on-disk record is) is also read and written with the one
``struct.Struct`` it amounts to, derived from the schema itself: under many
clients the compiled schemas' containers and streams were a tenth of the
daemon's time.  Whatever the ``struct`` way does not take as it is (a value
out of range, bytes of another length, a missing field) goes to the compiled
schema, so errors are construct's own; tests/test_schema.py holds both ways
equal.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from construct import Bytes, Construct, FormatField, Padded, Pass, Renamed, Struct


class _Flat:
    """A flat schema as one ``struct.Struct``: the names of its fields in order, and the size of each bytes field."""

    __slots__ = ("byte_sizes", "layout", "names")

    def __init__(self, layout: struct.Struct, names: tuple[str, ...], byte_sizes: tuple[tuple[str, int], ...]) -> None:
        self.layout = layout
        self.names = names
        self.byte_sizes = byte_sizes


def flat_layout(schema: Construct) -> _Flat | None:
    """The ``struct`` equivalent of a Struct of little-endian integers, fixed Bytes and zero Padding; else None."""
    if not isinstance(schema, Struct):
        return None
    codes = ["<"]
    names: list[str] = []
    byte_sizes: list[tuple[str, int]] = []
    for sub in schema.subcons:
        inner = sub.subcon if isinstance(sub, Renamed) else None
        if isinstance(inner, FormatField) and sub.name and inner.fmtstr.startswith("<"):
            codes.append(inner.fmtstr[1:])
            names.append(sub.name)
        elif isinstance(inner, Bytes) and sub.name and isinstance(inner.length, int):
            codes.append(f"{inner.length}s")
            names.append(sub.name)
            byte_sizes.append((sub.name, inner.length))
        elif isinstance(sub, Padded) and sub.subcon is Pass and sub.pattern == b"\x00" and isinstance(sub.length, int):
            codes.append(f"{sub.length}x")
        else:
            return None
    layout = struct.Struct("".join(codes))
    if len(set(names)) != len(names) or layout.size != schema.sizeof():
        return None
    return _Flat(layout, tuple(names), tuple(byte_sizes))


_compiled: dict[int, tuple[Construct, Construct, int, _Flat | None]] = {}


def _entry(schema: Construct) -> tuple[Construct, Construct, int, _Flat | None]:
    entry = _compiled.get(id(schema))
    if entry is None:
        entry = _compiled[id(schema)] = (schema, schema.compile(), schema.sizeof(), flat_layout(schema))
    return entry


class Parsed:
    """One parsed struct, read a field at a time as the type the caller expects.

    construct is untyped: its parse result is a dict whose values could be
    anything as far as a type checker knows.  Each read here names the type
    it expects and checks it, so a schema that disagrees with its reader is a
    TypeError at the first parse in the tests, not a wrong value later.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def number(self, name: str) -> int:
        value = self._values[name]
        if not isinstance(value, int):
            raise TypeError(f"field {name!r} is {type(value).__name__}, not int")
        return value

    def raw(self, name: str) -> bytes:
        value = self._values[name]
        if not isinstance(value, bytes):
            raise TypeError(f"field {name!r} is {type(value).__name__}, not bytes")
        return value

    def struct(self, name: str) -> Parsed:
        value = self._values[name]
        if not isinstance(value, Mapping):
            raise TypeError(f"field {name!r} is {type(value).__name__}, not a struct")
        return Parsed(value)

    def numbers(self) -> dict[str, int]:
        """Every field of an integer-only struct by name (a TypeError if one is not an int)."""
        numbers: dict[str, int] = {}
        for key, value in self._values.items():
            if key.startswith("_"):
                continue
            if not isinstance(value, int):
                raise TypeError(f"field {key!r} is {type(value).__name__}, not int")
            numbers[key] = value
        return numbers

    def fields(self) -> dict[str, object]:
        """Every field by name, without construct's private ``_``-keys."""
        return {key: value for key, value in self._values.items() if not key.startswith("_")}


def parse_exact(schema: Construct, raw: bytes) -> Parsed:
    """Parse exactly ``schema.sizeof()`` bytes; anything else is a ValueError, never a silent parse."""
    _, compiled, size, flat = _entry(schema)
    if len(raw) != size:
        raise ValueError(f"{size} bytes needed, got {len(raw)}")
    if flat is not None:
        return Parsed(dict(zip(flat.names, flat.layout.unpack(raw), strict=True)))
    return Parsed(compiled.parse(raw))


def build(schema: Construct, values: object) -> bytes:
    _, compiled, _, flat = _entry(schema)
    if flat is not None and isinstance(values, Mapping):
        try:
            if all(isinstance(values[name], bytes) and len(values[name]) == size for name, size in flat.byte_sizes):
                return flat.layout.pack(*[values[name] for name in flat.names])
        except (KeyError, TypeError, struct.error):
            pass  # not as struct takes it: construct's own build raises (or converts) as it always did
    return bytes(compiled.build(values))


def sizeof(schema: Construct) -> int:
    return _entry(schema)[2]
