"""wdmd's wire format as leased writes it: the 176-byte header of wdmd 3.8.5, field by field.

The layout is checked with :mod:`struct` against the header as wdmd's
``wdmd_header`` declares it (six u32, three u64, a 128-byte name, native
byte order), not against leased's own schema.  That leased and wdmd agree
in practice is shown by the tests that run the real wdmd (test_watchdog.py).
"""

from __future__ import annotations

import struct

import pytest

from leased import wdmd

LAYOUT = struct.Struct("=6I3Q128s")
FIELDS = (
    "magic",
    "cmd",
    "len",
    "flags",
    "test_interval",
    "fire_timeout",
    "last_keepalive",
    "renewal_time",
    "expire_time",
    "name",
)


def fields_of(raw: bytes) -> dict[str, object]:
    return dict(zip(FIELDS, LAYOUT.unpack(raw), strict=True))


def test_the_header_is_176_bytes() -> None:
    assert wdmd.HEADER_SIZE == LAYOUT.size == 176


def test_register_carries_the_name_and_nothing_else() -> None:
    sent = fields_of(wdmd.register(wdmd.client_name(b"LS", 7)))
    assert sent["cmd"] == 1
    assert sent["name"] == b"sanlock_LS:7".ljust(128, b"\0")
    assert all(sent[name] == 0 for name in FIELDS if name not in ("cmd", "name"))


def test_test_live_carries_renewal_and_expiry() -> None:
    sent = fields_of(wdmd.alive(1_000, 1_080))
    assert (sent["cmd"], sent["renewal_time"], sent["expire_time"]) == (4, 1_000, 1_080)
    assert sent["name"] == bytes(128)


@pytest.mark.parametrize(("cmd", "number"), [("REFCOUNT_SET", 2), ("REFCOUNT_CLEAR", 3), ("STATUS", 5)])
def test_the_other_commands_are_sanlocks_numbers(cmd: str, number: int) -> None:
    assert fields_of(wdmd.message(wdmd.WdmdCmd[cmd]))["cmd"] == number


def test_no_command_past_status_is_offered() -> None:
    """wdmd 3.8.5 never answers command 7 (open the device, newer wdmd): a client waiting for it would hang."""
    assert max(wdmd.WdmdCmd) == 5


def test_a_status_reply_is_read_from_its_own_fields() -> None:
    reply = LAYOUT.pack(0, 5, 0, 0, 10, 60, 123_456, 0, 0, b"")
    assert wdmd.decode_status(reply) == wdmd.WdmdStatus(test_interval=10, fire_timeout=60, last_keepalive=123_456)


def test_a_short_status_reply_is_refused() -> None:
    with pytest.raises(ValueError):
        wdmd.decode_status(bytes(175))


def test_a_name_too_long_for_wdmd_is_refused_and_client_names_are_cut() -> None:
    with pytest.raises(ValueError):
        wdmd.register(b"x" * 128)
    assert len(wdmd.client_name(b"L" * 200, 2_000)) == 127
