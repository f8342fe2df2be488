"""The in-memory log ring behind ``client log_dump``: kept raw, formatted when dumped, bounded."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from leased.logsetup import LogRing, debug

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


@contextmanager
def ring_logger(*others: logging.Handler) -> Iterator[tuple[logging.Logger, LogRing, list[logging.LogRecord]]]:
    """A logger of its own (not propagating) with a ring and ``others``; the list gets every LogRecord built."""
    ring = LogRing(1 << 20)
    logger = logging.getLogger(f"leased.test.ring{id(ring)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    for handler in (ring, *others):
        logger.addHandler(handler)
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = factory(*args, **kwargs)
        built.append(made)
        return made

    logging.setLogRecordFactory(counting)
    try:
        yield logger, ring, built
    finally:
        logging.setLogRecordFactory(factory)
        for handler in (ring, *others):
            logger.removeHandler(handler)


class Kept(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_debug_builds_no_record_when_only_the_ring_takes_debug() -> None:
    info = Kept(logging.INFO)
    with ring_logger(info) as (logger, ring, built):
        debug(logger, "cmd_register ci %d pid %d", 3, 4242)
    assert messages(ring) == ["cmd_register ci 3 pid 4242"]
    assert built == [] and info.records == []


def test_debug_is_an_ordinary_record_when_another_sink_takes_debug() -> None:
    file_at_7 = Kept(logging.DEBUG)
    with ring_logger(file_at_7) as (logger, ring, built):
        debug(logger, "client_pid_dead ci %d pid %d", 3, 4242)
    assert messages(ring) == ["client_pid_dead ci 3 pid 4242"]
    assert [r.getMessage() for r in file_at_7.records] == ["client_pid_dead ci 3 pid 4242"]
    assert len(built) == 1


def test_debug_is_an_ordinary_record_when_a_filter_may_want_it() -> None:
    seen: list[str] = []

    def note(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    with ring_logger() as (logger, ring, _):
        logger.addFilter(note)
        debug(logger, "holders %s", [1])
        logger.removeFilter(note)
    assert seen == ["holders [1]"]
    assert messages(ring) == ["holders [1]"]


def test_debug_keeps_nothing_when_debug_is_off() -> None:
    with ring_logger() as (logger, ring, built):
        logger.setLevel(logging.INFO)
        debug(logger, "client_pid_dead ci %d pid %d", 3, 4242)
    assert messages(ring) == [] and built == []


def test_a_line_kept_directly_formats_like_a_record() -> None:
    """The fast entry keeps the same parts: an argument that may change is formatted at once, as emit does."""
    with ring_logger() as (logger, ring, _):
        holders = [1]
        debug(logger, "holders %s, name %r", holders, b"R1")
        holders.append(2)
        ring.emit(record("holders %s, name %r", [1], b"R1"))
    assert messages(ring) == ["holders [1], name b'R1'"] * 2
