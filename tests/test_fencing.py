"""Liveness and fencing with real storage faults injected below the daemon (a FUSE filesystem).

Host A reaches the lease file through the fault filesystem, host B directly.
When A's storage fails, A's lockspace must fail 8N after its last renewal and
A must stop its lease holders (killpath, then SIGTERM, then SIGKILL) before
any other host may take their leases (8N + W after the last renewal it saw).
Real processes hold the leases and write a history of what happened to them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
from daemons import Daemon, init_lease_file_direct, sanlock_daemon, wait_for
from leased_daemons import leased_daemon

from leased.client import HostState, SanlockError
from leased.errors import ResultCode
from leased.torture.faultfs import FaultFS

pytestmark = [pytest.mark.sanlock, pytest.mark.slow]

IO_TIMEOUT = 1
W = 10  # leased-only: a short watchdog fire timeout so a takeover takes seconds
GRACE = 4

HOLDER = """
import sanlock, signal, sys, time
path, history, killpath = sys.argv[1], sys.argv[2], sys.argv[3]
def note(event):
    with open(history, "a") as f:
        f.write(f"{time.monotonic():.3f} {event}\\n")
signal.signal(signal.SIGTERM, lambda *_: note("SIGTERM"))  # survive SIGTERM: the daemon must escalate
fd = sanlock.register()
sanlock.killpath(killpath, [history], slkfd=fd)
sanlock.acquire(b"LS", b"R1", [(path, 1048576)], slkfd=fd)
note("holder acquired")
print("holding", flush=True)
while True:
    time.sleep(1)
"""

KILLPATH = """#!/usr/bin/python3
import sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{time.monotonic():.3f} killpath\\n")
"""


def leased(tmp: Path, name: str, *extra: str) -> AbstractContextManager[Daemon]:
    return leased_daemon(tmp, name, name, extra=extra)


def host_state(daemon: Daemon, host_id: int) -> HostState | None:
    try:
        hosts = daemon.client().get_hosts(b"LS", host_id)
    except SanlockError as exc:
        if exc.rc == ResultCode.EAGAIN:
            return None
        raise
    return hosts[0].state if hosts else None


def join(daemon: Daemon, host_id: int, path: Path) -> None:
    daemon.client().add_lockspace(b"LS", host_id, path, 0, io_timeout=IO_TIMEOUT)


def test_failed_host_fences_its_holder_before_another_host_takes_over(tmp_path: Path, faults: FaultFS) -> None:
    lease_file = init_lease_file_direct(faults.backing / "leases", b"LS", [b"R1"], io_timeout=IO_TIMEOUT)
    through_fuse = faults.mountpoint / "leases"
    history = tmp_path / "history"
    killpath = tmp_path / "killpath"
    killpath.write_text(KILLPATH)
    killpath.chmod(0o755)
    timing = ("--watchdog-fire-timeout", str(W), "-g", str(GRACE))
    with ExitStack() as stack:
        host_a = stack.enter_context(leased(tmp_path, "host-a", *timing))
        host_b = stack.enter_context(leased(tmp_path, "host-b", *timing))
        join(host_a, 1, through_fuse)
        join(host_b, 2, lease_file.path)
        holder = stack.enter_context(
            subprocess.Popen(
                ["/usr/bin/python3", "-c", HOLDER, str(through_fuse), str(history), str(killpath)],
                env={**os.environ, "SANLOCK_RUN_DIR": str(host_a.run_dir)},
                stdout=subprocess.PIPE,
                text=True,
            )
        )

        def kill_if_running() -> None:
            if holder.poll() is None:
                holder.kill()

        stack.callback(kill_if_running)
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        died_at: list[float] = []

        def note_death() -> None:
            holder.wait()
            died_at.append(time.monotonic())

        threading.Thread(target=note_death, daemon=True).start()

        with host_b.client().register() as reg:
            # B sees A alive: refused at once
            wait_for(lambda: host_state(host_b, 1) == HostState.LIVE, 20, "B sees A live")
            with pytest.raises(SanlockError) as info:
                reg.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
            assert info.value.rc == ResultCode.ACQUIRE_IDLIVE

            faults.set(read="eio", write="eio", path="leases")  # A's storage fails
            fault_at = time.monotonic()
            acquired_at = None
            while acquired_at is None:
                assert time.monotonic() - fault_at < 90, "B never got the lease"
                try:
                    reg.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
                    acquired_at = time.monotonic()
                except SanlockError as exc:
                    assert exc.rc == ResultCode.ACQUIRE_IDLIVE, exc
                    time.sleep(0.5)  # B's client retries as a real one would
            assert holder.wait(timeout=30) == -signal.SIGKILL
        faults.heal()

    events = [line.split(" ", 1)[1].strip() for line in history.read_text().splitlines()]
    assert events[:3] == ["holder acquired", "killpath", "SIGTERM"], events
    assert died_at and died_at[0] <= acquired_at, "A's holder still lived when B got the lease"
    assert "renewal failed" in host_a.log() and "fencing 1 lease holders" in host_a.log()


@pytest.mark.parametrize("failing", ["leased", "sanlock"])
def test_failing_host_seen_fail_then_dead_by_the_other_implementation(
    tmp_path: Path, faults: FaultFS, failing: str
) -> None:
    """A host whose storage fails is seen LIVE, then FAIL after 8N, then DEAD after 8N+60 (sanlock's W)."""
    lease_file = init_lease_file_direct(faults.backing / "leases", b"LS", [b"R1"], io_timeout=IO_TIMEOUT)
    through_fuse = faults.mountpoint / "leases"
    with ExitStack() as stack:
        if failing == "leased":
            failing_host = stack.enter_context(leased(tmp_path, "failing"))
            observer = stack.enter_context(sanlock_daemon(tmp_path, "observer", "observer-host"))
        else:
            failing_host = stack.enter_context(sanlock_daemon(tmp_path, "failing", "failing-host"))
            observer = stack.enter_context(leased(tmp_path, "observer"))
        join(failing_host, 1, through_fuse)
        join(observer, 2, lease_file.path)
        wait_for(lambda: host_state(observer, 1) == HostState.LIVE, 30, "observer sees the host live")
        faults.set(read="eio", write="eio", path="leases")
        fault_at = time.monotonic()
        seen: list[tuple[float, HostState | None]] = []

        def dead() -> bool:
            state = host_state(observer, 1)
            if not seen or seen[-1][1] != state:
                seen.append((time.monotonic() - fault_at, state))
            return state == HostState.DEAD

        wait_for(dead, 8 * IO_TIMEOUT + 60 + 30, "host seen DEAD", interval=0.25)
        faults.heal()
        states = [state for _, state in seen]
        assert states[0] == HostState.LIVE and HostState.FAIL in states and states[-1] == HostState.DEAD, seen
        assert states.index(HostState.FAIL) < states.index(HostState.DEAD)
        fail_at = next(t for t, s in seen if s == HostState.FAIL)
        dead_at = seen[-1][0]
        # Never early: the host renewed at most 2N before the fault, and was seen doing so.
        assert fail_at >= 8 * IO_TIMEOUT - 2 * IO_TIMEOUT, seen
        assert dead_at >= 8 * IO_TIMEOUT + 60 - 2 * IO_TIMEOUT, seen
