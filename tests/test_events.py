"""Host events between leased and sanlock hosts (set_event / reg_event / end_event, wire spec §5.23).

An event set on one host travels in its delta lease (the write_* fields plus
the recipient's bit in its bitmap) and is delivered by the recipient's
daemon to every event channel registered for the lockspace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemons import Daemon, LeaseFile, init_lease_file_direct, wait_for
from leased_daemons import leased_and_sanlock

from leased.client import Event, EventChannel, SanlockError
from leased.errors import ResultCode
from leased.protocol import SETEV_REPLACE_EVENT

pytestmark = pytest.mark.sanlock


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[LeaseFile, dict[str, Daemon]]]:
    lease_file = init_lease_file_direct(tmp_path / "leases", b"LS", [b"R1"], io_timeout=1)
    with leased_and_sanlock(tmp_path, lease_file) as daemons:
        yield lease_file, daemons


def wait_event(channel: EventChannel, timeout: float = 20) -> Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = channel.get_events()
        if events:
            assert len(events) == 1, events
            return events[0]
        time.sleep(0.05)  # polling a non-blocking channel, as python3-sanlock's get_event users do
    raise AssertionError("no event delivered")


def generation_of(daemon: Daemon, host_id: int) -> int:
    def ask() -> int | None:
        try:
            return next(h.generation for h in daemon.client().get_hosts(b"LS", host_id))
        except SanlockError as exc:
            if exc.rc == ResultCode.EAGAIN:  # sanlock: first scan of other hosts not done yet
                return None
            raise

    return wait_for(ask, 20, "get_hosts answers")


@pytest.mark.parametrize(("sender", "receiver"), [("sanlock", "leased"), ("leased", "sanlock")])
def test_event_crosses_implementations(hosts: tuple[LeaseFile, dict[str, Daemon]], sender: str, receiver: str) -> None:
    _, daemons = hosts
    ids = {"leased": 1, "sanlock": 2}
    to_host, from_host = ids[receiver], ids[sender]
    with daemons[receiver].client().reg_event(b"LS") as first, daemons[receiver].client().reg_event(b"LS") as second:
        generation = generation_of(daemons[sender], to_host)
        daemons[sender].client().set_event(b"LS", to_host, generation, 42, 7, flags=SETEV_REPLACE_EVENT)
        for channel in (first, second):  # every channel of the lockspace gets it
            event = wait_event(channel)
            assert (event.host_id, event.generation, event.event, event.data) == (to_host, generation, 42, 7)
            assert event.from_host_id == from_host
            assert event.from_generation == generation_of(daemons[receiver], from_host)
        assert first.get_events() == [], "an event is delivered once, not at every renewal"


def test_set_event_errors_on_leased(hosts: tuple[LeaseFile, dict[str, Daemon]]) -> None:
    _, daemons = hosts
    client = daemons["leased"].client()

    def rc(call: Callable[[], object]) -> int:
        try:
            call()
        except SanlockError as exc:
            return exc.rc
        return 0

    assert rc(lambda: client.reg_event(b"NOPE")) == ResultCode.ENOENT
    assert rc(lambda: client.set_event(b"LS", 0, 0, 1)) == ResultCode.EINVAL
    assert rc(lambda: client.set_event(b"NOPE", 2, 0, 1)) == ResultCode.ENOENT
    client.set_event(b"LS", 2, 0, 5, 6)
    assert rc(lambda: client.set_event(b"LS", 2, 0, 7, 6)) == ResultCode.EBUSY
    client.set_event(b"LS", 2, 0, 7, 6, flags=SETEV_REPLACE_EVENT)
