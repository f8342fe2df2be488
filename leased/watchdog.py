"""A lockspace's link to wdmd, so the host is reset if its leases can no longer be trusted.

The kill escalation stops lease holders when renewals fail, but nothing in
the daemon helps when the daemon itself is the problem: SIGKILLed, stopped,
or stuck in uninterruptible I/O.  wdmd covers that.  Each joined lockspace
keeps one connection to wdmd and tells it, after every successful renewal,
"alive as of this renewal; stop petting the watchdog at renewal + 8N".  If
that promise is not renewed in time (the daemon died, hung, or cannot
renew), wdmd stops petting ``/dev/watchdog`` and the kernel resets the host
``watchdog_fire_timeout`` seconds after the last keepalive: before
``host_dead_seconds`` have passed since the last renewal, which is when
other hosts may take this host's leases.

The sequence is sanlock's (3.8.5), so one wdmd serves leased and sanlock
alike:

* connect before the host-id acquire, so a missing wdmd fails the join at
  once (SANLK_WD_ERROR, -203) instead of after a disk acquire;
* after the acquire: REGISTER ``sanlock_<lockspace>:<host_id>``,
  REFCOUNT_SET (wdmd will not exit cleanly while a client counts on it),
  STATUS (wdmd's device must fire after ``watchdog_fire_timeout``, the W
  every timeout here is derived from), TEST_LIVE;
* every successful renewal: TEST_LIVE again;
* leaving, once no lease holder of the lockspace runs: TEST_LIVE(0, 0)
  (retried once after 0.5 s: a failure here would reset a healthy host),
  REFCOUNT_CLEAR, close.

A connection that closes with a live expiry is still enforced by wdmd, so a
crashed daemon is covered; a clean close is only ever preceded by a disarm.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import trio

from leased import wdmd
from leased.errors import LeaseError, ResultCode

log = logging.getLogger(__name__)

WDMD_TIMEOUT: Final = 5.0
"""Bound on one exchange with wdmd (a stopped wdmd must fail a join, not hang it)."""

DISARM_RETRY_SECONDS: Final = 0.5


class WatchdogLink(Protocol):
    """One lockspace's connection to the watchdog daemon."""

    async def arm(self, name: bytes, renewal_time: int, expire_time: int) -> wdmd.WdmdStatus:
        """Register, hold a reference, check the fire timeout and set the first expiry; LeaseError if not."""
        ...

    async def renewed(self, renewal_time: int, expire_time: int) -> None:
        """Push the expiry forward after a successful renewal (a failure is logged, not raised)."""
        ...

    async def disarm(self) -> None:
        """Clear the expiry and the reference, then close: nothing fires for this lockspace any more."""
        ...

    def close(self) -> None:
        """Close without disarming (a join that failed before :meth:`arm`, or wdmd gone)."""
        ...


class Watchdog(Protocol):
    """The seam the daemon takes: opens one :class:`WatchdogLink` per lockspace."""

    async def connect(self) -> WatchdogLink: ...


class WdmdWatchdog:
    """The real one: wdmd on its Unix socket."""

    def __init__(self, fire_timeout: int, socket_path: str = wdmd.WDMD_SOCKET) -> None:
        self.fire_timeout = fire_timeout
        self.socket_path = socket_path

    async def connect(self) -> WatchdogLink:
        try:
            with trio.fail_after(WDMD_TIMEOUT):
                stream = await trio.open_unix_socket(self.socket_path)
        except (OSError, trio.TooSlowError) as exc:
            raise LeaseError(
                ResultCode.WD_ERROR, f"cannot connect to wdmd at {self.socket_path}: {_reason(exc)}"
            ) from None
        return WdmdLink(stream, self.fire_timeout, self.socket_path)


class WdmdLink:
    """One connection to wdmd; every send and the STATUS reply are bounded by :data:`WDMD_TIMEOUT`."""

    def __init__(self, stream: trio.SocketStream, fire_timeout: int, socket_path: str) -> None:
        self.stream = stream
        self.fire_timeout = fire_timeout
        self.socket_path = socket_path
        self.name = b""
        self.referenced = False

    async def arm(self, name: bytes, renewal_time: int, expire_time: int) -> wdmd.WdmdStatus:
        self.name = name
        try:
            await self._send(wdmd.register(name))
            await self._send(wdmd.message(wdmd.WdmdCmd.REFCOUNT_SET))
            self.referenced = True
            await self._send(wdmd.message(wdmd.WdmdCmd.STATUS))
            status = wdmd.decode_status(await self._receive_reply())
            if status.fire_timeout != self.fire_timeout:
                raise LeaseError(
                    ResultCode.WD_ERROR,
                    f"wdmd's watchdog fires after {status.fire_timeout}s, the timeouts assume {self.fire_timeout}s",
                )
            await self._send(wdmd.alive(renewal_time, expire_time))
        except LeaseError:
            await self._give_up()
            raise
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            await self._give_up()
            raise LeaseError(ResultCode.WD_ERROR, f"wdmd at {self.socket_path}: {_reason(exc)}") from None
        return status

    async def renewed(self, renewal_time: int, expire_time: int) -> None:
        try:
            await self._send(wdmd.alive(renewal_time, expire_time))
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.error("wdmd test_live %d for %s failed: %s", renewal_time, self._label(), _reason(exc))

    async def disarm(self) -> None:
        log.info("wdmd test_live 0 0 to disable %s", self._label())
        for attempt in (1, 2):
            try:
                await self._send(wdmd.alive(0, 0))
                break
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.error("wdmd test_live 0 0 for %s failed (attempt %d): %s", self._label(), attempt, _reason(exc))
                if attempt == 1:
                    await trio.sleep(DISARM_RETRY_SECONDS)
        await self._give_up()

    def close(self) -> None:
        self.stream.socket.close()

    async def _give_up(self) -> None:
        """Drop our reference (so wdmd may exit cleanly) and close."""
        if self.referenced:
            self.referenced = False
            try:
                await self._send(wdmd.message(wdmd.WdmdCmd.REFCOUNT_CLEAR))
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.error("wdmd refcount_clear for %s failed: %s", self._label(), _reason(exc))
        self.close()

    async def _send(self, data: bytes) -> None:
        with trio.fail_after(WDMD_TIMEOUT):
            await self.stream.send_all(data)

    async def _receive_reply(self) -> bytes:
        reply = b""
        with trio.fail_after(WDMD_TIMEOUT):
            while len(reply) < wdmd.HEADER_SIZE:
                chunk = await self.stream.receive_some(wdmd.HEADER_SIZE - len(reply))
                if not chunk:
                    raise LeaseError(ResultCode.WD_ERROR, f"wdmd at {self.socket_path} closed the connection")
                reply += chunk
        return reply

    def _label(self) -> str:
        return self.name.decode(errors="replace") or "(unregistered)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"no answer in {WDMD_TIMEOUT:g}s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
