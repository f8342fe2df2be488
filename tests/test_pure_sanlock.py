"""``leased.sanlock`` against Debian's python3-sanlock 3.8.5: same calls, same outcomes, on both daemons.

Each scenario of :mod:`sanlock_scenarios` runs twice per daemon, in a
process of its own: once with the C binding under ``/usr/bin/python3`` (the
only interpreter that can import it) and once with ``leased.sanlock`` under
this virtualenv's python.  Every call's outcome (the ``repr`` of the result,
or the exception's class and ``args``) must be the same; where the C
binding differs and leased.sanlock does not copy it, the difference is a row
of :data:`KNOWN_DIFFERENCES` with its reason, and the test checks that both
sides still answer exactly as that row says (a row that no longer matches
fails, so the table cannot go stale).

The daemons are leased's and a private real sanlock 3.8.5, each with
lockspace ``LS`` (io_timeout 1) joined as host 1 for the whole module;
each run writes its own resource leases on its own file, so the two runs of
a scenario start from the same state.  For events a second (leased) host
joins ``LS`` and sets an event for host 1 while each module waits on its
``reg_event`` fd.  Scenarios that need no daemon (constants and docstrings,
alignment, no daemon at all) run once per module.  Every wait is a poll
against a deadline; every process has a timeout.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sanlock_scenarios
from daemons import Daemon, sanlock_daemon, wait_for
from leased_daemons import leased_daemon

from leased.client import Client, SanlockError
from leased.protocol import HostState

PYTHON3 = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().with_name("sanlock_scenarios.py")
MiB = 1 << 20

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(PYTHON3)
        or subprocess.run([PYTHON3, "-c", "import sanlock"], capture_output=True, check=False).returncode != 0,
        reason="python3-sanlock not importable by /usr/bin/python3 (apt-get install python3-sanlock)",
    ),
    pytest.mark.timeout(180),
]

Outcome = tuple[str, str]
"""(kind, text): ``("ok", repr(result))`` or ``(exception class, repr(args))``."""

KNOWN_DIFFERENCES: dict[tuple[str, str], tuple[tuple[Outcome, ...], Outcome, str]] = {
    # (scenario, label): (C binding's outcome(s), leased.sanlock's outcome, why they differ)
    ("nonblocking_fd", "inquire on a non-blocking fd"): (
        (
            ("SanlockException", "(1, 'Inquire error', 'Operation not permitted')"),
            ("ok", "[]"),  # when the daemon's reply wins the race with libsanlock's recv
        ),
        ("ok", "[]"),
        "C binding defect: libsanlock's recv on a non-blocking registered fd fails with EAGAIN, reported as"
        " -1 (EPERM), and the unread reply then answers the next call; leased.sanlock waits for the reply"
        " and leaves the fd non-blocking as it found it",
    ),
    ("events", "reg_event keyword"): (
        (("TypeError", "('reg_event() takes no keyword arguments',)"),),
        ("TypeError", "(\"reg_event() got some positional-only arguments passed as keyword arguments: 'lockspace'\",)"),
        "a Python function's own message for a keyword given to a positional-only parameter",
    ),
    ("events", "register with an argument"): (
        (("TypeError", "('sanlock.register() takes no arguments (1 given)',)"),),
        ("TypeError", "('register() takes 0 positional arguments but 1 was given',)"),
        "a Python function's own message for a wrong number of arguments",
    ),
}
"""Where the two modules answer differently on purpose (or by nature), with the reason."""


def run(module: str, scenario: str, context: dict[str, object], env: dict[str, str]) -> list[list[str]]:
    """One scenario in a fresh process of the module's interpreter; its recorded outcomes."""
    python = PYTHON3 if module == "c" else sys.executable
    full_env = {**env, "PYTHONPATH": str(REPO)} if module == "pure" else dict(env)
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [python, str(SCRIPT), module, scenario, json.dumps(context)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{module} {scenario} exited {done.returncode}:\n{done.stderr[-4000:]}"
    outcomes: list[list[str]] = json.loads(done.stdout.splitlines()[-1])
    return outcomes


def compare(scenario: str, c_run: list[list[str]], pure_run: list[list[str]]) -> None:
    """Every call's outcome equal, or exactly the two outcomes KNOWN_DIFFERENCES names."""
    c_outcomes = {label: (kind, text) for label, kind, text in c_run}
    pure_outcomes = {label: (kind, text) for label, kind, text in pure_run}
    assert [row[0] for row in c_run] == [row[0] for row in pure_run], "the two runs made different calls"
    mismatches = []
    for label, c_outcome in c_outcomes.items():
        pure_outcome = pure_outcomes[label]
        known = KNOWN_DIFFERENCES.get((scenario, label))
        if known is not None:
            c_expected, pure_expected, _ = known
            assert c_outcome in c_expected and pure_outcome == pure_expected, f"{label}: the known difference changed"
        elif c_outcome != pure_outcome:
            mismatches.append(f"{label}:\n    C:    {c_outcome}\n    pure: {pure_outcome}")
    assert not mismatches, "\n".join(mismatches)


def run_both(scenario: str, tmp_path: Path, env: dict[str, str], **context: object) -> dict[str, list[list[str]]]:
    runs = {}
    for module in ("c", "pure"):
        scratch = tmp_path / module
        scratch.mkdir()
        ctx = {"scratch": str(scratch), "path": str(scratch / "resources.img"), **context}
        runs[module] = run(module, scenario, ctx, env)
    compare(scenario, runs["c"], runs["pure"])
    return runs


# --------------------------------------------------------------------------
# Daemons


@contextmanager
def any_daemon(kind: str, tmp: Path) -> Iterator[Daemon]:
    if kind == "leased":
        with leased_daemon(tmp, "leased", "host1") as daemon:
            yield daemon
    else:
        with sanlock_daemon(tmp, "sanlock", "host1") as daemon:
            yield daemon


class Joined:
    def __init__(self, daemon: Daemon, ls_path: Path) -> None:
        self.daemon = daemon
        self.ls_path = ls_path


def _hosts_ready(client: Client) -> bool:
    try:
        return bool(client.get_hosts(b"LS"))
    except SanlockError:
        return False


@pytest.fixture(scope="module", params=["leased", pytest.param("sanlock", marks=pytest.mark.sanlock)])
def joined(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joined]:
    """A daemon of each kind with ``LS`` joined as host 1 and its first host scan done."""
    tmp = tmp_path_factory.mktemp(f"pure-sanlock-{request.param}")
    with any_daemon(request.param, tmp) as daemon:
        client = daemon.client(timeout=60)
        ls_path = tmp / "ls.img"
        with ls_path.open("wb") as f:
            f.truncate(MiB)
        client.write_lockspace(b"LS", ls_path, 0, io_timeout=1)
        client.add_lockspace(b"LS", 1, ls_path, 0, io_timeout=1)
        wait_for(lambda: _hosts_ready(client), 20, "get_hosts answers")
        yield Joined(daemon, ls_path)


# --------------------------------------------------------------------------
# Scenarios without a daemon


def test_constants_and_exception(tmp_path: Path) -> None:
    run_both("constants", tmp_path, dict(os.environ))


def test_get_alignment(tmp_path: Path) -> None:
    run_both("alignment", tmp_path, dict(os.environ))


def test_no_daemon(tmp_path: Path) -> None:
    (tmp_path / "empty-run").mkdir()
    run_both("no_daemon", tmp_path, {**os.environ, "SANLOCK_RUN_DIR": str(tmp_path / "empty-run")})


# --------------------------------------------------------------------------
# Scenarios against both daemons


@pytest.mark.parametrize("scenario", ["areas", "leases", "events", "lockspace", "nonblocking_fd"])
def test_same_outcomes(scenario: str, joined: Joined, tmp_path: Path) -> None:
    run_both(scenario, tmp_path, joined.daemon.env, ls_path=str(joined.ls_path))


def test_threads_sharing_one_slkfd_take_turns(joined: Joined, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """leased.sanlock, unlike libsanlock, serialises calls on one fd: threads may share a registration.

    Eight threads call inquire on one registered fd while another acquires
    and releases a lease on it: every call must get its own reply (without
    the per-fd lock, replies cross and calls fail or return another call's
    answer), and the registration must still work afterwards.
    """
    import leased.sanlock as pure

    monkeypatch.setenv("SANLOCK_RUN_DIR", str(joined.daemon.run_dir))
    disk = [(str(tmp_path / "r.img"), 0)]
    with (tmp_path / "r.img").open("wb") as f:
        f.truncate(MiB)
    pure.write_resource(b"LS", b"T", disk)
    fd = pure.register()
    try:
        seen: list[list[bytes]] = []
        failures: list[BaseException] = []

        def inquirer() -> None:
            try:
                for _ in range(40):
                    seen.append([held["resource"] for held in pure.inquire(slkfd=fd)])
            except BaseException as exc:
                failures.append(exc)

        def cycler() -> None:
            try:
                for _ in range(10):
                    pure.acquire(b"LS", b"T", disk, slkfd=fd)
                    pure.release(b"LS", b"T", disk, slkfd=fd)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=inquirer) for _ in range(8)] + [threading.Thread(target=cycler)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures, failures
        assert len(seen) == 8 * 40
        assert all(result in ([], [b"T"]) for result in seen), seen
        assert pure.inquire(slkfd=fd) == []
        pure.acquire(b"LS", b"T", disk, slkfd=fd)
        assert [held["resource"] for held in pure.inquire(slkfd=fd)] == [b"T"]
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def second_host(joined: Joined, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A leased daemon joined to ``LS`` as host 2, seen live by host 1, to set events for host 1."""
    tmp = tmp_path_factory.mktemp("pure-sanlock-host2")
    with leased_daemon(tmp, "leased2", "host2") as daemon:
        client = daemon.client(timeout=60)
        client.add_lockspace(b"LS", 2, joined.ls_path, 0, io_timeout=1)
        host1 = joined.daemon.client(timeout=10)
        wait_for(
            lambda: any(host.host_id == 2 and host.state == HostState.LIVE for host in host1.get_hosts(b"LS")),
            30,
            "host 1 sees host 2 live",
        )
        yield daemon
        client.rem_lockspace(b"LS", 2, joined.ls_path, 0)


def test_delivered_events(joined: Joined, second_host: Daemon, tmp_path: Path) -> None:
    """get_event parses what the daemon delivers (event_cb records) as the binding does."""
    program = (
        "import sys; from leased.client import Client; "
        "Client(sys.argv[1], timeout=30).set_event(b'LS', 1, 0, 5, int(sys.argv[2]), flags=1 | 8)"
    )
    argv = [sys.executable, "-c", program, str(second_host.run_dir)]
    for data, module in enumerate(("c", "pure"), start=40):
        (tmp_path / module).mkdir()
        context = {"scratch": str(tmp_path / module), "repo": str(REPO), "set_event_argv": argv, "data": data}
        outcome = run(module, "delivered_events", context, joined.daemon.env)
        if module == "c":
            c_run = outcome
    compare("delivered_events", c_run, outcome)


def test_imports_without_trio() -> None:
    """An application that swaps python3-sanlock for leased.sanlock loads no trio (and no daemon code).

    Also checks that the module under test is this checkout's, not another installed copy.
    """
    program = "\n".join(
        [
            "import sys",
            "sys.modules['trio'] = None  # any import of trio now raises ImportError",
            "import leased.sanlock",
            "assert leased.sanlock.__file__.startswith(sys.argv[1]), leased.sanlock.__file__",
            "print(sorted(m for m in sys.modules if m.startswith('leased')))",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(REPO)], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    assert not {"leased.daemon", "leased.commands", "leased.storage", "leased.client.trio_shell"} & loaded


def test_every_known_difference_names_a_call_a_scenario_makes() -> None:
    """A row whose scenario or call label is gone would excuse nothing: the table keeps no dead rows."""
    for scenario, label in KNOWN_DIFFERENCES:
        assert scenario in sanlock_scenarios.SCENARIOS, scenario
        assert repr(label).strip("'") in inspect.getsource(sanlock_scenarios.SCENARIOS[scenario]), label
