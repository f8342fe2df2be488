"""leased.client against a real sanlock 3.8.5 daemon, and against scripted fakes for what a real one never does.

One private daemon serves the whole module (unprivileged, no watchdog, its
own run directory); its lockspace ``LS`` is written with io_timeout 1 so the
join takes about 3 s.  Each test takes fresh resource leases from a pool, so
tests do not depend on each other's leftovers.  The result codes asserted
here are the ones the real daemon returns: leased's daemon has to match them.

The fakes (a socket that answers wrongly, late, or not at all) check what a
daemon cannot be asked to do: that an interrupted exchange retires its
connection instead of letting the next call read a stale reply.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from daemons import Daemon, LeaseFile, init_lease_file, new_file, sanlock_daemon, start_daemon, wait_for

from leased.client import (
    AcquiredLease,
    AsyncClient,
    AsyncRegistration,
    Client,
    HostInfo,
    HostState,
    SanlockError,
    SanlockProtocolError,
    state_fields,
)
from leased.errors import LeaseError, ResultCode
from leased.protocol import (
    HEADER_SIZE,
    RES_SHARED,
    RESTRICT_ALL,
    SETEV_REPLACE_EVENT,
    SM_MAGIC,
    TARGET_SELF,
    VERSION_NUM,
    Cmd,
    Header,
    Resource,
    StateType,
)

MiB = 1 << 20
LS = b"LS"
PYTHON3 = "/usr/bin/python3"
CHILD = "import sanlock, time; sanlock.register(); print('ok', flush=True); time.sleep(60)"

sanlock = pytest.mark.sanlock


# --------------------------------------------------------------------------
# Fixtures: one real daemon for the module, a joined lockspace, a pool of leases


class ResourcePool:
    """Hands out resources never used before in this module."""

    def __init__(self, lease_file: LeaseFile) -> None:
        self.file = lease_file
        self._next = iter(lease_file.resources)

    def take(self) -> tuple[bytes, list[tuple[str, int]]]:
        name = next(self._next)
        return name, self.file.disks(name)

    def take_names(self, count: int) -> list[bytes]:
        return [self.take()[0] for _ in range(count)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with sanlock_daemon(tmp_path_factory.mktemp("sanlock")) as running:
        yield running


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Client:
    return daemon.client(timeout=30)


@pytest.fixture(scope="module")
def lease_file(daemon: Daemon, client: Client) -> LeaseFile:
    resources = [b"R%02d" % index for index in range(1, 41)]
    return init_lease_file(client, daemon.run_dir.parent / "leases.img", LS, resources, io_timeout=1)


@pytest.fixture(scope="module")
def joined(client: Client, lease_file: LeaseFile) -> LeaseFile:
    """LS joined as host 1 (synchronously), and its first scan of other hosts done."""
    client.add_lockspace(LS, 1, lease_file.path, 0, io_timeout=1)
    wait_for(lambda: _hosts_ready(client), 15, "get_hosts stops answering -11 (EAGAIN)")
    return lease_file


@pytest.fixture(scope="module")
def pool(joined: LeaseFile) -> ResourcePool:
    return ResourcePool(joined)


def _hosts_ready(client: Client) -> bool:
    try:
        client.get_hosts(LS)
    except SanlockError as exc:
        if exc.rc != ResultCode.EAGAIN:
            raise
        return False
    return True


def rc_of(call: Callable[[], object]) -> int:
    """The result code a call fails with (fails the test if it succeeds)."""
    with pytest.raises(SanlockError) as info:
        call()
    return info.value.rc


def no_owners(client: Client, name: bytes, disks: list[tuple[str, int]]) -> bool:
    return client.read_resource_owners(LS, name, disks)[1] == []


@contextmanager
def registered_child(daemon: Daemon) -> Iterator[subprocess.Popen[str]]:
    """Another process registered with the daemon through python3-sanlock; killed on exit."""
    if not os.path.exists(PYTHON3):
        pytest.skip(f"{PYTHON3} missing (python3-sanlock is only importable by the system python)")
    probe = subprocess.run([PYTHON3, "-c", "import sanlock"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip("python3-sanlock not importable by /usr/bin/python3")
    proc = subprocess.Popen(
        [PYTHON3, "-c", CHILD], env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "child did not register within 20 s"
        assert proc.stdout.readline() == "ok\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


# --------------------------------------------------------------------------
# Daemon-wide commands and lease areas


@sanlock
def test_version(client: Client) -> None:
    info = client.version()
    assert (info.version_num, info.proto) == (VERSION_NUM, 1)
    assert info.version == "3.8.5"


@sanlock
def test_write_and_read_lockspace(daemon: Daemon, client: Client) -> None:
    path = new_file(daemon.run_dir.parent / "wl.img", 2 * MiB)
    client.write_lockspace(b"WL", path, 0, io_timeout=7)
    assert client.read_lockspace(path) == (b"WL", 7)
    assert client.read_lockspace(path, align=MiB, sector=512) == (b"WL", 7)
    blank = new_file(daemon.run_dir.parent / "blank-ls.img", 2 * MiB)
    assert rc_of(lambda: client.read_lockspace(blank)) == ResultCode.LEADER_MAGIC
    assert rc_of(lambda: client.read_lockspace(daemon.run_dir / "missing")) == ResultCode.ENODEV


@sanlock
def test_write_and_read_resource(daemon: Daemon, client: Client) -> None:
    path = new_file(daemon.run_dir.parent / "wr.img", 2 * MiB)
    client.write_resource(b"WL", b"WR", [(str(path), MiB)])
    info = client.read_resource(path, MiB)
    assert (info.lockspace, info.name, info.lver) == (b"WL", b"WR", 0)
    assert info.flags == 0x110  # ALIGN1M | SECTOR512, taken from disk
    client.write_resource(b"WL", b"WR", [(str(path), MiB)], clear=True)
    assert rc_of(lambda: client.read_resource(path, MiB)) == ResultCode.LEADER_MAGIC
    assert rc_of(lambda: client.read_resource(path, 0)) == ResultCode.LEADER_MAGIC
    missing = str(daemon.run_dir / "missing")
    assert rc_of(lambda: client.write_resource(b"WL", b"WR", [(missing, 0)])) == ResultCode.ENOENT
    assert rc_of(lambda: client.read_resource(missing, 0)) == ResultCode.ENOENT


@sanlock
def test_align(client: Client, lease_file: LeaseFile) -> None:
    assert client.align(lease_file.path) == MiB


# --------------------------------------------------------------------------
# Lockspaces


@sanlock
def test_add_lockspace_sync_then_remove(daemon: Daemon, client: Client) -> None:
    path = new_file(daemon.run_dir.parent / "sync.img", MiB)
    client.write_lockspace(b"SYNC", path, io_timeout=1)
    assert client.inq_lockspace(b"SYNC", 1, path) is False
    started = time.monotonic()
    client.add_lockspace(b"SYNC", 1, path, io_timeout=1)
    assert time.monotonic() - started >= 2  # the delta lease needs 2 * io_timeout
    assert client.inq_lockspace(b"SYNC", 1, path) is True
    assert client.inq_lockspace(b"SYNC", 0, path) is True  # host_id 0 matches any
    assert rc_of(lambda: client.add_lockspace(b"SYNC", 1, path, io_timeout=1)) == ResultCode.EEXIST
    assert rc_of(lambda: client.add_lockspace(b"SYNC", 2, path, io_timeout=1)) == ResultCode.EINVAL
    assert rc_of(lambda: client.add_lockspace(b"SYNC", 0, path)) == ResultCode.EINVAL
    (info,) = [ls for ls in client.get_lockspaces() if ls.name == b"SYNC"]
    assert (info.host_id, info.path, info.offset, info.joined) == (1, str(path), 0, True)
    client.rem_lockspace(b"SYNC", 1, path)
    assert client.inq_lockspace(b"SYNC", 1, path) is False
    assert b"SYNC" not in [ls.name for ls in client.get_lockspaces()]
    assert rc_of(lambda: client.rem_lockspace(b"SYNC", 1, path)) == ResultCode.ENOENT


@sanlock
async def test_add_lockspace_async_polled_with_inq_lockspace(daemon: Daemon) -> None:
    aclient = AsyncClient(daemon.run_dir, timeout=30)
    path = new_file(daemon.run_dir.parent / "async.img", MiB)
    with trio.fail_after(30):
        await aclient.write_lockspace(b"ASYNC", path, io_timeout=1)
        await aclient.add_lockspace(b"ASYNC", 3, path, io_timeout=1, wait=False)
        assert await aclient.inq_lockspace(b"ASYNC", 3, path) is None  # being added
        (info,) = [ls for ls in await aclient.get_lockspaces() if ls.name == b"ASYNC"]
        assert info.adding and not info.joined
        with pytest.raises(SanlockError) as again:
            await aclient.add_lockspace(b"ASYNC", 3, path, io_timeout=1, wait=False)
        assert again.value.rc == ResultCode.EINPROGRESS
        with pytest.raises(SanlockError) as not_yet:
            await aclient.get_hosts(b"ASYNC")
        assert not_yet.value.rc == ResultCode.ENOENT  # not joined while being added
        while (state := await aclient.inq_lockspace(b"ASYNC", 3, path)) is None:
            await trio.sleep(0.05)
        assert state is True
        await aclient.rem_lockspace(b"ASYNC", 3, path, wait=False, unused=True)
        # Async removal: still listed (inq True) until its pids are gone.
        while await aclient.inq_lockspace(b"ASYNC", 3, path, wait=True) is not False:
            await trio.sleep(0.05)


@sanlock
def test_get_lockspaces_and_hosts(client: Client, joined: LeaseFile) -> None:
    (info,) = [ls for ls in client.get_lockspaces() if ls.name == LS]
    assert (info.host_id, info.path, info.offset, info.flags) == (1, str(joined.path), 0, 0)
    (host,) = client.get_hosts(LS)
    assert (host.host_id, host.io_timeout, host.state) == (1, 1, HostState.LIVE)
    assert host.generation >= 1 and host.timestamp > 0
    (free,) = client.get_hosts(LS, 2)
    assert (free.host_id, free.state, free.generation, free.timestamp) == (2, HostState.FREE, 0, 0)
    assert rc_of(lambda: client.get_hosts(b"NOPE")) == ResultCode.ENOENT


@sanlock
def test_host_status_and_renewal(client: Client, joined: LeaseFile) -> None:
    records = client.host_status(LS)
    assert [record.data32 for record in records] == [1]
    fields = state_fields(records[0].text)
    assert (fields["owner_id"], fields["io_timeout"]) == ("1", "1")
    assert records[0].data64 == int(fields["timestamp"]) > 0
    assert rc_of(lambda: client.host_status(b"NOPE")) == ResultCode.ENOSPC
    io_timeout, renewals = client.renewal(LS)
    assert io_timeout == 1 and renewals
    assert all(record.type == StateType.RENEWAL and "read_ms" in record.text for record in renewals)
    assert rc_of(lambda: client.renewal(b"NOPE")) == ResultCode.ENOSPC


@sanlock
def test_inq_lockspace_unknown_is_false(client: Client, joined: LeaseFile) -> None:
    assert client.inq_lockspace(b"NOPE", 1, joined.path) is False
    assert client.inq_lockspace(LS, 1, joined.path) is True


@sanlock
def test_set_config(client: Client, joined: LeaseFile) -> None:
    client.set_config(LS, 2)  # SANLK_CONFIG_UNUSED: the default
    assert rc_of(lambda: client.set_config(b"NOPE", 2)) == ResultCode.ENOENT


# --------------------------------------------------------------------------
# Leases on the registered connection


@sanlock
def test_acquire_inquire_release(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    with client.register() as reg:
        assert reg.inquire() == []
        lease = reg.acquire(LS, name, disks)
        assert (lease.lockspace, lease.resource, lease.shared, lease.lver) == (LS, name, False, 1)
        (held,) = reg.inquire()
        assert (held.lockspace, held.resource, held.shared, held.lver) == (LS, name, False, 1)
        assert [(disk.path, disk.offset) for disk in held.disks] == disks
        assert rc_of(lambda: reg.acquire(LS, name, disks)) == ResultCode.EEXIST
        reg.release(LS, name)
        assert reg.inquire() == []
        assert rc_of(lambda: reg.release(LS, name)) == ResultCode.EPERM  # -1: not held
        # The lease version is a fencing token: every exclusive acquire bumps it.
        assert reg.acquire(LS, name, disks).lver == 2
        assert client.read_resource(disks[0][0], disks[0][1]).lver == 2
        reg.release_all()
        assert reg.inquire() == []
        assert reg.broken is None


@sanlock
def test_acquire_errors(client: Client, pool: ResourcePool, daemon: Daemon) -> None:
    name, disks = pool.take()
    blank = new_file(daemon.run_dir.parent / "blank-res.img", 2 * MiB)
    with client.register() as reg:
        assert rc_of(lambda: reg.acquire(b"NOPE", name, disks)) == ResultCode.ENOSPC  # lockspace not joined
        assert rc_of(lambda: reg.acquire(LS, name, [(str(blank), MiB)])) == ResultCode.LEADER_MAGIC
        assert rc_of(lambda: reg.acquire(LS, name, disks, lver=99)) == ResultCode.ACQUIRE_LVER
        assert rc_of(lambda: reg.convert(LS, name, True)) == ResultCode.ENOENT  # not held
        # Failures leave the connection in step.
        assert reg.acquire(LS, name, disks, lver=0).lver == 1
        assert [lease.resource for lease in reg.inquire()] == [name]


@sanlock
def test_shared_acquire_and_convert(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    with client.register() as reg:
        lease = reg.acquire(LS, name, disks, shared=True)
        assert (lease.shared, lease.lver) == (True, None)
        (held,) = reg.inquire()
        assert (held.shared, held.lver) == (True, None)
        info, owners = client.read_resource_owners(LS, name, disks)
        assert info.flags & RES_SHARED and info.shared
        assert [(owner.host_id, owner.timestamp) for owner in owners] == [(1, 0)]  # shared owners: no timestamp
        assert rc_of(lambda: reg.convert(LS, name, True)) == ResultCode.EALREADY
        reg.convert(LS, name, False)
        (held,) = reg.inquire()
        assert (held.shared, held.lver) == (False, client.read_resource(*disks[0]).lver)
        assert rc_of(lambda: reg.convert(LS, name, False)) == ResultCode.EALREADY
        reg.convert(LS, name, True)
        assert reg.inquire()[0].shared
        reg.release(LS, name)


@sanlock
def test_lvb(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    plain, plain_disks = pool.take()
    with client.register() as reg:
        reg.acquire(LS, name, disks, lvb=True)
        assert client.get_lvb(LS, name) == bytes(512)  # the whole sector
        client.set_lvb(LS, name, b"hello")
        assert client.get_lvb(LS, name, 8) == b"hello\0\0\0"
        reg.acquire(LS, plain, plain_disks)
        assert rc_of(lambda: client.set_lvb(LS, plain, b"x")) == ResultCode.EINVAL  # acquired without lvb
        reg.release(LS, name)
        assert rc_of(lambda: client.get_lvb(LS, name)) == ResultCode.ENOENT  # not held here
        reg.acquire(LS, name, disks, lvb=True)
        assert client.get_lvb(LS, name, 5) == b"hello"  # written to disk by the release


@sanlock
def test_read_resource_owners(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    info, owners = client.read_resource_owners(LS, name, disks)
    assert (info.lockspace, info.name, info.lver, owners) == (LS, name, 0, [])
    with client.register() as reg:
        lease = reg.acquire(LS, name, disks)
        info, owners = client.read_resource_owners(LS, name, disks)
        (host,) = client.get_hosts(LS)
        assert info.lver == lease.lver and not info.shared
        assert [(owner.host_id, owner.generation) for owner in owners] == [(1, host.generation)]
        assert owners[0].timestamp > 0 and owners[0].state is None  # no state in this reply


@sanlock
def test_request(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    client.request(LS, name, disks, 0)  # free lease: nothing to ask
    with client.register() as reg:
        lease = reg.acquire(LS, name, disks)
        client.request(LS, name, disks, 0)  # force mode 0: write/clear the request, next lver
        assert rc_of(lambda: client.request(LS, name, disks, 0, lver=lease.lver)) == ResultCode.REQUEST_OLD
        client.request(LS, name, disks, 0, lver=0)
        assert [held.resource for held in reg.inquire()] == [name]
    assert rc_of(lambda: client.request(b"NOPE", name, disks, 0)) == ResultCode.ENOSPC


@sanlock
def test_killpath_and_restrict(client: Client, daemon: Daemon, pool: ResourcePool) -> None:
    name, disks = pool.take()
    with client.register() as reg:
        reg.killpath("/bin/true", ["a b", "c\\d"], pid_arg=True)
        with pytest.raises(LeaseError) as too_long:
            reg.killpath("/bin/" + "x" * 200)
        assert too_long.value.rc == ResultCode.ENAMETOOLONG
        reg.restrict(0)
        reg.acquire(LS, name, disks)
        reg.restrict(RESTRICT_ALL)
        # The daemon ignores everything after RESTRICT_ALL, so the client refuses to send.
        assert rc_of(reg.inquire) == ResultCode.EPERM
        assert reg.broken is None
    assert "cmd_killpath" in client.log_dump()
    # Closing a restricted registration still releases its leases.
    wait_for(lambda: no_owners(client, name, disks), 10, "lease released after close")


@sanlock
def test_status_records(client: Client, pool: ResourcePool, joined: LeaseFile) -> None:
    name, disks = pool.take()
    with client.register() as reg:
        lease = reg.acquire(LS, name, disks, owner_name=b"tester")
        records = client.status()
    types = [record.type for record in records]
    assert types[0] == StateType.DAEMON and types == sorted(types)
    assert records[0].fields["version_str"] == "3.8.5"
    clients = {record.state.data32: record for record in records if record.type == StateType.CLIENT}
    assert clients[os.getpid()].state.name == b"tester"
    assert clients[-1].state.name in {b"helper", b"listener", b"status"}
    (space,) = [record for record in records if record.type == StateType.LOCKSPACE and record.state.name == LS]
    assert space.lockspace is not None and space.lockspace.disk.path == str(joined.path)
    assert space.fields["list"] == "spaces" and space.state.data64 == 1
    (res,) = [record for record in records if record.type == StateType.RESOURCE and record.state.name == name]
    assert res.resource is not None and res.resource.lockspace == LS
    assert [(disk.path, disk.offset) for disk in res.resource.disks] == disks
    assert (res.state.data32, res.state.data64, res.fields["list"]) == (os.getpid(), lease.lver, "held")
    daemon_only = client.status(1)
    assert [record.type for record in daemon_only] == [StateType.DAEMON]


@sanlock
def test_log_dump(client: Client) -> None:
    client.version()
    text = client.log_dump()
    assert isinstance(text, str) and "sanlock daemon started 3.8.5" in text


@sanlock
def test_rem_lockspace_unused_while_lease_held(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    with client.register() as reg:
        reg.acquire(LS, name, disks)
        rc = rc_of(lambda: client.rem_lockspace(LS, 1, pool.file.path, unused=True, wait=False))
        assert rc == ResultCode.EBUSY
        assert client.inq_lockspace(LS, 1, pool.file.path) is True
        assert [lease.resource for lease in reg.inquire()] == [name]


@sanlock
def test_shutdown_refused_while_lockspaces_exist(client: Client, joined: LeaseFile) -> None:
    assert rc_of(lambda: client.shutdown(wait=True)) == ResultCode.EBUSY
    client.version()


@sanlock
def test_closing_registration_releases_leases(client: Client, pool: ResourcePool) -> None:
    name, disks = pool.take()
    first = client.register()
    lease = first.acquire(LS, name, disks)
    assert not no_owners(client, name, disks)
    first.close()
    assert first.closed
    assert rc_of(first.inquire) == ResultCode.ENOTCONN
    wait_for(lambda: no_owners(client, name, disks), 10, "lease released after the registration closed")
    with client.register() as second:

        def acquired() -> AcquiredLease | None:
            # EAGAIN while the daemon still finishes the release it wrote (sanlock 3.8's acquire_token)
            try:
                return second.acquire(LS, name, disks)
            except SanlockError as exc:
                if exc.rc == ResultCode.EAGAIN:
                    return None
                raise

        assert wait_for(acquired, 10, "acquired once the release finished").lver == (lease.lver or 0) + 1


# --------------------------------------------------------------------------
# Acting for another registered process


@sanlock
def test_acquire_for_another_pid(client: Client, daemon: Daemon, pool: ResourcePool) -> None:
    name, disks = pool.take()
    shared, shared_disks = pool.take()
    with registered_child(daemon) as child:
        # python's register() returns before the daemon handled it: probe until known.
        wait_for(lambda: _registered(client, child.pid), 10, "child registered")
        lease = client.acquire(LS, name, disks, pid=child.pid)
        assert (lease.resource, lease.lver) == (name, 1)
        client.acquire(LS, shared, shared_disks, pid=child.pid, shared=True)
        assert [(held.resource, held.lver) for held in client.inquire(pid=child.pid)] == [(name, 1), (shared, None)]
        client.convert(LS, shared, False, pid=child.pid)
        # The shared acquire wrote lver 1; converting to exclusive is a new ballot: 2.
        assert client.inquire(pid=child.pid)[1].lver == client.read_resource(*shared_disks[0]).lver == 2
        client.release(LS, shared, pid=child.pid)
        assert rc_of(lambda: client.release(LS, shared, pid=child.pid)) == ResultCode.EPERM
        with client.register() as reg:
            assert reg.inquire() == []  # the child's leases are not ours
            assert rc_of(lambda: reg.acquire(LS, name, disks)) == ResultCode.EEXIST  # held on this host
        child.kill()
        child.wait(timeout=10)
        wait_for(lambda: no_owners(client, name, disks), 10, "child's lease released when it died")
        wait_for(lambda: not _registered(client, child.pid), 10, "child's registration dropped")
    assert rc_of(lambda: client.acquire(LS, name, disks, pid=child.pid)) == ResultCode.ESRCH


def _registered(client: Client, pid: int) -> bool:
    try:
        client.inquire(pid=pid)
    except SanlockError as exc:
        if exc.rc != ResultCode.ESRCH:
            raise
        return False
    return True


@sanlock
def test_registered_commands_need_a_registration(client: Client, pool: ResourcePool) -> None:
    # data2 = -1 on a connection that never registered: the daemon says -16.
    assert rc_of(lambda: client.inquire(pid=TARGET_SELF)) == ResultCode.EBUSY
    assert rc_of(lambda: client.inquire(pid=1)) == ResultCode.ESRCH


# --------------------------------------------------------------------------
# Events


@sanlock
def test_events_registration_and_errors(client: Client, joined: LeaseFile) -> None:
    assert rc_of(lambda: client.reg_event(b"NOPE")) == ResultCode.ENOENT
    with client.reg_event(LS) as channel:
        assert channel.get_events() == []
    assert rc_of(lambda: client.set_event(LS, 0, 0, 1)) == ResultCode.EINVAL
    assert rc_of(lambda: client.set_event(b"NOPE", 2, 0, 1)) == ResultCode.ENOENT
    client.set_event(LS, 2, 0, 5, 6)
    assert rc_of(lambda: client.set_event(LS, 2, 0, 7, 6)) == ResultCode.EBUSY  # another event pending
    client.set_event(LS, 2, 0, 7, 6, flags=SETEV_REPLACE_EVENT)


# --------------------------------------------------------------------------
# Many threads, many tasks, one registered connection


CYCLES = 50


@sanlock
def test_threads_share_one_registration(client: Client, pool: ResourcePool, daemon: Daemon) -> None:
    names = pool.take_names(8)
    log_before = len(daemon.log())
    barrier = threading.Barrier(len(names))

    with client.register() as reg:

        def cycle(name: bytes) -> int:
            disks = pool.file.disks(name)
            barrier.wait(timeout=30)
            lver = 0
            for _ in range(CYCLES):
                assert name not in [lease.resource for lease in reg.inquire()]
                lease = reg.acquire(LS, name, disks)
                assert (lease.resource, lease.lver) == (name, lver + 1)
                lver += 1
                reg.release(LS, name)
            return lver

        with ThreadPoolExecutor(len(names)) as executor:
            futures = [executor.submit(cycle, name) for name in names]
            assert [future.result(timeout=120) for future in futures] == [CYCLES] * len(names)
        assert reg.broken is None
        assert reg.inquire() == []
    _assert_no_protocol_complaints(daemon.log()[log_before:])


@sanlock
async def test_trio_tasks_share_one_registration(daemon: Daemon, pool: ResourcePool) -> None:
    names = pool.take_names(8)
    log_before = len(daemon.log())
    aclient = AsyncClient(daemon.run_dir, timeout=30)
    results: dict[bytes, int] = {}

    async def cycle(reg_: AsyncRegistration, name: bytes) -> None:
        disks = pool.file.disks(name)
        lver = 0
        for _ in range(CYCLES):
            assert name not in [lease.resource for lease in await reg_.inquire()]
            lease = await reg_.acquire(LS, name, disks)
            assert (lease.resource, lease.lver) == (name, lver + 1)
            lver += 1
            await reg_.release(LS, name)
        results[name] = lver

    with trio.fail_after(120):
        assert (await aclient.version()).version == "3.8.5"
        async with aclient.register() as reg:
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(cycle, reg, name)
            assert reg.broken is None
            assert await reg.inquire() == []
    assert results == dict.fromkeys(names, CYCLES)
    _assert_no_protocol_complaints(daemon.log()[log_before:])


def _assert_no_protocol_complaints(log: str) -> None:
    """The daemon saw no mangled header and refused no command because another was active (§7.3, §8)."""
    for line in log.splitlines():
        assert "recv msg header" not in line and " magic " not in line and " unknown" not in line, line
        assert "cmd_active" not in line or "client_pid_dead" in line, line


# --------------------------------------------------------------------------
# Event delivery between two daemons (host 4 is a second sanlock on the same file)


@sanlock
async def test_event_delivered_to_other_host(client: Client, daemon: Daemon, joined: LeaseFile) -> None:
    (us,) = [host for host in client.get_hosts(LS) if host.host_id == 1]
    with sanlock_daemon(daemon.run_dir.parent.parent, "peer", "peer-host") as peer:
        peer_client = AsyncClient(peer.run_dir, timeout=30)
        with trio.fail_after(40):
            await peer_client.add_lockspace(LS, 4, joined.path, io_timeout=1)
            while (them := await _own_host(peer_client, 4)) is None:
                await trio.sleep(0.05)
            async with await peer_client.reg_event(LS) as channel:
                with peer.client().reg_event(LS) as blocking_channel:
                    # Our host sends one event at a time, whoever it is for: replace
                    # the one test_events_registration_and_errors left pending.
                    client.set_event(LS, 4, them.generation, 42, 7, flags=SETEV_REPLACE_EVENT)
                    event = await channel.receive()
                    assert (event.host_id, event.generation, event.event, event.data) == (4, them.generation, 42, 7)
                    assert (event.from_host_id, event.from_generation) == (1, us.generation)
                    # Every event connection of the lockspace gets a copy.
                    while not (events := blocking_channel.get_events()):
                        await trio.sleep(0.05)
                    assert events == [event]


async def _own_host(aclient: AsyncClient, host_id: int) -> HostInfo | None:
    """Our host's entry, or None while the daemon has not finished its first scan (-11)."""
    try:
        (host,) = await aclient.get_hosts(LS, host_id)
    except SanlockError as exc:
        if exc.rc != ResultCode.EAGAIN:
            raise
        return None
    return host


# --------------------------------------------------------------------------
# Shutdown (a daemon of its own)


@sanlock
def test_shutdown_wait(tmp_path: Path) -> None:
    with sanlock_daemon(tmp_path, "doomed") as doomed:
        doomed.client(timeout=30).shutdown(wait=True)
        doomed.process.wait(timeout=15)
        assert doomed.process.returncode == 0
        # sanlock leaves its socket file behind: connecting is refused.
        assert rc_of(doomed.client(timeout=5).version) == -errno.ECONNREFUSED


# --------------------------------------------------------------------------
# Scripted fakes: what happens when a reply is wrong, late or missing


Handler = Callable[[socket.socket], None]


@contextmanager
def fake_daemon(run_dir: Path, *handlers: Handler) -> Iterator[list[bytes]]:
    """Serve one connection per handler on ``run_dir/sanlock.sock``; yields the bytes each received."""
    run_dir.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(run_dir / "sanlock.sock"))
    listener.listen(len(handlers))
    listener.settimeout(10)
    received: list[bytes] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            for handler in handlers:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(10)
                    handler(conn)
        except BaseException as exc:  # reported in the test thread
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        thread.join(timeout=15)
        listener.close()
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def read_request(conn: socket.socket, body: int = 0) -> tuple[Header, bytes]:
    raw = b""
    while len(raw) < HEADER_SIZE + body:
        chunk = conn.recv(HEADER_SIZE + body - len(raw))
        if not chunk:
            raise EOFError(f"fake daemon: EOF after {len(raw)} bytes")
        raw += chunk
    return Header.decode(raw[:HEADER_SIZE]), raw[HEADER_SIZE:]


def answer(conn: socket.socket, request: Header, result: int = 0, payload: bytes = b"", **changes: int) -> None:
    reply = replace(request.reply(result, payload_length=len(payload)), **changes)
    conn.sendall(reply.encode() + payload)


def serve_register(conn: socket.socket) -> None:
    """What sanlock does for REGISTER followed by our confirming INQUIRE."""
    register, _ = read_request(conn)
    assert register.cmd == Cmd.REGISTER
    inquire, _ = read_request(conn)
    assert (inquire.cmd, inquire.target_pid) == (Cmd.INQUIRE, -1)
    answer(conn, inquire)


def wait_eof(conn: socket.socket) -> bytes:
    """Everything the client still sends until it closes."""
    rest = b""
    while chunk := conn.recv(65536):
        rest += chunk
    return rest


def test_acquire_request_bytes_match_libsanlock(tmp_path: Path) -> None:
    """Same header fields and body layout as python3-sanlock's trace (§12.1), plus our seq tag."""
    seen: list[tuple[Header, bytes]] = []

    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        request, body = read_request(conn, 1224)
        seen.append((request, body))
        answer(conn, request)
        inquire, _ = read_request(conn)
        state = b"LS:R1:/tmp/x y:1048576:7\0".replace(b" ", b"\\ ")
        answer(conn, inquire, payload=state, data2=1)
        assert wait_eof(conn) == b""

    with fake_daemon(tmp_path, handler), Client(tmp_path, timeout=10).register() as reg:
        lease = reg.acquire(b"LS", b"R1", [("/tmp/x y", MiB)])
    assert lease.lver == 7 and lease.disks[0].path == "/tmp/x y"
    ((request, body),) = seen
    expected = "10202804 01000000 07000000 00000000 e8040000 {seq} 01000000 ffffffff"
    assert request.encode().hex(" ", 4) == expected.format(seq=struct.pack("<I", request.seq).hex())
    assert request.seq != 0
    assert body[:2] == b"LS" and body[0x30:0x32] == b"R1" and body[0x78:0x80] == bytes([0, 0, 0, 0, 1, 0, 0, 0])
    assert body[0x80:0x88] == b"/tmp/x y" and body[0x480:0x488] == MiB.to_bytes(8, "little")
    assert body[0x490:] == bytes(56)
    assert Resource.decode(body).num_disks == 1


def test_host_status_sent_with_length_32(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        request, body = read_request(conn, 1104)
        assert (request.cmd, request.length, body[:2]) == (Cmd.HOST_STATUS, HEADER_SIZE, b"LS")
        answer(conn, request)

    with fake_daemon(tmp_path, handler):
        assert Client(tmp_path, timeout=10).host_status(b"LS") == []


def test_timeout_retires_the_registered_connection(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        read_request(conn, 1224)  # the acquire: never answered
        assert wait_eof(conn) == b""  # nothing more is sent on this connection

    with fake_daemon(tmp_path, handler):
        reg = Client(tmp_path, timeout=0.3).register()
        with reg:
            name, disks = b"R1", [("/tmp/x", MiB)]
            assert rc_of(lambda: reg.acquire(b"LS", name, disks)) == ResultCode.ETIMEDOUT
            assert reg.broken is not None and "acquire" in reg.broken
            # A late reply would now be read as the answer to the next call: refuse instead.
            assert rc_of(reg.inquire) == ResultCode.ENOTCONN


def test_reply_to_another_request_is_detected(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        request, _ = read_request(conn)
        answer(conn, request, seq=request.seq + 1)  # someone else's reply
        assert wait_eof(conn) == b""

    with fake_daemon(tmp_path, handler), Client(tmp_path, timeout=10).register() as reg:
        with pytest.raises(SanlockProtocolError) as info:
            reg.inquire()
        assert info.value.rc == ResultCode.EPROTO
        assert reg.broken is not None
        assert rc_of(reg.inquire) == ResultCode.ENOTCONN


def test_short_reply_is_enotconn(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        request, _ = read_request(conn)
        conn.sendall(request.reply(0).encode()[:20])

    with fake_daemon(tmp_path, handler), pytest.raises(SanlockError) as info:
        Client(tmp_path, timeout=10).version()
    assert info.value.rc == ResultCode.ENOTCONN
    assert "version reply header" in str(info.value) and "ENOTCONN" in str(info.value)


def test_bad_magic_is_a_protocol_error(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        request, _ = read_request(conn)
        answer(conn, request, magic=SM_MAGIC + 1)

    with fake_daemon(tmp_path, handler), pytest.raises(SanlockProtocolError):
        Client(tmp_path, timeout=10).version()


def test_error_names_command_and_code(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        request, _ = read_request(conn, 1104)
        answer(conn, request, ResultCode.ENOENT)

    with fake_daemon(tmp_path, handler), pytest.raises(SanlockError) as info:
        Client(tmp_path, timeout=10).get_hosts(b"LS")
    assert (info.value.rc, info.value.cmd) == (-2, "get_hosts")
    assert str(info.value) == "get_hosts b'LS' failed (error -2 ENOENT)"


def test_no_daemon(tmp_path: Path) -> None:
    assert rc_of(Client(tmp_path, timeout=5).version) == ResultCode.ENOENT


async def test_cancelled_trio_call_retires_the_registration(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        read_request(conn)  # an inquire, never answered
        assert wait_eof(conn) == b""

    with fake_daemon(tmp_path, handler):
        async with AsyncClient(tmp_path, timeout=10).register() as reg:
            with trio.move_on_after(0.2) as scope:
                await reg.inquire()
            assert scope.cancelled_caught
            assert reg.broken is not None
            with pytest.raises(SanlockError) as info:
                await reg.inquire()
            assert info.value.rc == ResultCode.ENOTCONN


async def test_pending_cancel_does_not_cost_the_registration(tmp_path: Path) -> None:
    def handler(conn: socket.socket) -> None:
        serve_register(conn)
        request, _ = read_request(conn)
        answer(conn, request)
        assert wait_eof(conn) == b""

    with fake_daemon(tmp_path, handler):
        async with AsyncClient(tmp_path, timeout=10).register() as reg:
            with trio.CancelScope() as scope:
                scope.cancel()
                await reg.inquire()
            assert reg.broken is None  # nothing had been sent
            assert await reg.inquire() == []


def test_start_daemon_runs_any_command(tmp_path: Path) -> None:
    """start_daemon works for any command serving the protocol; here a tiny python fake."""
    script = tmp_path / "fake.py"
    script.write_text(
        "import os, socket, struct\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(os.environ['SANLOCK_RUN_DIR'] + '/sanlock.sock'); s.listen(8)\n"
        "while True:\n"
        "    c, _ = s.accept(); h = c.recv(32)\n"
        "    w = list(struct.unpack('<8I', h)); w[6], w[7] = 0, 0x03080500\n"
        "    c.sendall(struct.pack('<8I', *w)); c.close()\n"
    )
    with start_daemon([sys.executable, str(script)], tmp_path / "run") as fake:
        assert fake.client(timeout=5).version().version == "3.8.5"
    assert not fake.alive()
