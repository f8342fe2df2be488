"""Telling systemd how the daemon is doing: the sd_notify datagram protocol.

A ``Type=notify`` unit is "started" only when the daemon says ``READY=1``;
leased says it once its socket listens, so a unit ordered ``After=leased``
never talks to a daemon that is not there yet.  ``STOPPING=1`` goes out when
shutdown begins, and ``STATUS=`` carries one line for ``systemctl status``.

The protocol is small enough that leased needs no libsystemd: systemd puts
the address of a datagram socket in ``$NOTIFY_SOCKET`` (a path, or an
abstract address written with a leading ``@``), and each message is one
datagram of ``KEY=VALUE`` lines.  Without ``$NOTIFY_SOCKET`` (not under
systemd) every call is a no-op.

A failed send is logged and otherwise ignored: the daemon guards lease
holders, and systemd going away must not take it down.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value; None for one leased cannot use."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None  # empty, or vsock:... which needs AF_VSOCK; not for a local daemon


class Notifier:
    """Sends sd_notify messages to one address; a no-op when there is none."""

    def __init__(self, address: str | bytes | None = None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """From ``$NOTIFY_SOCKET`` (the caller should drop it from the environment so children do not inherit it)."""
        value = environ.get("NOTIFY_SOCKET", "")
        address = socket_address(value)
        if value and address is None:
            log.warning("NOTIFY_SOCKET %r is not a path or an abstract socket; not notifying systemd", value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """Send the ``KEY=VALUE`` fields as one datagram."""
        if self.address is None:
            return
        message = "\n".join(fields).encode()
        try:
            if self._sock is None:
                # Non-blocking: a full queue at systemd's end must not stall the event loop.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify %s to %r failed: %s", message[:40], self.address, exc)

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` only when it differs from the last one sent."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str = "shutting down") -> None:
        self._last_status = status
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
