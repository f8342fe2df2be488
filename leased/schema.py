"""Fast, checked use of construct schemas.

Plain construct schemas validate as they go but are slow (about 50 µs to
parse a 200-byte leader); ``.compile()`` makes them several times faster but
skips checks, so a short buffer could parse into garbage.  Every hot parse
and build goes through here: the compiled schema, and an exact length check
first.  tests/test_ondisk.py and tests/test_protocol.py check that compiled
and plain schemas agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from construct import Construct

_compiled: dict[int, tuple[Construct, Construct, int]] = {}


def _entry(schema: Construct) -> tuple[Construct, Construct, int]:
    entry = _compiled.get(id(schema))
    if entry is None:
        entry = _compiled[id(schema)] = (schema, schema.compile(), schema.sizeof())
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
    _, compiled, size = _entry(schema)
    if len(raw) != size:
        raise ValueError(f"{size} bytes needed, got {len(raw)}")
    return Parsed(compiled.parse(raw))


def build(schema: Construct, values: object) -> bytes:
    return bytes(_entry(schema)[1].build(values))


def sizeof(schema: Construct) -> int:
    return _entry(schema)[2]
