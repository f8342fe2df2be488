"""Lease-health notices (a leased extension): telling applications their lockspace is in trouble.

sanlock's only word to a lease holder whose host can no longer renew is its
killpath, at 8N, when it is already too late to stop cleanly.  leased lets
any client open a *health channel* (LEASED_HEALTH, wire format in
:class:`~leased.protocol.HealthNotice`) on which the daemon writes a notice
each time a joined lockspace's renewal health changes
(:class:`~leased.protocol.HealthState`):

* WARNING when no renewal has succeeded for 6N (sanlock's check_our_lease
  warning): an application should stop starting writes;
* OK again when a renewal succeeds after that (recovered);
* FAILING at 8N: the lockspace failed and its holders are being killed;
* REMOVED when the lockspace is left, after a clean rem_lockspace or once
  fencing is over.

A new channel first gets one notice per lockspace already joined, so an
application never has to ask separately.  Channels follow the event
channels' rules (:class:`~leased.lockspace.EventChannel`): writes never
block (a channel whose reader lets its socket fill up is ended, as is one
whose peer closed), at most :data:`MAX_HEALTH_CHANNELS` at once, and what a
client writes on its channel is read and dropped (the VERSION header the
client sends to tell leased from sanlock, or anything else).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, replace

from leased.lockspace import EventChannel, JoinedLockspace, LockspaceState, make_room
from leased.protocol import HealthNotice
from leased.timeouts import id_renewal_fail_seconds, id_renewal_warn_seconds

log = logging.getLogger(__name__)

MAX_HEALTH_CHANNELS = 64
"""Health channels open at once; one more is refused with -ENOCSI, as a 33rd event channel is."""


@dataclass
class HealthChannel(EventChannel):
    """A connection turned into a health channel: the daemon writes notices, numbered from 0."""

    sent: int = 0
    """Notices written so far: the next one's ``seq``."""

    def _consume(self, data: bytes) -> None:
        """Whatever the client writes here (its VERSION probe) means nothing: dropped."""

    def send(self, notice: HealthNotice) -> bool:
        """Write one notice, numbered; False (and ended) when the channel is gone or full."""
        delivered = self.deliver(replace(notice, seq=self.sent).encode())
        self.sent += 1
        return delivered


def notice_for(lockspace: JoinedLockspace) -> HealthNotice:
    """The notice that reports ``lockspace``'s health now."""
    return HealthNotice(
        lockspace.name,
        lockspace.host_id,
        lockspace.health,
        int(lockspace.renewal_gap()),
        id_renewal_warn_seconds(lockspace.io_timeout),
        id_renewal_fail_seconds(lockspace.io_timeout),
    )


def make_health_room(channels: list[HealthChannel]) -> None:
    """Drop ended channels; refuse a new one when all are in use."""
    make_room(channels, MAX_HEALTH_CHANNELS, "health: all health channels in use")


def open_health_channel(
    channels: list[HealthChannel], lockspaces: list[JoinedLockspace], sock: socket.socket
) -> HealthChannel:
    """Make ``sock`` a health channel: one notice per joined lockspace now, then every change."""
    channel = HealthChannel(sock)
    for lockspace in lockspaces:
        if lockspace.lease is not None and lockspace.state in (LockspaceState.JOINED, LockspaceState.FAILED):
            channel.send(notice_for(lockspace))
    channels.append(channel)
    return channel


def announce_health(channels: list[HealthChannel], lockspace: JoinedLockspace) -> None:
    """Write ``lockspace``'s new health to every channel; drop the channels that are gone."""
    notice = notice_for(lockspace)
    log.info(
        "lockspace %s health %s (renewal gap %ds): %d channels",
        lockspace.name.decode(errors="replace"),
        notice.state.name,
        notice.renewal_gap,
        len(channels),
    )
    channels[:] = [ch for ch in channels if not ch.ended.is_set() and ch.send(notice)]
