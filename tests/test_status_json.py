"""``leased client status --json``: the daemon's state as one document tools can read.

Run against leased's daemon and against the real sanlock daemon: both send
the same STATUS records, so the document must come out the same way, with
this test process as the registered holder of an EX and an SH lease.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from clitools import leased_client
from daemons import Daemon, init_lease_file, sanlock_daemon
from leased_daemons import leased_daemon

DaemonFactory = Callable[[Path], AbstractContextManager[Daemon]]
KINDS: dict[str, DaemonFactory] = {
    "leased": lambda tmp: leased_daemon(tmp, "leased", "json-host"),
    "sanlock": lambda tmp: sanlock_daemon(tmp, "sanlock", "json-host"),
}


@pytest.fixture(params=[pytest.param("leased"), pytest.param("sanlock", marks=pytest.mark.sanlock)])
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Daemon]:
    with KINDS[request.param](tmp_path) as running:
        yield running


def status_json(daemon: Daemon) -> dict[str, Any]:
    proc = leased_client(daemon.run_dir, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


@pytest.mark.slow
def test_status_json_lists_lockspaces_resources_and_clients(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client()
    lease_file = init_lease_file(client, tmp_path / "leases", b"LS", [b"R1", b"R2"], io_timeout=1)
    client.add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
    with client.register() as me:
        me.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        me.acquire(b"LS", b"R2", lease_file.disks(b"R2"), shared=True)
        document = status_json(daemon)

    assert document["daemon"]["name"] == "json-host"
    (ls,) = document["lockspaces"]
    assert (ls["name"], ls["host_id"], ls["path"], ls["offset"]) == ("LS", 1, str(lease_file.path), 0)
    assert (ls["state"], ls["io_timeout"], ls["renewal_failed"]) == ("joined", 1, False)
    assert ls["host_generation"] >= 1 and ls["renewal_last_success"] > 0
    resources = {r["name"]: r for r in document["resources"]}
    assert set(resources) == {"R1", "R2"}
    r1, r2 = resources["R1"], resources["R2"]
    assert (r1["mode"], r1["pid"], r1["lockspace"], r1["state"]) == ("EX", os.getpid(), "LS", "held")
    assert r1["lver"] >= 1
    assert r1["disks"] == [{"path": str(lease_file.path), "offset": lease_file.offset(b"R1")}]
    assert (r2["mode"], r2["pid"]) == ("SH", os.getpid())
    assert os.getpid() in {c["pid"] for c in document["clients"]}

    client.rem_lockspace(b"LS", 1, lease_file.path, 0)
    after = status_json(daemon)
    assert after["lockspaces"] == [] and after["resources"] == []
