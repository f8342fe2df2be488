"""Host events: what one host tells another through its delta lease, and who hears it.

sanlock lets a host set one event (generation, event, data) in its own
delta lease and flag the hosts it is for in its bitmap (SET_EVENT, on-disk
spec §5.5); the flagged hosts' daemons see the flag on their next scan and
write the event to every event channel registered for the lockspace
(REG_EVENT), until a client ends them (END_EVENT).

This module owns those rules, as functions of a
:class:`~leased.lockspace.JoinedLockspace` and plain arguments:

* :func:`set_event`: our event, its clearing, replacement and flags;
* :func:`make_channel_room` and :func:`end_channels`: the lockspace's event
  channels, at most :data:`MAX_EVENT_CHANNELS`;
* :func:`deliver_event`: another host's event for us, to every channel,
  once.

Refusals are :class:`~leased.errors.Refused` (logged by the command
layer) or :class:`~leased.errors.QuietRefusal` (an ordinary answer).  No
request and no reply here: :mod:`leased.commands` decodes SET_EVENT,
REG_EVENT and END_EVENT and calls in; :mod:`leased.lifecycle` delivers what
a scan found.
"""

from __future__ import annotations

import logging

from leased.errors import QuietRefusal, Refused, ResultCode
from leased.host_status import HostRecord
from leased.lockspace import JoinedLockspace, make_room
from leased.protocol import HostEvent, encode_event_cb

log = logging.getLogger(__name__)

MAX_EVENT_CHANNELS = 32


def set_event(
    lockspace: JoinedLockspace,
    event: HostEvent,
    *,
    all_hosts: bool = False,
    clear_hostid: bool = False,
    clear_event: bool = False,
    cur_generation: bool = False,
    replace: bool = False,
) -> None:
    """Set (or clear) our event in the lockspace and flag the hosts it is for (SETEV_* flags by name).

    A pending event (set less than the bitmap's keep time ago) is replaced
    only with ``replace``; otherwise -EBUSY, an ordinary answer.
    """
    if lockspace.lease is None or lockspace.table is None:
        raise QuietRefusal(ResultCode.ENOENT, "set_event: lockspace not joined")
    max_hosts = lockspace.lease.area.geometry.max_hosts
    if not all_hosts and not 1 <= event.host_id <= max_hosts:
        raise Refused(ResultCode.EINVAL, f"set_event: host_id {event.host_id} not in 1..{max_hosts}")
    lease, now = lockspace.lease, lockspace.clock.now()
    keep = lockspace.set_bitmap_seconds or 6 * lockspace.io_timeout
    if clear_hostid:
        lockspace.request_bits.pop(event.host_id, None)
    if clear_event:
        lease.event = (0, 0, 0)
        return
    if clear_hostid:
        return
    pending = lease.event != (0, 0, 0) and now - lockspace.event_set_time <= keep
    generation = event.generation
    if cur_generation and generation == 0 and not all_hosts:
        record = lockspace.table.hosts.get(event.host_id)
        generation = record.owner_generation if record else 0
    triple = (generation, event.event, event.data)
    if pending and lease.event != triple and not replace:
        raise QuietRefusal(ResultCode.EBUSY, "set_event: another event is pending")
    lease.event = triple
    lockspace.event_set_time = now
    targets = (
        [h for h, r in lockspace.table.hosts.items() if r.timestamp and h != lockspace.host_id]
        if all_hosts
        else [event.host_id]
    )
    for host_id in targets:
        lockspace.flag_host(host_id)


def make_channel_room(lockspace: JoinedLockspace) -> None:
    """Drop the lockspace's ended event channels; refuse a new one when all are in use."""
    make_room(lockspace.event_channels, MAX_EVENT_CHANNELS, "reg_event: all event channels in use")


def end_channels(lockspace: JoinedLockspace) -> None:
    """End the event channels that asked to end, and drop every ended one."""
    for channel in lockspace.event_channels:
        if channel.wants_end():
            channel.ended.set()
    lockspace.event_channels = [ch for ch in lockspace.event_channels if not ch.ended.is_set()]


def deliver_event(lockspace: JoinedLockspace, sender: int, record: HostRecord) -> None:
    """Write another host's event for us to every event channel of the lockspace, once."""
    triple = (record.owner_generation, record.write_id, record.write_generation, record.write_timestamp)
    if lockspace.delivered.get(sender) == triple:
        return
    lockspace.delivered[sender] = triple
    event = HostEvent(lockspace.host_id, record.write_id, record.write_generation, record.write_timestamp)
    payload = encode_event_cb(event, sender, record.owner_generation)
    lockspace.event_channels = [ch for ch in lockspace.event_channels if not ch.ended.is_set() and ch.deliver(payload)]
    log.info("event from host %d: event %d data %d", sender, record.write_generation, record.write_timestamp)
