"""The real wdmd with no watchdog device: the shim, the model of the kernel timer, and real sanlock on top.

The first half feeds :class:`leased.torture.wdmd.WatchdogTimer` hand-written
events (no processes).  The second half runs ``/usr/sbin/wdmd`` under the
shim (built here with gcc), alone, twice side by side, and under a real
sanlock 3.8.5 started with ``-w 1`` in the same shim, and judges each run
from the shim's log through the model.  A reset is never waited for: the
model says when it would happen, the assertions bound that time by the
configured timeouts.

sanlock joins with io_timeout 3, not the 1 the rest of the suite uses:
wdmd 3.8.5 stops petting (closes the device without the magic "V") as soon
as a client's expire time is within one test interval (10 s), and with
io_timeout 1 sanlock's expire time (renewal + 8 s) always is, so a healthy
host would be reset (``test_io_timeout_1_starves_the_watchdog``).
io_timeout 2 leaves 2 s of margin, too little on a loaded two-core machine.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from itertools import pairwise
from pathlib import Path

import pytest
from daemons import Daemon, init_lease_file_direct, leased_shutdown_argv, sanlock_binary, start_daemon, wait_for

from leased.client import SanlockError
from leased.constants import LEADER_RECORD_SIZE
from leased.errors import ResultCode
from leased.ondisk import Leader
from leased.timeouts import host_dead_seconds, id_renewal_fail_seconds, id_renewal_seconds
from leased.torture import local_daemons
from leased.torture.faultfs import FaultFS
from leased.torture.wdmd import (
    WDMD_TEST_INTERVAL,
    BadLogLine,
    DeviceEvent,
    EventKind,
    LogFollower,
    ShimDir,
    ShimUnavailable,
    WatchdogTimer,
    Wdmd,
    WdmdFailed,
    build_shim,
    model,
    parse_log,
    pings,
    running_wdmd,
    wdmd_binary,
)

FIRE = 60  # wdmd's fire_timeout, fixed in wdmd 3.8.5
IO_TIMEOUT = 3  # see the module docstring
LS = b"LS"


def ev(when: float, kind: EventKind, value: int | None = None) -> DeviceEvent:
    return DeviceEvent(when, 1, kind, value)


OPEN, KEEPALIVE, MAGIC, WRITE = EventKind.OPEN, EventKind.KEEPALIVE, EventKind.MAGIC, EventKind.WRITE
CLEAN, UNCLEAN, SETTIMEOUT = EventKind.CLOSE_CLEAN, EventKind.CLOSE_UNCLEAN, EventKind.SETTIMEOUT


# --------------------------------------------------------------------------
# The log and the model, no processes


def test_parse_log_reads_every_event_kind() -> None:
    text = (
        "10.000000001 7 open\n"
        "10.5 7 gettimeout 30\n"
        "10.6 7 settimeout 60\n"
        "11 7 keepalive\n"
        "12 7 write 1\n"
        "13 7 magic 1\n"
        "13.1 7 disable\n"
        "13.2 7 enable\n"
        "14 7 close clean\n"
        "15 8 close unclean\n"
    )
    events = parse_log(text)
    assert [e.kind for e in events] == list(EventKind)
    assert events[0] == DeviceEvent(10.000000001, 7, OPEN)
    assert events[1].value == 30 and events[2].value == 60 and events[5].value == 1
    assert events[-1].pid == 8


def test_parse_log_leaves_a_line_being_written_for_the_next_read() -> None:
    assert parse_log("1 7 open\n2 7 keep") == [DeviceEvent(1, 7, OPEN)]
    assert parse_log("") == []


@pytest.mark.parametrize("line", ["x 7 open", "1 7 bark", "1 7 settimeout", "1 7 keepalive 3", "1 7 close maybe", "1"])
def test_parse_log_rejects_lines_the_shim_cannot_write(line: str) -> None:
    with pytest.raises(BadLogLine):
        parse_log(line + "\n")


def test_a_stopped_device_never_fires() -> None:
    assert model([]).fire_at is None
    assert model([ev(1, KEEPALIVE)]).fire_at is None  # a ping without open does not start it


def test_fire_is_last_ping_plus_timeout() -> None:
    timer = model([ev(100, OPEN), ev(100.5, KEEPALIVE), ev(110.5, KEEPALIVE), ev(120.5, WRITE, 1)])
    assert timer.fire_at == 120.5 + FIRE
    assert timer.fired_at is None
    assert not timer.reset_by(180.4) and timer.reset_by(180.5)


def test_magic_close_after_the_last_ping_disarms() -> None:
    timer = model([ev(100, OPEN), ev(110, KEEPALIVE), ev(115, MAGIC, 1), ev(115.1, CLEAN)])
    assert timer.fire_at is None and not timer.running


def test_unclean_close_leaves_the_timer_running() -> None:
    timer = model([ev(100, OPEN), ev(110, KEEPALIVE), ev(119, UNCLEAN)])
    assert timer.fire_at == 110 + FIRE


def test_process_death_without_close_leaves_the_timer_running() -> None:
    assert model([ev(100, OPEN), ev(110, KEEPALIVE)]).fire_at == 110 + FIRE


def test_a_ping_after_the_deadline_comes_too_late() -> None:
    timer = model(
        [ev(100, OPEN), ev(110, UNCLEAN), ev(171, OPEN), ev(171, KEEPALIVE), ev(180, MAGIC, 1), ev(180, CLEAN)]
    )
    assert timer.fired_at == 160
    assert timer.fire_at == 160


def test_reopen_within_the_timeout_saves_the_host() -> None:
    timer = model([ev(100, OPEN), ev(110, UNCLEAN), ev(155, OPEN), ev(170, MAGIC, 1), ev(170, CLEAN)])
    assert timer.fire_at is None


def test_settimeout_pings_and_changes_the_deadline() -> None:
    timer = model([ev(100, OPEN), ev(100, SETTIMEOUT, 10)], timeout=30)
    assert timer.fire_at == 110
    assert model([ev(100, OPEN)], timeout=30).fire_at == 130


def test_a_write_after_the_magic_cancels_it() -> None:
    timer = model([ev(100, OPEN), ev(101, MAGIC, 1), ev(102, WRITE, 1)])
    assert not timer.magic and timer.fire_at == 102 + FIRE


def test_disable_stops_and_enable_restarts() -> None:
    stopped = model([ev(100, OPEN), ev(101, EventKind.DISABLE), ev(500, UNCLEAN)])
    assert stopped.fire_at is None
    assert stopped.feed(ev(600, EventKind.ENABLE)).fire_at == 600 + FIRE


def test_nothing_happens_after_the_reset() -> None:
    fired = WatchdogTimer(running=True, last_ping=0, fired_at=60)
    assert fired.feed(ev(70, OPEN)) is fired


def test_pings_lists_keepalives_and_writes() -> None:
    events = [ev(1, OPEN), ev(2, KEEPALIVE), ev(3, WRITE, 1), ev(4, MAGIC, 1), ev(5, CLEAN)]
    assert pings(events) == [2, 3, 4]


LOG = b"100.0 7 open\n100.1 7 gettimeout 60\n100.2 7 keepalive\n110.2 7 keepalive\n115.0 7 close unclean\n"


@pytest.mark.parametrize("size", [1, 2, 7, 13, len(LOG)])
def test_a_log_fed_in_any_pieces_gives_the_model_of_the_whole(size: int) -> None:
    follower = LogFollower.start()
    for start in range(0, len(LOG), size):
        follower = follower.feed(LOG[start : start + size])
    assert follower.partial == b""
    assert follower.timer == model(parse_log(LOG.decode()))
    assert follower.timer.fire_at == 110.2 + FIRE


def test_a_line_being_written_waits_for_its_end() -> None:
    follower = LogFollower.start().feed(b"100.0 7 open\n100.2 7 keep")
    assert follower.partial == b"100.2 7 keep" and follower.timer.last_ping == 100.0
    assert follower.feed(b"alive\n").timer.last_ping == 100.2
    with pytest.raises(BadLogLine):
        follower.feed(b"\n101 7 bark\n")


def test_a_reset_is_due_once_the_deadline_has_passed_with_no_event_after_it() -> None:
    """The monitor's question: the kernel fires at last ping + timeout whether or not anything is logged later."""
    follower = LogFollower.start().feed(LOG)
    assert follower.reset_due(170.1) is None
    assert follower.reset_due(170.2) == 110.2 + FIRE
    assert follower.reset_due(500.0) == 110.2 + FIRE
    clean = LogFollower.start().feed(b"100.0 7 open\n101 7 magic 1\n101.1 7 close clean\n")
    assert clean.reset_due(1e9) is None
    assert LogFollower.start().reset_due(1e9) is None  # no wdmd yet: no device, no timer
    # A reopen within the timeout (wdmd found its client renewing again) saves the host.
    saved = follower.feed(b"160.0 7 open\n160.1 7 keepalive\n")
    assert saved.reset_due(170.2) is None and saved.reset_due(220.1) == 160.1 + FIRE


def test_a_device_timeout_given_at_start_is_the_timers() -> None:
    assert LogFollower.start(30).feed(b"100 7 open\n").timer.fire_at == 130


# --------------------------------------------------------------------------
# The real wdmd under the shim


@pytest.fixture(scope="session")
def shim_library() -> Path:
    try:
        wdmd_binary()
        return build_shim()
    except ShimUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def shim(tmp_path: Path, shim_library: Path) -> ShimDir:
    return ShimDir.create(tmp_path / "wd", shim_library)


def kinds(shim: ShimDir) -> list[EventKind]:
    return [event.kind for event in shim.events()]


def petted(shim: ShimDir) -> bool:
    return KEEPALIVE in kinds(shim)


SYSTEM_PATHS = (Path("/run/wdmd"), Path("/dev/shm/wdmd"))


def test_wdmd_is_never_started_when_the_shim_would_not_load(tmp_path: Path) -> None:
    """The loader only warns about a preload it cannot load, and an unshimmed wdmd would try the host's real
    /dev/watchdog: the driver probes first and refuses."""
    broken = ShimDir.create(tmp_path / "wd", tmp_path / "missing-shim.so")
    with pytest.raises(ShimUnavailable, match="did not load"), running_wdmd(broken):
        pass  # pragma: no cover - never reached
    assert not broken.socket.exists() and not broken.log.exists()


def test_wdmd_starts_under_the_shim_and_a_clean_stop_disarms(shim: ShimDir) -> None:
    before = [path.exists() for path in SYSTEM_PATHS]
    with running_wdmd(shim) as wdmd:
        assert (shim.path / "shim-loaded").exists()  # the probe's mark, before wdmd started
        assert shim.pid_file.read_text().strip() == str(wdmd.process.pid)
        assert shim.marker.exists()
        wait_for(lambda: petted(shim), 10, "wdmd's first keepalive")  # it listens before it opens the device
        assert kinds(shim)[:3] == [OPEN, EventKind.GETTIMEOUT, KEEPALIVE]
        assert wdmd.terminate(timeout=10)
    events = shim.events()
    assert [e.kind for e in events[-2:]] == [MAGIC, CLEAN]
    assert {e.pid for e in events} == {wdmd.process.pid}
    assert model(events).fire_at is None
    assert not shim.marker.exists() and not shim.pid_file.exists()
    assert [path.exists() for path in SYSTEM_PATHS] == before  # nothing of the host's was touched
    assert "armed with fire_timeout 60" in shim.syslog.read_text()


def test_wdmd_sets_the_device_timeout_it_wants(tmp_path: Path, shim_library: Path) -> None:
    shim = ShimDir.create(tmp_path / "wd", shim_library, device_timeout=30)
    with running_wdmd(shim):
        wait_for(lambda: petted(shim), 10, "wdmd's first keepalive")
    events = shim.events()
    assert [(e.kind, e.value) for e in events[1:3]] == [(EventKind.GETTIMEOUT, 30), (SETTIMEOUT, FIRE)]
    armed = model(events[:4], timeout=30)
    assert armed.fire_at == pings(events)[0] + FIRE


def test_two_instances_side_by_side_and_a_stale_marker(tmp_path: Path, shim_library: Path) -> None:
    first = ShimDir.create(tmp_path / "a", shim_library)
    second = ShimDir.create(tmp_path / "b", shim_library)
    stale = ShimDir.create(tmp_path / "c", shim_library)
    stale.marker.parent.mkdir()
    stale.marker.touch()  # as a wdmd killed with its device open would leave it
    with running_wdmd(first) as one, running_wdmd(second) as two:
        assert one.process.pid != two.process.pid
        for shim in (first, second):
            wait_for(partial(petted, shim), 10, f"keepalive in {shim.log}")
        with pytest.raises(WdmdFailed, match="other wdmd not cleanly stopped"), running_wdmd(stale):
            pass
        assert stale.events() == []  # it refused before opening the device
        assert one.alive() and two.alive()
    for shim in (first, second):
        assert kinds(shim)[-2:] == [MAGIC, CLEAN]
        assert shim.timer().fire_at is None


@pytest.mark.slow
def test_wdmd_pets_every_test_interval(shim: ShimDir) -> None:
    span = 2 * WDMD_TEST_INTERVAL - 1
    with running_wdmd(shim):
        wait_for(lambda: spread(pings(shim.events())) >= span, span + 2 * WDMD_TEST_INTERVAL, "keepalives over 20 s")
    times = pings(shim.events())
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert max(gaps) < WDMD_TEST_INTERVAL + 5, gaps  # wdmd pets at start (once or twice), then every 10 s
    assert sum(gap > WDMD_TEST_INTERVAL - 1 for gap in gaps) >= 2, gaps
    assert shim.timer().fire_at is None


def spread(times: list[float]) -> float:
    return times[-1] - times[0] if times else 0.0


# --------------------------------------------------------------------------
# Real sanlock and leased with -w 1 under the same shim, in the same tests

DAEMONS = ["leased", "sanlock"]


@contextmanager
def daemon_under(kind: str, shim: ShimDir, tmp: Path) -> Iterator[Daemon]:
    """A private ``kind`` daemon with ``-w 1`` whose connect() to /run/wdmd/wdmd.sock reaches ``shim``'s wdmd."""
    if kind == "leased":
        argv = local_daemons.leased_daemon_argv("wdmd-host", use_watchdog=True)
        env = shim.env()
        stop_argv = leased_shutdown_argv()
    else:
        binary = sanlock_binary()
        argv = local_daemons.sanlock_daemon_argv(binary, "wdmd-host", use_watchdog=True)
        env = shim.env(local_daemons.SANLOCK_DAEMON_ENV)
        stop_argv = [binary, "client", "shutdown", "-f", "1", "-w", "1"]
    with start_daemon(
        argv, tmp / kind / "run", env=env, stop_argv=stop_argv, log_path=tmp / kind / "daemon.log"
    ) as daemon:
        yield daemon


def lockspace_file(tmp: Path, io_timeout: int = IO_TIMEOUT) -> Path:
    return init_lease_file_direct(tmp / "leases.img", LS, [], io_timeout=io_timeout).path


_TEST_LIVE = re.compile(r"test_live ci \d+ renewal (\d+) expire (\d+)")


def lives_sent(wdmd: Wdmd) -> list[tuple[int, int]]:
    """(renewal, expire) of each TEST_LIVE wdmd logged: whole CLOCK_MONOTONIC seconds, as the daemon sent them."""
    return [(int(renewal), int(expire)) for renewal, expire in _TEST_LIVE.findall(wdmd.stderr())]


def last_test_live(wdmd: Wdmd) -> tuple[int, int]:
    found = lives_sent(wdmd)
    assert found, "wdmd logged no test_live"
    return found[-1]


def pings_after(shim: ShimDir, when: float) -> int:
    return sum(ping > when for ping in pings(shim.events()))


@pytest.mark.parametrize("kind", DAEMONS)
def test_w1_does_not_join_without_wdmd(kind: str, shim: ShimDir, tmp_path: Path) -> None:
    path = lockspace_file(tmp_path)
    with daemon_under(kind, shim, tmp_path) as daemon:
        with pytest.raises(SanlockError) as refused:
            daemon.client(timeout=60).add_lockspace(LS, 1, path, 0, io_timeout=IO_TIMEOUT)
        assert refused.value.rc == ResultCode.WD_ERROR  # -203, sanlock's SANLK_WD_ERROR
        assert daemon.client().get_lockspaces() == []
    # It connected first, so it failed before acquiring: host id 1 was never written.
    assert Leader.decode(path.read_bytes()[:LEADER_RECORD_SIZE]).timestamp == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAEMONS)
def test_keeps_the_device_petted_and_a_clean_leave_disarms(kind: str, shim: ShimDir, tmp_path: Path) -> None:
    path = lockspace_file(tmp_path)
    with running_wdmd(shim) as wdmd:
        with daemon_under(kind, shim, tmp_path) as daemon:
            client = daemon.client(timeout=60)
            client.add_lockspace(LS, 1, path, 0, io_timeout=IO_TIMEOUT)
            joined = time.monotonic()
            assert "sanlock_LS:1" in wdmd.stderr()  # registered under sanlock's name for the lockspace
            budget = 2 * WDMD_TEST_INTERVAL + 10
            wait_for(lambda: pings_after(shim, joined) >= 2, budget, "two keepalives while the daemon renews")
            assert UNCLEAN not in kinds(shim)
            timer = shim.timer()
            assert timer.fired_at is None and timer.reset_by(time.monotonic()) is False
            renewal, expire = last_test_live(wdmd)
            assert expire - renewal == id_renewal_fail_seconds(IO_TIMEOUT)
            assert renewal >= int(joined) - id_renewal_seconds(IO_TIMEOUT) - 1  # it goes on renewing
            client.rem_lockspace(LS, 1, path, 0)
        # The daemon said test_live(0, 0) and refcount_clear, so wdmd may stop now, and disarms as it does
        assert wdmd.terminate(timeout=10), "wdmd ignored SIGTERM: a client still holds its refcount"
    events = shim.events()
    assert [e.kind for e in events[-2:]] == [MAGIC, CLEAN]
    assert model(events).fire_at is None


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
@pytest.mark.parametrize("kind", DAEMONS)
def test_a_killed_or_stopped_daemon_leads_to_a_reset_before_host_dead_seconds(
    kind: str, fault: str, shim: ShimDir, tmp_path: Path
) -> None:
    path = lockspace_file(tmp_path)
    with running_wdmd(shim, stop_timeout=2) as wdmd:
        with daemon_under(kind, shim, tmp_path) as daemon:
            daemon.client(timeout=60).add_lockspace(LS, 1, path, 0, io_timeout=IO_TIMEOUT)
            joined = time.monotonic()
            wait_for(lambda: pings_after(shim, joined) >= 1, WDMD_TEST_INTERVAL + 10, "a keepalive after the join")
            faulted = time.monotonic()
            daemon.process.send_signal(getattr(signal, fault))
            budget = id_renewal_fail_seconds(IO_TIMEOUT) + 2 * WDMD_TEST_INTERVAL + 10
            wait_for(lambda: UNCLEAN in kinds(shim), budget, "wdmd closing the device without the magic")
            # The client's expire time passed and keeps its refcount: wdmd must not disarm on SIGTERM.
            assert not wdmd.terminate(timeout=3)
            renewal, expire = last_test_live(wdmd)
            daemon.process.kill()
            daemon.process.wait(timeout=10)
        wdmd.kill()
    events = shim.events()
    timer = model(events)
    closed = next(e.time for e in events if e.kind is UNCLEAN)
    last_ping = pings(events)[-1]
    dead = host_dead_seconds(IO_TIMEOUT)
    assert renewal <= faulted  # the last renewal the daemon reported came before the fault
    assert last_ping < closed  # no ping after the unclean close
    assert last_ping < expire + 1  # ... which came before the client's expire (wdmd counts whole seconds)
    assert timer.fired_at is None
    fire = timer.fire_at
    assert fire is not None and fire == pytest.approx(last_ping + FIRE)
    # Other hosts may take the leases host_dead_seconds after the last renewal they saw: the reset comes first.
    assert fire < renewal + dead
    print(
        f"{kind} {fault}: io_timeout={IO_TIMEOUT} host_dead_seconds={dead} last_renewal=fault{renewal - faulted:+.1f} "
        f"expire=fault{expire - faulted:+.1f} last_keepalive=fault{last_ping - faulted:+.2f} "
        f"unclean_close=fault{closed - faulted:+.2f} modelled_fire=fault{fire - faulted:+.2f} "
        f"fire_before_host_dead_by={renewal + dead - fire:.2f}s"
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAEMONS)
def test_failing_storage_stops_the_keepalives_and_a_lockspace_left_with_no_holder_disarms(
    kind: str, shim: ShimDir, faults: FaultFS, tmp_path: Path
) -> None:
    """Renewals fail with EIO: wdmd stops petting before the expiry; at 8N the lockspace fails, no holder
    needs fencing, so the daemon disarms and wdmd pets again (a reset protects nobody then)."""
    init_lease_file_direct(faults.backing / "leases.img", LS, [], io_timeout=IO_TIMEOUT)
    path = faults.mountpoint / "leases.img"
    with running_wdmd(shim, stop_timeout=10) as wdmd:
        with daemon_under(kind, shim, tmp_path) as daemon:
            client = daemon.client(timeout=60)
            client.add_lockspace(LS, 1, str(path), 0, io_timeout=IO_TIMEOUT)
            joined = time.monotonic()
            wait_for(lambda: pings_after(shim, joined) >= 1, WDMD_TEST_INTERVAL + 10, "a keepalive after the join")
            failed = time.monotonic()
            faults.set(read="eio", write="eio")
            budget = id_renewal_fail_seconds(IO_TIMEOUT) + 2 * WDMD_TEST_INTERVAL + 10
            wait_for(lambda: UNCLEAN in kinds(shim), budget, "wdmd closing the device without the magic")
            wait_for(lambda: lives_sent(wdmd)[-1] == (0, 0), budget, "the daemon disarming the failed lockspace")
            disarmed = time.monotonic()
            wait_for(lambda: pings_after(shim, disarmed) >= 1, 2 * WDMD_TEST_INTERVAL + 10, "keepalives again")
            faults.heal()
        assert wdmd.terminate(timeout=10), "wdmd ignored SIGTERM: a client still holds its refcount"
    events = shim.events()
    renewal, expire = [live for live in lives_sent(wdmd) if live != (0, 0)][-1]
    closed = next(e.time for e in events if e.kind is UNCLEAN)
    before_close = [ping for ping in pings(events) if ping < closed]
    assert renewal <= failed  # no renewal succeeded once the storage failed
    assert before_close[-1] < expire + 1  # the keepalives stopped before the expiry (whole seconds)
    assert closed < renewal + host_dead_seconds(IO_TIMEOUT)
    assert model(events).fire_at is None  # re-armed in time, then a clean stop
    print(
        f"{kind} EIO: last_renewal=fault{renewal - failed:+.1f} expire=fault{expire - failed:+.1f} "
        f"last_keepalive=fault{before_close[-1] - failed:+.2f} unclean_close=fault{closed - failed:+.2f} "
        f"disarmed=fault{disarmed - failed:+.2f}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAEMONS)
def test_io_timeout_1_starves_the_watchdog(kind: str, shim: ShimDir, tmp_path: Path) -> None:
    """A healthy daemon with io_timeout 1 gets its host reset: wdmd 3.8.5 stops petting within 10 s of expire.

    The expire time (renewal + 8 s) is never more than a test interval
    ahead, so wdmd's first client test already warns, closes the device
    without the magic and stops petting, though every renewal succeeds.
    Both daemons join anyway; leased says so in its log.
    """
    path = lockspace_file(tmp_path, io_timeout=1)
    with running_wdmd(shim, stop_timeout=2), daemon_under(kind, shim, tmp_path) as sanlock:
        client = sanlock.client(timeout=60)
        client.add_lockspace(LS, 1, path, 0, io_timeout=1)
        if kind == "leased":
            assert "wdmd will stop petting" in sanlock.log() and "use io_timeout 2 or more" in sanlock.log()
        wait_for(lambda: UNCLEAN in kinds(shim), 2 * WDMD_TEST_INTERVAL + 10, "wdmd closing the device")
        assert client.inq_lockspace(LS, 1, path, 0) is True  # sanlock still renews
        timer = shim.timer()
        assert timer.fire_at is not None and timer.fire_at == pytest.approx(pings(shim.events())[-1] + FIRE)
        client.rem_lockspace(LS, 1, path, 0)
