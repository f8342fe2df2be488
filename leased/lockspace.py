"""A joined lockspace at run time: our host id, its renewal, and what we see of others.

``add_lockspace`` starts a :class:`JoinedLockspace`; its ``run`` task acquires
the host id (on-disk spec §5.1), reports readiness, and renews every 2N
(§5.2), feeding each whole-area snapshot to the :class:`HostStatusTable`
(§5.4).  The table is what resource acquires use to judge other owners.

Rules:

* one storage handle per renewal worker.  When a renewal hits an I/O error,
  that worker ends and a fresh one starts with a freshly opened handle, so
  nothing ever waits on a handle that another task may have replaced or
  closed (the QEMU return-path race);
* every lockspace instance has a ``generation``: a renewal result or timer of
  a removed-and-re-added lockspace is recognised as stale and discarded;
* a lockspace whose renewals fail for 8N (or that finds its sector
  overwritten) is ``failed``: no new leases, and fencing of its lease holders
  starts (:mod:`leased.lifecycle` hooks :mod:`leased.fencing` in through
  ``on_failure``).
"""

from __future__ import annotations

import enum
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from leased import delta_lease
from leased.areas import LockspaceArea
from leased.clock import DEFAULT_CLOCK, Clock
from leased.delta_lease import HostIdLease
from leased.errors import CORRUPTION_CODES, LeaseError, Refused, ResultCode
from leased.host_status import HostState, HostStatusTable
from leased.metrics import LatencyHistogram
from leased.ondisk import bitmap_set, encode_name
from leased.paxos_lease import LockspaceView
from leased.protocol import HealthState
from leased.storage import FileStorage, Storage
from leased.timeouts import (
    Timeouts,
    id_renewal_fail_seconds,
    id_renewal_seconds,
    id_renewal_warn_seconds,
    renewal_read_extend_seconds,
)
from leased.watchdog import Watchdog, WatchdogLink
from leased.wdmd import client_name

log = logging.getLogger(__name__)

_generations = itertools.count(1)


class LockspaceState(enum.Enum):
    ADDING = "add"
    JOINED = "spaces"
    REMOVING = "rem"
    FAILED = "failed"


@dataclass
class EventChannel:
    """A connection turned into an event channel by REG_EVENT: the daemon writes event records to it.

    The client writes only one thing on it: a 4-byte ``1`` before it sends
    END_EVENT on another connection, or it closes the socket.  :meth:`poll`
    reads both without blocking; the connection's task calls it whenever the
    socket is readable, so a channel whose peer closed ends at once and its
    slot is free again (a registered connection's close is then seen too).
    """

    sock: socket.socket
    ended: trio.Event = field(default_factory=trio.Event)
    end_requested: bool = False
    """The client wrote its ``1``: the next END_EVENT for the lockspace ends this channel."""
    peer_closed: bool = False
    """EOF (or a reset) was read: the client closed its end."""
    _partial: bytes = b""
    _warned: bool = False

    def deliver(self, record: bytes) -> bool:
        """Write one event record without blocking; False (and ended) if the channel is gone or full."""
        try:
            sent = self.sock.send(record, socket.MSG_DONTWAIT)
        except OSError:
            sent = 0
        if sent != len(record):
            self.ended.set()
            return False
        return True

    def poll(self) -> None:
        """Consume what the client wrote, without blocking: its ``1`` marks the end request, EOF ends."""
        for _ in range(16):  # bounded: a client writing without pause cannot hold the event loop
            if self.ended.is_set():
                return
            try:
                data = self.sock.recv(256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.peer_closed = True
                self.ended.set()
                return
            self._consume(data)

    def _consume(self, data: bytes) -> None:
        """What the client wrote on an event channel: 4-byte values, ``1`` the only one that means anything."""
        self._partial += data
        while len(self._partial) >= 4:
            value = int.from_bytes(self._partial[:4], "little")
            self._partial = self._partial[4:]
            if value == 1:
                self.end_requested = True
            elif not self._warned:
                self._warned = True
                log.warning("event channel: unexpected value %d ignored (and any more on this channel)", value)

    def wants_end(self) -> bool:
        """END_EVENT: has the client asked to end this channel (its ``1``, or a close)?"""
        self.poll()
        return self.end_requested or self.ended.is_set()


_Channel = TypeVar("_Channel", bound=EventChannel)


def make_room(channels: list[_Channel], limit: int, refusal: str) -> None:
    """Drop the ended channels of ``channels`` (in place); refuse one more at ``limit`` (-ENOCSI, ``refusal``).

    Each channel is polled first, so one whose peer has closed frees its
    slot now, even before its task has looked.
    """
    for channel in channels:
        channel.poll()
    channels[:] = [ch for ch in channels if not ch.ended.is_set()]
    if len(channels) >= limit:
        raise Refused(ResultCode.ENOCSI, refusal)


@dataclass
class LateRead:
    """A renewal read that outlived io_timeout and may still finish (renewal_read_extend, §5.2)."""

    storage: object
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: LeaseError | None = None

    async def run(self, read: Callable[[], Awaitable[bytes]]) -> None:
        try:
            self.data = await read()
        except LeaseError as exc:
            self.error = exc
        finally:
            self.done.set()


@dataclass(frozen=True)
class LockspaceKey:
    """What identifies a lockspace request: name, host id, path, offset."""

    name: bytes
    host_id: int
    path: str
    offset: int


RENEWAL_RETRY_SECONDS = 1.0
"""Pause before a fresh renewal worker retries after an I/O error."""


@dataclass
class RenewalRecord:
    """One renewal attempt, for ``client renewal`` history."""

    timestamp: int
    read_ms: int
    write_ms: int
    next_timeouts: int = 0
    next_errors: int = 0


@dataclass
class JoinedLockspace:
    """A lockspace this daemon has joined or is joining."""

    key: LockspaceKey
    io_timeout: int
    timeouts: Timeouts
    host_name: bytes
    clock: Clock = DEFAULT_CLOCK
    open_storage: Callable[[str], Storage] = FileStorage
    state: LockspaceState = LockspaceState.ADDING
    generation: int = field(default_factory=lambda: next(_generations))
    lease: HostIdLease | None = None
    table: HostStatusTable | None = None
    space_id: int = 0
    add_result: int = 0
    renewal_fail: bool = False
    corrupt_result: int = 0
    history: list[RenewalRecord] = field(default_factory=list)
    history_size: int = 180
    joined: trio.Event = field(default_factory=trio.Event)
    removed: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    on_failure: Callable[[JoinedLockspace], None] | None = None
    """Called once when renewal fails after a join: fencing starts there."""
    on_join_failure: Callable[[JoinedLockspace], None] | None = None
    """Called once when the join itself fails: nothing was ever held, the daemon forgets the lockspace."""
    on_scan: Callable[[JoinedLockspace, int, list[int]], None] | None = None
    """Called after each renewal's scan with (lockspace, its generation, host ids that changed)."""
    health: HealthState = HealthState.OK
    """What health notices say of it: renewals fine, failing for 6N, failed at 8N, or left."""
    on_health: Callable[[JoinedLockspace], None] | None = None
    """Called each time ``health`` changes, with the lockspace (leased health notices)."""
    examined: dict[int, float] = field(default_factory=dict)
    """host_id -> when we last reacted to its bitmap bit (rate limit, §5.5)."""
    set_bitmap_seconds: int = 0
    _tasks: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None
    _late_read: LateRead | None = None
    event_channels: list[EventChannel] = field(default_factory=list)
    event_set_time: float = 0.0
    delivered: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    """sender host_id -> the last event triple (and its generation) delivered from it: no repeats."""
    config_flags: int = 0
    request_bits: dict[int, float] = field(default_factory=dict)
    """host_id -> when we started flagging it in our bitmap (requests, events: §5.5)."""
    renewal_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Every successful renewal's duration, for metrics (the history above keeps only the last ones)."""
    renewals_ok: int = 0
    renewals_failed: int = 0
    last_renewal_seconds: float = 0.0
    watchdog: Watchdog | None = None
    """With ``-w 1``: the join connects first and arms it after the acquire; each renewal pushes the expiry."""
    _watchdog_link: WatchdogLink | None = None

    @property
    def name(self) -> bytes:
        return self.key.name

    @property
    def host_id(self) -> int:
        return self.key.host_id

    @property
    def host_generation(self) -> int:
        return self.lease.generation if self.lease else 0

    @property
    def usable(self) -> bool:
        """New leases may be taken: joined and not failing."""
        return self.state is LockspaceState.JOINED and not self.renewal_fail

    def view(self) -> LockspaceView:
        """What a paxos acquire needs to judge other owners in this lockspace."""
        assert self.lease is not None and self.table is not None
        return LockspaceView(self.lease.area, self.io_timeout, self.timeouts.watchdog_fire_timeout, self.table)

    def flag_host(self, host_id: int) -> None:
        """Ask ``host_id`` to look at our requests: set its bit for set_bitmap_seconds."""
        self.request_bits[host_id] = self.clock.now()

    def _refresh_bitmap(self) -> None:
        assert self.lease is not None
        keep = self.set_bitmap_seconds or 6 * self.io_timeout
        now = self.clock.now()
        if self.lease.event != (0, 0, 0) and now - self.event_set_time > keep:
            self.lease.event = (0, 0, 0)  # an event is announced for set_bitmap_seconds, then cleared
        self.request_bits = {h: t for h, t in self.request_bits.items() if now - t <= keep}
        bitmap = bytearray(len(self.lease.bitmap))
        for host_id in self.request_bits:
            bitmap_set(bitmap, host_id)
        self.lease.bitmap = bitmap

    def host_state(self, host_id: int) -> HostState:
        if self.table is None:
            return HostState.UNKNOWN
        return self.table.state(host_id, self.clock.now())

    # -- the task -------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join, then renew until removed or failed.  Reports the join result through ``add_result``.

        ``joined`` is set on every way out, also when the join is cancelled
        (rem_lockspace of a lockspace being added, or the daemon stopping),
        so no add_lockspace waiter can wait for ever.
        """
        try:
            await self._join_and_renew(task_status)
        finally:
            if not self.joined.is_set():
                self.add_result = self.add_result or ResultCode.ENOENT
                self.joined.set()

    async def _join_and_renew(self, task_status: trio.TaskStatus[None]) -> None:
        with self.cancel_scope:
            try:
                await self._join()
            except Exception as exc:
                # A LeaseError is the join's answer; anything else is a bug, answered as sanlock's
                # generic failure.  Either way the add fails and nothing keeps running.
                self.add_result = exc.rc if isinstance(exc, LeaseError) else ResultCode.ERROR
                if isinstance(exc, LeaseError):
                    log.error("add_lockspace %s failed: %s", self.name.decode(errors="replace"), exc)
                else:
                    log.exception("add_lockspace %s: internal error", self.name.decode(errors="replace"))
                if self.lease is not None:
                    self.lease.area.storage.close()
                self.state = LockspaceState.FAILED
                self.joined.set()
                task_status.started()
                if self.on_join_failure is not None:
                    self.on_join_failure(self)
                return
            self.state = LockspaceState.JOINED
            self.joined.set()
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    self._tasks = nursery.cancel_scope
                    self._nursery = nursery
                    nursery.start_soon(self._renew_forever)
                    nursery.start_soon(self._watch_deadline)
            except Exception:
                # Nobody renews our host id any more: fail the lockspace, which fences its lease
                # holders before other hosts may take their leases (never keep it "joined").
                log.exception("lockspace %s: renewal internal error: failing", self.name.decode(errors="replace"))
                self._fail()

    async def _join(self) -> None:
        storage = self.open_storage(self.key.path)
        try:
            if self.watchdog is not None:
                # Connect first, as sanlock does: without wdmd the join fails now, before any disk write.
                self._watchdog_link = await self.watchdog.connect()
            area = await delta_lease.discover_lockspace(storage, self.key.offset, self.name, self.io_timeout)
            self.lease = await delta_lease.acquire_host_id(
                area,
                self.host_id,
                self.host_name,
                self.io_timeout,
                clock=self.clock,
                watchdog_fire_timeout=self.timeouts.watchdog_fire_timeout,
            )
        except BaseException:
            storage.close()
            self._drop_watchdog()
            raise
        await self._arm_watchdog()
        self.table = HostStatusTable(
            area.space_name, area.geometry, self.host_id, self.io_timeout, self.timeouts.watchdog_fire_timeout
        )
        # Renew at once: the acquire waited 2N of the *previous* holder's io_timeout after writing
        # its timestamp, which may already be older than our own 8N.  The renewal also gives the
        # host table its first whole-area snapshot.
        snapshot = await delta_lease.renew_host_id(
            self.lease, clock=self.clock, watchdog_fire_timeout=self.timeouts.watchdog_fire_timeout
        )
        self.table.observe(snapshot, self.clock.now())
        await self._pet_watchdog()
        log.info(
            "lockspace %s joined host_id %d generation %d",
            self.name.decode(errors="replace"),
            self.host_id,
            self.lease.generation,
        )

    async def _renew_forever(self) -> None:
        """Renewal loop: one worker per storage handle; an I/O error ends the worker (fresh handle next)."""
        assert self.lease is not None
        while self.state is LockspaceState.JOINED:
            outcome = await self._renewal_worker()
            if outcome == "corrupt":
                self._fail()
                return
            # "io_error": reopen the storage and start a fresh worker
            if self.lease is not None:
                old = self.lease.area.storage
                try:
                    fresh = self.open_storage(self.key.path)
                except LeaseError as exc:
                    log.error("reopen %s failed: %s", self.key.path, exc)
                    await self.clock.sleep(0.5)
                    continue
                self.lease.area = LockspaceArea(
                    fresh, self.lease.area.offset, self.lease.area.space_name, self.lease.area.geometry
                )
                old.close()
            # A device that fails at once would otherwise be retried (and logged) in a busy loop,
            # about a thousand times a second; sanlock retries a failed renewal once a second too.
            await self.clock.sleep(RENEWAL_RETRY_SECONDS)

    async def _watch_deadline(self) -> None:
        """Fail the lockspace 8N after the last successful renewal, whatever the renewal task is doing.

        A renewal write may be stalled for up to host_dead_seconds; the
        deadline must not wait for it.
        """
        assert self.lease is not None
        warned_for = 0
        while self.state is LockspaceState.JOINED:
            gap = self.clock.now() - self.lease.last_success
            if gap >= id_renewal_fail_seconds(self.io_timeout):
                log.error(
                    "lockspace %s renewal failed: no successful renewal for %ds: failing",
                    self.name.decode(errors="replace"),
                    int(gap),
                )
                self._fail()
                return
            if gap >= id_renewal_warn_seconds(self.io_timeout) and warned_for != self.lease.last_success:
                warned_for = self.lease.last_success
                log.warning(
                    "lockspace %s check_our_lease warning: renewal gap %ds",
                    self.name.decode(errors="replace"),
                    int(gap),
                )
                self.set_health(HealthState.WARNING)
            elif gap < id_renewal_warn_seconds(self.io_timeout):
                self.set_health(HealthState.OK)
            await self.clock.sleep(min(1.0, self.io_timeout / 2))

    async def _renewal_worker(self) -> str:
        """Renew on the current handle until an I/O error ("io_error") or corruption ("corrupt").

        Warning and failing on a renewal gap is :meth:`_watch_deadline`'s job
        alone: it must not wait for a renewal stalled in here.
        """
        lease = self.lease
        assert lease is not None and self.table is not None
        interval = id_renewal_seconds(self.io_timeout)
        while True:
            gap = self.clock.now() - lease.last_success
            if gap < interval:
                await self.clock.sleep(min(1.0, interval - gap))
                continue
            started = self.clock.now()
            self._refresh_bitmap()
            try:
                area_read = await self._read_area(lease)
                snapshot = await delta_lease.renew_host_id(
                    lease,
                    clock=self.clock,
                    watchdog_fire_timeout=self.timeouts.watchdog_fire_timeout,
                    snapshot=area_read,
                )
            except LeaseError as exc:
                self._record(lease.last_success, started, error=True)
                if exc.rc in CORRUPTION_CODES:
                    self.corrupt_result = exc.rc
                    log.error("lockspace %s renewal found corruption: %s", self.name.decode(errors="replace"), exc)
                    return "corrupt"
                log.error("lockspace %s renewal error: %s", self.name.decode(errors="replace"), exc)
                if exc.rc != ResultCode.AIO_TIMEOUT:
                    return "io_error"
                await self.clock.sleep(0.5)
                continue
            self._record(lease.last_success, started)
            if self.health is HealthState.WARNING:
                self.set_health(HealthState.OK)  # recovered: say so now, not at the deadline watch's next look
            await self._pet_watchdog()
            changed = self.table.observe(snapshot, self.clock.now())
            if self.on_scan is not None:
                self.on_scan(self, self.generation, changed)

    async def _read_area(self, lease: HostIdLease) -> bytes:
        """The renewal's whole-area read, tolerating one that finishes late (§5.2 step 1).

        A read that is not done within io_timeout fails this renewal with
        AIO_TIMEOUT but keeps going for renewal_read_extend_sec more; the next
        renewal first waits up to that long for it and uses its data, instead
        of queueing another read behind a slow one.
        """
        extend = renewal_read_extend_seconds(self.io_timeout)
        pending = self._late_read
        if pending is not None and pending.storage is lease.area.storage:
            self._late_read = None
            with trio.move_on_after(extend):
                await pending.done.wait()
            if pending.data is not None:
                log.info("lockspace %s: using the late renewal read", self.name.decode(errors="replace"))
                return pending.data
        self._late_read = None
        area = lease.area
        read = LateRead(area.storage)
        assert self._nursery is not None
        self._nursery.start_soon(
            read.run, lambda: area.storage.read(area.offset, area.geometry.align_size, self.io_timeout + extend)
        )
        with trio.move_on_after(self.io_timeout):
            await read.done.wait()
        if not read.done.is_set():
            self._late_read = read
            raise LeaseError(
                ResultCode.AIO_TIMEOUT, f"renewal read of {area.where()} timed out after {self.io_timeout}s"
            )
        if read.error is not None:
            raise read.error
        assert read.data is not None
        return read.data

    # -- the watchdog ---------------------------------------------------

    def _expiry(self) -> tuple[int, int]:
        """(last renewal, when wdmd must stop petting): a host that cannot renew is reset by host_dead_seconds."""
        assert self.lease is not None
        return self.lease.last_success, self.lease.last_success + id_renewal_fail_seconds(self.io_timeout)

    async def _arm_watchdog(self) -> None:
        """After the acquire, before any lease can be granted in this lockspace; a failure undoes the join."""
        link = self._watchdog_link
        if link is None:
            return
        try:
            status = await link.arm(client_name(self.name, self.host_id), *self._expiry())
        except LeaseError:
            self._watchdog_link = None
            assert self.lease is not None
            try:
                await delta_lease.release_host_id(self.lease)
            except LeaseError as exc:
                log.error("release of host id %d after a watchdog failure: %s", self.host_id, exc)
            raise
        # Just before each renewal the expiry is 8N - 2N ahead; wdmd stops petting once an expiry is
        # within one test interval.  sanlock joins anyway (so do we), but the operator must know.
        ahead = id_renewal_fail_seconds(self.io_timeout) - id_renewal_seconds(self.io_timeout)
        if ahead <= status.test_interval:
            log.warning(
                "lockspace %s io_timeout %d: the watchdog expiry is only %ds ahead before a renewal and wdmd "
                "tests every %ds, so wdmd will stop petting and the host will be reset though renewals succeed; "
                "use io_timeout %d or more",
                self.name.decode(errors="replace"),
                self.io_timeout,
                ahead,
                status.test_interval,
                status.test_interval // 6 + 1,
            )

    async def _pet_watchdog(self) -> None:
        if self._watchdog_link is not None and self.state is not LockspaceState.REMOVING:
            await self._watchdog_link.renewed(*self._expiry())

    def _drop_watchdog(self) -> None:
        if self._watchdog_link is not None:
            self._watchdog_link.close()
            self._watchdog_link = None

    async def disarm_watchdog(self) -> None:
        """Nothing of this lockspace needs the host reset any more: no lease holder runs, or it is leaving."""
        link, self._watchdog_link = self._watchdog_link, None
        if link is not None:
            with trio.CancelScope(shield=True):  # a half-done disarm would reset a healthy host
                await link.disarm()

    def _record(self, timestamp: int, started: float, error: bool = False) -> None:
        seconds = self.clock.now() - started
        if self.history_size > 0:  # -H 0 keeps no history (a slice [:-0] would keep it all)
            self.history.append(RenewalRecord(timestamp, int(seconds * 1000), 0, 0, 1 if error else 0))
            del self.history[: -self.history_size]
        if error:
            self.renewals_failed += 1
        else:
            self.renewals_ok += 1
            self.last_renewal_seconds = seconds
            self.renewal_latency.observe(seconds)

    def add_event_channel(self, sock: socket.socket) -> EventChannel:
        """REG_EVENT: ``sock`` becomes one of this lockspace's event channels."""
        channel = EventChannel(sock)
        self.event_channels.append(channel)
        return channel

    def renewal_gap(self) -> float:
        """Seconds since the last successful renewal (0 before the join)."""
        return self.clock.now() - self.lease.last_success if self.lease is not None else 0.0

    def set_health(self, health: HealthState) -> None:
        """Move to ``health`` and tell ``on_health``; REMOVED is final, and FAILING never goes back."""
        if health is self.health or self.health is HealthState.REMOVED:
            return
        if self.health is HealthState.FAILING and health is not HealthState.REMOVED:
            return
        self.health = health
        if self.on_health is not None:
            try:
                self.on_health(self)
            except Exception:  # the notices' trouble must never stop a renewal or a failure's fencing
                log.exception("lockspace %s: health notice failed", self.name.decode(errors="replace"))

    def _fail(self) -> None:
        """The lockspace can no longer be trusted: stop renewing, no new leases, start fencing (once)."""
        if self.renewal_fail:
            return
        self.renewal_fail = True
        self.state = LockspaceState.FAILED
        self.set_health(HealthState.FAILING)
        if self._tasks is not None:
            self._tasks.cancel()
        if self.on_failure is not None:
            self.on_failure(self)

    async def leave(self) -> None:
        """Stop renewing and release the host id on disk if the last renewal succeeded (§5.3)."""
        self.state = LockspaceState.REMOVING
        self.cancel_scope.cancel()
        await self.disarm_watchdog()
        lease = self.lease
        if lease is not None and lease.last_write_ok and not self.renewal_fail:
            try:
                await delta_lease.release_host_id(lease)
            except LeaseError as exc:
                log.error(
                    "release of host id %d in %s failed: %s", self.host_id, self.name.decode(errors="replace"), exc
                )
        if lease is not None:
            lease.area.storage.close()
            self.set_health(HealthState.REMOVED)
        self.removed.set()


def lockspace_key(name: bytes, host_id: int, path: str, offset: int) -> LockspaceKey:
    encode_name(name)  # validates length
    return LockspaceKey(name, host_id, path, offset)
