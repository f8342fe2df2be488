"""The struct way of flat schemas (leased.schema) reads and writes exactly what construct does.

Every construct Struct of the wire, disk and wdmd formats is found by walking
their modules; those ``flat_layout`` takes (every on-disk record among them)
are parsed from random bytes and built from random field values both ways,
and values the struct way does not take must fail (or convert) exactly as
construct's compiled build does, since it is what they are handed to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from construct import Bytes, Construct, FormatField, Renamed, Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from leased import ondisk, protocol, schema, wdmd

SCHEMAS: dict[str, Construct] = {
    f"{module.__name__}.{name}": value
    for module in (ondisk, protocol, wdmd)
    for name, value in vars(module).items()
    if isinstance(value, Struct)
}
FLAT = {name: value for name, value in SCHEMAS.items() if schema.flat_layout(value) is not None}


def test_every_on_disk_record_takes_the_struct_way() -> None:
    records = (ondisk.leader_record, ondisk.paxos_dblock, ondisk.mode_block, ondisk.request_record)
    assert all(schema.flat_layout(record) is not None for record in records)
    assert schema.flat_layout(protocol.sm_header) is not None
    assert len(FLAT) < len(SCHEMAS), "nested schemas stay with construct"


def field_values(fmt: Construct) -> st.SearchStrategy[dict[str, Any]]:
    """Values a flat schema's fields take, boundaries included."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for sub in fmt.subcons:
        if not isinstance(sub, Renamed):
            continue
        inner = sub.subcon
        if isinstance(inner, FormatField):
            code = inner.fmtstr[1:]
            bits = 8 * struct.calcsize("<" + code)  # standard sizes: a bare "L" is the native 8 bytes
            low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
            fields[sub.name] = st.one_of(st.sampled_from([low, high]), st.integers(low, high))
        elif isinstance(inner, Bytes):
            fields[sub.name] = st.binary(min_size=inner.length, max_size=inner.length)
    return st.fixed_dictionaries(fields)


def plain_fields(fmt: Construct, raw: bytes) -> dict[str, object]:
    return {key: value for key, value in fmt.parse(raw).items() if not key.startswith("_")}


@pytest.mark.parametrize("name", sorted(FLAT))
@settings(max_examples=40)
@given(data=st.data())
def test_parse_and_build_agree_with_construct(name: str, data: st.DataObject) -> None:
    fmt = FLAT[name]
    raw = data.draw(st.binary(min_size=fmt.sizeof(), max_size=fmt.sizeof()))
    assert schema.parse_exact(fmt, raw).fields() == plain_fields(fmt, raw)
    values = data.draw(field_values(fmt))
    built = schema.build(fmt, values)
    assert built == fmt.build(values)
    assert schema.parse_exact(fmt, built).fields() == values


def outcome(build: Callable[[], bytes]) -> object:
    try:
        return build()
    except Exception as exc:  # the type is what must agree
        return type(exc)


@pytest.mark.parametrize("name", sorted(FLAT))
@settings(max_examples=40)
@given(data=st.data())
def test_values_struct_does_not_take_go_to_construct(name: str, data: st.DataObject) -> None:
    fmt = FLAT[name]
    values = data.draw(field_values(fmt))
    if not values:
        return
    field = data.draw(st.sampled_from(sorted(values)))
    original = values[field]
    bad: object
    if isinstance(original, bytes):
        bad = data.draw(
            st.one_of(
                st.binary(max_size=len(original) + 8).filter(lambda b: len(b) != len(original)),
                st.just(bytearray(original)),
                st.just(len(original)),
            )
        )
    else:
        bad = data.draw(st.one_of(st.integers(max_value=-(1 << 64)), st.integers(min_value=1 << 64), st.just(1.5)))
    broken: dict[str, Any] = {**values, field: bad}
    compiled = fmt.compile()
    assert outcome(lambda: schema.build(fmt, broken)) == outcome(lambda: bytes(compiled.build(broken)))
    missing = {key: value for key, value in values.items() if key != field}
    assert outcome(lambda: schema.build(fmt, missing)) == outcome(lambda: bytes(compiled.build(missing)))
