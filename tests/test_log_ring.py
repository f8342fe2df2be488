"""The in-memory log ring behind ``client log_dump``: kept raw, formatted when dumped, bounded."""

from __future__ import annotations

import logging
import re

from leased.logsetup import LogRing

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+ \[\d+\]: (.*)$")


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("leased.test", logging.DEBUG, __file__, 1, message, args, None)


def messages(ring: LogRing) -> list[str]:
    lines = ring.dump().decode().splitlines()
    found = [LINE.match(line) for line in lines]
    assert all(found), lines
    return [match.group(1) for match in found if match]


def test_records_are_formatted_when_dumped_as_sanlock_writes_them() -> None:
    ring = LogRing(1 << 20)
    ring.emit(record("cmd_register ci %d pid %d", 3, 4242))
    ring.emit(record("name %s %r", "LS", b"R1"))
    ring.emit(record("no arguments, 100%"))
    assert messages(ring) == ["cmd_register ci 3 pid 4242", "name LS b'R1'", "no arguments, 100%"]


def test_an_argument_that_may_change_is_formatted_at_once() -> None:
    ring = LogRing(1 << 20)
    holders = [1]
    ring.emit(record("holders %s", holders))
    holders.append(2)
    assert messages(ring) == ["holders [1]"]


def test_a_bad_format_is_kept_readable() -> None:
    ring = LogRing(1 << 20)
    ring.emit(record("two values %d %d", 1))
    ring.emit(record("fine %d", 2))
    assert messages(ring)[-1] == "fine 2"


def test_the_dump_keeps_the_newest_lines_within_capacity() -> None:
    ring = LogRing(2_000)
    for index in range(500):
        ring.emit(record("line %d of the ring", index))
    dumped = ring.dump()
    assert len(dumped) <= 2_000
    kept = messages(ring)
    assert kept[-1] == "line 499 of the ring"
    assert kept == [f"line {index} of the ring" for index in range(500 - len(kept), 500)]
    assert len(ring.entries) < 500  # the estimate drops old records as new ones come
