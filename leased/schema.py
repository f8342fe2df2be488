"""Fast, checked use of construct schemas.

Plain construct schemas validate as they go but are slow (about 50 µs to
parse a 200-byte leader); ``.compile()`` makes them several times faster but
skips checks, so a short buffer could parse into garbage.  Every hot parse
and build goes through here: the compiled schema, and an exact length check
first.  tests/test_ondisk.py and tests/test_protocol.py check that compiled
and plain schemas agree.
"""

from __future__ import annotations

from typing import Any

from construct import Construct

_compiled: dict[int, tuple[Construct, Construct, int]] = {}


def _entry(schema: Construct) -> tuple[Construct, Construct, int]:
    entry = _compiled.get(id(schema))
    if entry is None:
        entry = _compiled[id(schema)] = (schema, schema.compile(), schema.sizeof())
    return entry


def parse_exact(schema: Construct, raw: bytes) -> Any:
    """Parse exactly ``schema.sizeof()`` bytes; anything else is a ValueError, never a silent parse."""
    _, compiled, size = _entry(schema)
    if len(raw) != size:
        raise ValueError(f"{size} bytes needed, got {len(raw)}")
    return compiled.parse(raw)


def build(schema: Construct, values: object) -> bytes:
    return bytes(_entry(schema)[1].build(values))


def sizeof(schema: Construct) -> int:
    return _entry(schema)[2]
