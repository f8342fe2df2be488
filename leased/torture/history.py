"""The shared, append-only history of a torture run: what every process believed, and when.

Every worker and the harness append JSON lines to one file.  A line is
written with a single ``write(2)`` on a descriptor opened ``O_APPEND``, so
lines from different processes never interleave.  Each record carries the
time from ``CLOCK_MONOTONIC``, which all processes of this machine share, so
the checker can order events of different hosts.

Timestamps are taken so that the interval a worker records as "holding" is
always inside the interval it really held the lease: ``held`` is written
after the acquire returned, ``releasing`` before the release is sent.  Two
recorded intervals that overlap therefore prove a real overlap; the checker
never needs a tolerance.

Record kinds (``k``), with their fields besides ``t`` (time), ``p`` (pid)
and ``h`` (host name):

=================  ==========================================================
worker
``start``          worker began (``mode``: normal or rogue)
``acquire``        about to acquire ``r`` in mode ``m`` (EX/SH)
``held``           acquire of ``r`` returned: held in mode ``m``, ``lver``
``acquire_failed`` acquire of ``r`` failed with ``rc``
``devcount``       wrote counter ``n`` beside ``r`` while holding it EX
``releasing``      about to release ``r``
``released``       release of ``r`` returned ``rc`` (0: it is gone)
``lost``           ``r`` was missing from inquire while we held it
``violation``      the worker saw a violation itself (``what``, ``detail``)
``interleaved``    rogue: sent unserialized calls, leases and stream kept
``vanish``         rogue: about to exit half way through a message
``fenced``         got SIGTERM from its daemon; exits now
``daemon_gone``    its daemon connection broke; exits now (watchdog mode: runs on)
``orphaned``       watchdog mode: its daemon went while it held ``r`` (``m``);
                   it goes on using it until killed
``exit``           clean end
harness
``fault``          a fault was injected (``kind``, ``target``, ``detail``)
``client_kill``    about to SIGKILL worker ``pid`` (``why``)
``client_exit``    worker ``pid`` was reaped (``status``)
``host_down``      host ``target`` stopped (daemon killed: its clients reset);
                   watchdog mode: ``why`` "watchdog reset", ``fire_at``
                   the modelled reset, ``daemon_killed_at``, ``workers``
``violation``      (harness) ``what`` "watchdog": a reset that never came
``lockspace_lost`` the daemon of ``h`` no longer has the lockspace
``final``          end of run: ``r`` could (``free``) be acquired afresh
=================  ==========================================================
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]


class History:
    """Appends records for one process (``host`` is its host's name, "" for the harness)."""

    def __init__(self, path: str | os.PathLike[str], host: str = "") -> None:
        self.path = str(path)
        self.host = host
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def record(self, event: str, /, **fields: object) -> float:
        """Append one record of kind ``event`` now; returns its timestamp."""
        now = time.monotonic()
        line = json.dumps({"t": now, "k": event, "p": os.getpid(), "h": self.host, **fields}, separators=(",", ":"))
        os.write(self.fd, (line + "\n").encode())
        return now

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_history(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Every complete record of a history file, in file order.

    A process killed in the middle of nothing cannot leave a partial line
    (one ``write`` per line), but a file copied while being written can end
    in one: a last line without its newline is skipped.
    """
    with Path(path).open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            yield json.loads(raw)
