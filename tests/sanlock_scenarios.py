"""Scenarios that drive a python-sanlock module, one process per run, for tests/test_pure_sanlock.py.

Run as ``PYTHON sanlock_scenarios.py MODULE SCENARIO CONTEXT_JSON`` where
MODULE is ``c`` (Debian's python3-sanlock, importable only by
/usr/bin/python3) or ``pure`` (``leased.sanlock``, importable by the venv's
python).  It prints one JSON list: for every call, ``[label, kind, text]``
where kind is ``ok`` (text: the ``repr`` of the result) or the exception's
class name (text: the ``repr`` of its ``args``).  Paths from the context are
replaced by ``<P>``, ``<LS>`` and ``<S>`` so that runs on different files
compare equal; values that change from run to run (timestamps, generations,
fd numbers) are reduced to what a test can rely on.

Standard library only: the C binding's interpreter has no leased
dependencies.  Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MiB = 1 << 20


class Recorder:
    def __init__(self, module: Any, context: dict[str, Any]) -> None:
        self.module = module
        self.context = context
        self.outcomes: list[list[str]] = []
        self._labels: set[str] = set()

    def _text(self, value: object) -> str:
        text = repr(value)
        for key, mark in (("path", "<P>"), ("ls_path", "<LS>"), ("scratch", "<S>")):
            if self.context.get(key):
                text = text.replace(self.context[key], mark)
        return text

    def call(
        self, label: str, name: str, *args: Any, show: Callable[[Any], object] | None = None, **kwargs: Any
    ) -> Any:
        """Call ``module.<name>``, record the outcome under ``label``; the result (or None on an exception)."""
        assert label not in self._labels, label
        self._labels.add(label)
        try:
            result = getattr(self.module, name)(*args, **kwargs)
        except Exception as exc:  # every outcome is recorded
            self.outcomes.append([label, type(exc).__name__, self._text(exc.args)])
            return None
        self.outcomes.append([label, "ok", self._text(show(result) if show else result)])
        return result

    def note(self, label: str, value: object) -> None:
        assert label not in self._labels, label
        self._labels.add(label)
        self.outcomes.append([label, "ok", self._text(value)])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def hosts_view(hosts: Any) -> object:
    """get_hosts/read_resource_owners with the volatile numbers reduced to facts."""
    if not isinstance(hosts, list):
        return hosts
    return [
        {
            **host,
            "generation": "gen>0" if host["generation"] > 0 else 0,
            "timestamp": "ts>0" if host["timestamp"] > 0 else 0,
        }
        for host in hosts
    ]


def fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def is_fd(value: object) -> object:
    return isinstance(value, int) and value >= 0


# --------------------------------------------------------------------------
# Scenarios: each gets the recorder, the module and the context


def constants(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    # The C module's public names are what dir() shows; leased.sanlock's
    # dir() also has its imports and typing helpers, its __all__ is the API.
    names = getattr(sanlock, "__all__", None) or [name for name in dir(sanlock) if not name.startswith("_")]
    r.note("public names", sorted(names))
    r.note("all present", all(hasattr(sanlock, name) for name in names))
    r.note(
        "values",
        {name: getattr(sanlock, name) for name in sorted(names) if isinstance(getattr(sanlock, name), (int, tuple))},
    )
    exc_type = sanlock.SanlockException
    r.note("exception bases", [cls.__name__ for cls in exc_type.__mro__])
    r.note("errno is a property", isinstance(vars(exc_type).get("errno"), property))
    exc = exc_type(-243, "Sanlock resource not acquired", "Lease is held by another host")
    r.note("exception", [exc.errno, exc.args, str(exc), isinstance(exc, Exception)])
    functions = [name for name in sorted(names) if callable(getattr(sanlock, name)) and name != "SanlockException"]
    # As help() shows them; trailing blanks (two lines of the C inquire's) are not content.
    docs = {name: inspect.cleandoc(getattr(sanlock, name).__doc__) for name in functions}
    r.note("docstrings", {name: "\n".join(line.rstrip() for line in doc.splitlines()) for name, doc in docs.items()})


def alignment(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    scratch = ctx["scratch"]
    path = os.path.join(scratch, "file.img")
    with open(path, "wb") as f:
        f.truncate(MiB)
    r.call("file", "get_alignment", path)
    r.call("bytes path", "get_alignment", path.encode())
    r.call("missing", "get_alignment", os.path.join(scratch, "missing"))
    r.call("directory", "get_alignment", scratch)
    r.call("int path", "get_alignment", 7)


def no_daemon(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    r.call("register", "register")
    r.call("get_lockspaces", "get_lockspaces")
    r.call("add_lockspace", "add_lockspace", b"LS", 1, "/nonexistent", 0)
    r.call("inquire by pid", "inquire", pid=1)
    r.call("acquire by pid", "acquire", b"LS", b"R", [("/nonexistent", 0)], pid=1)
    r.call("reg_event", "reg_event", b"LS")


def areas(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    scratch = ctx["scratch"]
    path = os.path.join(scratch, "areas.img")
    with open(path, "wb") as f:
        f.truncate(12 * MiB)
    zeros = os.path.join(scratch, "zeros.img")
    with open(zeros, "wb") as f:
        f.truncate(MiB)
    missing = os.path.join(scratch, "missing.img")

    r.call("write_lockspace", "write_lockspace", b"LX", path, 0, iotimeout=7)
    r.call("read_lockspace", "read_lockspace", path)
    r.call("read_lockspace offset kw", "read_lockspace", path, offset=0, align=1048576, sector=512)
    r.call("write_lockspace str name", "write_lockspace", "LX", path)
    r.call("write_lockspace bad align", "write_lockspace", b"LX", path, align=3)
    r.call("write_lockspace bad sector", "write_lockspace", b"LX", path, sector=3)
    r.call("write_lockspace negative offset", "write_lockspace", b"LX", path, offset=-1)
    r.call("write_lockspace missing", "write_lockspace", b"LX", missing)
    r.call("read_lockspace missing", "read_lockspace", missing)
    r.call("read_lockspace zeros", "read_lockspace", zeros)
    r.call("read_lockspace bytes path", "read_lockspace", path.encode())

    disks = [(path, MiB)]
    r.call("write_resource", "write_resource", b"LX", b"RX", disks)
    r.call("read_resource", "read_resource", path, MiB)
    r.call("read_resource_owners", "read_resource_owners", b"LX", b"RX", disks)
    r.call("write_resource max/num hosts", "write_resource", b"LX", b"RY", [(path, 2 * MiB)], 3, num_hosts=7)
    r.call("read_resource RY", "read_resource", path, offset=2 * MiB)
    r.call("write_resource tuple disks", "write_resource", b"LX", b"RX", tuple(disks))
    r.call("write_resource bare path", "write_resource", b"LX", b"RX", [path])
    r.call("write_resource short tuple", "write_resource", b"LX", b"RX", [(path,)])
    r.call("write_resource str offset", "write_resource", b"LX", b"RX", [(path, "0")])
    r.call("write_resource long path", "write_resource", b"LX", b"RX", [("/" + "x" * 1100, 0)])
    r.call("write_resource no disks", "write_resource", b"LX", b"RX", [])
    r.call("write_resource five disks", "write_resource", b"LX", b"RX", disks * 5)
    r.call("write_resource str resource", "write_resource", b"LX", "RX", disks)
    r.call("write_resource missing", "write_resource", b"LX", b"RX", [(missing, 0)])
    r.call("write_resource bad align", "write_resource", b"LX", b"RX", disks, align=1)
    r.call("read_resource zeros", "read_resource", zeros, 0)
    r.call("read_resource_owners zeros", "read_resource_owners", b"LX", b"RX", [(zeros, 0)])
    r.call("read_resource_owners no disks", "read_resource_owners", b"LX", b"RX", [])
    r.call("write_resource 4K 8M", "write_resource", b"LX", b"R4", [(path, 8 * MiB)], align=8 * MiB, sector=4096)
    r.call("read_resource 4K 8M", "read_resource", path, 8 * MiB, align=8 * MiB, sector=4096)
    r.call("write_resource clear", "write_resource", b"LX", b"RX", disks, clear=True)
    r.call("read_resource cleared", "read_resource", path, MiB)


def lockspace(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    path = os.path.join(ctx["scratch"], "lx.img")
    with open(path, "wb") as f:
        f.truncate(MiB)
    args = (b"LX", 1, path, 0)
    r.call("write_lockspace", "write_lockspace", b"LX", path, iotimeout=1)
    r.call("inq before", "inq_lockspace", *args)
    r.call("add", "add_lockspace", *args, iotimeout=1)
    r.call("inq joined", "inq_lockspace", *args)
    r.call("inq host 0", "inq_lockspace", b"LX", 0, path)
    r.call("inq other name", "inq_lockspace", b"NOPE", 1, path, 0)
    r.call("get_lockspaces", "get_lockspaces", show=lambda ls: sorted(ls, key=lambda x: x["lockspace"]))

    def hosts_ready() -> Any:
        try:
            return sanlock.get_hosts(b"LX") or None
        except sanlock.SanlockException as exc:
            if exc.errno != 11:  # EAGAIN until the first scan of other hosts is done
                raise
            return None

    wait_for(hosts_ready, 20, "get_hosts answers")
    r.call("get_hosts", "get_hosts", b"LX", show=hosts_view)
    r.call("get_hosts host 1", "get_hosts", b"LX", 1, show=hosts_view)
    r.call("get_hosts host 7", "get_hosts", b"LX", host_id=7, show=hosts_view)
    r.call("get_hosts unknown", "get_hosts", b"NOPE")
    r.call("add again", "add_lockspace", *args, iotimeout=1)
    r.call("add other host id", "add_lockspace", b"LX", 2, path, 0, 1)
    r.call("add host 0", "add_lockspace", b"LY", 0, path, 0)
    r.call("rem unknown", "rem_lockspace", b"NOPE", 1, path)
    r.call("rem", "rem_lockspace", *args)
    r.call("inq removed", "inq_lockspace", *args)

    r.call("add async", "add_lockspace", *args, iotimeout=1, wait=False)
    r.call("inq adding", "inq_lockspace", *args)
    r.call("get_lockspaces adding", "get_lockspaces", show=lambda ls: [x for x in ls if x["lockspace"] == b"LX"])
    r.call("add while adding", "add_lockspace", *args, 1, False)
    r.call("inq wait", "inq_lockspace", *args, wait=True)
    r.call("rem async unused", "rem_lockspace", *args, wait=False, unused=True)
    wait_for(lambda: sanlock.inq_lockspace(*args) is False, 20, "async removal done")
    r.call("inq after async removal", "inq_lockspace", *args)


def leases(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    path, ls_path = ctx["path"], ctx["ls_path"]
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    names = [b"R1", b"R2", b"R3", b"R4"]
    disks = {name: [(path, i * MiB)] for i, name in enumerate(names)}
    for name in names:
        r.call(f"write_resource {name!r}", "write_resource", b"LS", name, disks[name])
    d1, d2, d3, d4 = (disks[name] for name in names)
    me, parent = os.getpid(), os.getppid()

    fd = r.call("register", "register", show=is_fd)
    r.note("register fd", {"inheritable": os.get_inheritable(fd), "blocking": os.get_blocking(fd)})
    r.call("acquire", "acquire", b"LS", b"R1", d1, slkfd=fd)
    r.call("inquire slkfd", "inquire", slkfd=fd)
    r.call("inquire pid", "inquire", pid=me)
    r.call("acquire again", "acquire", b"LS", b"R1", d1, slkfd=fd)
    r.call("acquire for own pid", "acquire", b"LS", b"R1", d1, pid=me)
    r.call("read_resource_owners held", "read_resource_owners", b"LS", b"R1", d1, show=hosts_view)
    r.call("read_resource held", "read_resource", path, 0)
    r.call("release", "release", b"LS", b"R1", d1, slkfd=fd)
    r.call("inquire empty", "inquire", slkfd=fd)
    r.call("release not held", "release", b"LS", b"R1", d1, slkfd=fd)
    r.call("release unregistered", "release", b"LS", b"R1", d1)
    r.call("read_resource_owners free", "read_resource_owners", b"LS", b"R1", d1)

    r.call("acquire neither", "acquire", b"LS", b"R1", d1)
    r.call("acquire both", "acquire", b"LS", b"R1", d1, slkfd=fd, pid=-5)
    r.call("release both", "release", b"LS", b"R1", d1, slkfd=fd, pid=12345)
    r.call("acquire by pid", "acquire", b"LS", b"R1", d1, pid=me)
    r.call("inquire by pid", "inquire", pid=me)
    r.call("release by pid", "release", b"LS", b"R1", d1, pid=me)
    r.call("acquire unregistered pid", "acquire", b"LS", b"R1", d1, pid=parent)
    r.call("inquire unregistered pid", "inquire", pid=parent)
    r.call("inquire negative pid", "inquire", pid=-5)
    r.call("inquire negative fd", "inquire", slkfd=-5)
    r.call("inquire neither", "inquire")
    r.call("inquire closed fd", "inquire", slkfd=999)
    with open(path, "rb") as not_a_socket:
        r.call("inquire file fd", "inquire", slkfd=not_a_socket.fileno())
        r.call("acquire file fd", "acquire", b"LS", b"R1", d1, slkfd=not_a_socket.fileno())
        r.call("killpath file fd", "killpath", "/bin/true", [], slkfd=not_a_socket.fileno())

    r.call("acquire unjoined", "acquire", b"NOPE", b"R1", d1, slkfd=fd)
    r.call("acquire uninitialised", "acquire", b"LS", b"RZ", [(path, 6 * MiB)], slkfd=fd)
    r.call("acquire wrong version", "acquire", b"LS", b"R2", d2, slkfd=fd, version=5)
    r.call("acquire version 0", "acquire", b"LS", b"R2", d2, slkfd=fd, version=0)
    r.call("inquire version", "inquire", slkfd=fd)
    r.call("release R2", "release", b"LS", b"R2", d2, slkfd=fd)
    r.call("acquire version -1", "acquire", b"LS", b"R2", d2, slkfd=fd, version=-1)
    r.call("acquire version str", "acquire", b"LS", b"R2", d2, slkfd=fd, version="1")
    r.call("acquire no disks", "acquire", b"LS", b"R2", [], slkfd=fd)
    r.call("acquire five disks", "acquire", b"LS", b"R2", d2 * 5, slkfd=fd)
    r.call("acquire tuple disks", "acquire", b"LS", b"R2", tuple(d2), slkfd=fd)
    r.call("acquire str lockspace", "acquire", "LS", b"R2", d2, slkfd=fd)
    r.call("acquire long name", "acquire", b"L" * 60, b"R2", d2, slkfd=fd)
    r.call("acquire positional", "acquire", b"LS", b"R2", d2, fd, -1, True, False, None)
    r.call("inquire shared", "inquire", fd)
    r.call("acquire exclusive over local shared", "acquire", b"LS", b"R2", d2, pid=me)
    r.call("release shared", "release", b"LS", b"R2", d2, fd)

    r.call("request free", "request", b"LS", b"R3", d3)
    r.call("request version", "request", b"LS", b"R3", d3, action=sanlock.REQ_FORCE, version=1)
    r.call("request action 0", "request", b"LS", b"R3", d3, 0, 5)
    r.call("request unjoined", "request", b"NOPE", b"R3", d3)
    r.call("request no disks", "request", b"LS", b"R3", [])
    r.call("request five disks", "request", b"LS", b"R3", d3 * 5)
    r.call("request bad version", "request", b"LS", b"R3", d3, version="x")

    r.call("get_lvb not held", "get_lvb", b"LS", b"R4", d4, 16)
    r.call("set_lvb not held", "set_lvb", b"LS", b"R4", d4, b"x")
    r.call("get_lvb size 0", "get_lvb", b"LS", b"R4", d4, 0)
    r.call("get_lvb size 5000", "get_lvb", b"LS", b"R4", d4, 5000)
    r.call("get_lvb bare path", "get_lvb", b"LS", b"R4", [path], 1)
    r.call("set_lvb str data", "set_lvb", b"LS", b"R4", d4, "x")
    r.call("acquire lvb", "acquire", b"LS", b"R4", d4, slkfd=fd, lvb=True)
    r.call("get_lvb fresh", "get_lvb", b"LS", b"R4", d4, 16)
    r.call("set_lvb", "set_lvb", b"LS", b"R4", d4, b"hello")
    r.call("get_lvb 8", "get_lvb", b"LS", b"R4", d4, 8)
    r.call("get_lvb 4096", "get_lvb", b"LS", b"R4", d4, 4096, show=lambda b: (len(b), b.rstrip(b"\0")))
    r.call("set_lvb past the sector", "set_lvb", b"LS", b"R4", d4, b"x" * 600)
    r.call("set_lvb past 4096", "set_lvb", b"LS", b"R4", d4, b"x" * 5000)
    r.call("release lvb", "release", b"LS", b"R4", d4, slkfd=fd)
    r.call("acquire lvb again", "acquire", b"LS", b"R4", d4, slkfd=fd, lvb=True)
    r.call("get_lvb written", "get_lvb", b"LS", b"R4", d4, 5)
    r.call("release lvb again", "release", b"LS", b"R4", d4, slkfd=fd)
    r.call("acquire without lvb", "acquire", b"LS", b"R4", d4, slkfd=fd)
    r.call("set_lvb without lvb", "set_lvb", b"LS", b"R4", d4, b"x")
    r.call("release without lvb", "release", b"LS", b"R4", d4, slkfd=fd)

    r.call("killpath no fd", "killpath", "/bin/true", ["a b"])
    r.call("killpath", "killpath", "/bin/true", ["a b", "c\\d", b"e"], slkfd=fd)
    r.call("killpath args too long", "killpath", "/bin/true", ["a" * 200], slkfd=fd)
    r.call("killpath path too long", "killpath", "/bin/" + "t" * 200, [], slkfd=fd)
    r.call("killpath int arg", "killpath", "/bin/true", [1], slkfd=fd)
    r.call("killpath tuple args", "killpath", "/bin/true", ("a",), slkfd=fd)

    # Paths the inquire string escapes: a colon (\\:), a space (sanlock 3.8.5 fails INQUIRE with -ELIBSCN).
    for label, file_name in (("colon", "with:colon.img"), ("space", "with space.img")):
        odd = os.path.join(ctx["scratch"], file_name)
        with open(odd, "wb") as f:
            f.truncate(MiB)
        r.call(f"write_resource {label}", "write_resource", b"LS", b"RP", [(odd, 0)])
        r.call(f"acquire {label}", "acquire", b"LS", b"RP", [(odd, 0)], slkfd=fd)
        r.call(f"inquire {label}", "inquire", slkfd=fd)
        r.call(f"release {label}", "release", b"LS", b"RP", [(odd, 0)], slkfd=fd)

    # Closing the registered fd is the process exiting: its leases go.
    fd2 = r.call("register second", "register", show=is_fd)
    r.call("acquire on second", "acquire", b"LS", b"R3", d3, slkfd=fd2)
    os.close(fd2)
    wait_for(lambda: sanlock.read_resource_owners(b"LS", b"R3", d3) == [], 20, "release after close")
    r.call("owners after close", "read_resource_owners", b"LS", b"R3", d3)
    r.call("inquire at the end", "inquire", slkfd=fd)
    r.note("ls path seen", ls_path in repr(sanlock.get_lockspaces()))


def events(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    efd = r.call("reg_event", "reg_event", b"LS", show=is_fd)
    r.note("event fd", {"inheritable": os.get_inheritable(efd), "blocking": os.get_blocking(efd)})
    r.call("get_event none", "get_event", efd)
    r.call("set_event", "set_event", b"LS", 1, 0, 1, flags=sanlock.SETEV_CUR_GENERATION | sanlock.SETEV_REPLACE_EVENT)
    r.call("set_event replace", "set_event", b"LS", 1, 0, 3, 9, sanlock.SETEV_REPLACE_EVENT)
    r.call("set_event clear", "set_event", b"LS", 1, 0, 0, flags=sanlock.SETEV_CLEAR_EVENT)
    r.call("set_event host 0", "set_event", b"LS", 0, 0, 1)
    r.call("set_event unjoined", "set_event", b"NOPE", 1, 0, 1)
    r.call("set_event str name", "set_event", "LS", 1, 0, 1)
    r.call("reg_event unjoined", "reg_event", b"NOPE")
    r.call("reg_event keyword", "reg_event", lockspace=b"LS")
    r.call("end_event", "end_event", efd, b"LS")
    r.call("get_event after end", "get_event", efd)
    r.call("end_event again", "end_event", efd, b"LS")
    r.call("get_event bad fd", "get_event", 999)
    r.call("end_event bad fd", "end_event", 999, b"LS")
    one, other = socket.socketpair()
    with one, other:
        r.call("get_event socketpair empty", "get_event", one.fileno())
        other.send(b"x" * 10)
        r.call("get_event torn record", "get_event", one.fileno())
    not_a_socket = os.open(__file__, os.O_RDONLY)
    r.call("get_event file fd", "get_event", not_a_socket)
    r.call("end_event file fd", "end_event", not_a_socket, b"LS")
    r.note("end_event closed the file fd", not fd_open(not_a_socket))
    one, other = socket.socketpair()
    with other:
        r.call("end_event not an event fd", "end_event", one.detach(), b"LS")
        r.note("end mark", other.recv(16))
    one, other = socket.socketpair()
    with other:
        r.call("end_event empty name", "end_event", one.detach(), b"")
        r.note("end mark with empty name", other.recv(16))
    r.call("register with an argument", "register", 1)
    r.call("get_lockspaces with arguments", "get_lockspaces", 1, x=2, show=len)


def delivered_events(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    """An event host 2 sets for us arrives on the reg_event fd (host 2 sets it when we run its command)."""
    efd = r.call("reg_event", "reg_event", b"LS", show=is_fd)
    r.call("get_event before", "get_event", efd)
    env = {**os.environ, "PYTHONPATH": ctx["repo"]}
    subprocess.run([*ctx["set_event_argv"], str(ctx["data"])], env=env, check=True, timeout=60)
    # Host 1 may first deliver the event an earlier run had host 2 set (it is
    # still in host 2's delta lease): wait for the one this run set.
    seen: list[dict[str, int]] = []

    def arrived() -> list[dict[str, int]]:
        seen.extend(sanlock.get_event(efd))
        return [event for event in seen if event["data"] == ctx["data"]]

    events = wait_for(arrived, 30, "the event arrives")
    r.note(
        "events",
        [
            {
                **event,
                "generation": "gen>0" if event["generation"] > 0 else 0,
                "from_generation": "gen>0" if event["from_generation"] > 0 else 0,
                "data": "this run's",
            }
            for event in events[:1]
        ],
    )
    r.call("get_event drained", "get_event", efd)
    r.call("end_event", "end_event", efd, b"LS")


def nonblocking_fd(r: Recorder, sanlock: Any, ctx: dict[str, Any]) -> None:
    """A registered fd the program made non-blocking (an event loop's habit).

    libsanlock reads the reply with a plain recv, which fails with EAGAIN
    when the daemon has not answered yet: the binding reports -1 (EPERM) and
    the reply, left unread, answers the next call.  So this scenario ends
    here.
    """
    fd = sanlock.register()
    os.set_blocking(fd, False)
    r.call("inquire on a non-blocking fd", "inquire", slkfd=fd)
    r.note("still non-blocking", not os.get_blocking(fd))


SCENARIOS: dict[str, Callable[[Recorder, Any, dict[str, Any]], None]] = {
    "constants": constants,
    "alignment": alignment,
    "no_daemon": no_daemon,
    "areas": areas,
    "lockspace": lockspace,
    "leases": leases,
    "events": events,
    "delivered_events": delivered_events,
    "nonblocking_fd": nonblocking_fd,
}


def main() -> None:
    module_name, scenario, context = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sanlock = importlib.import_module("sanlock" if module_name == "c" else "leased.sanlock")
    recorder = Recorder(sanlock, context)
    try:
        SCENARIOS[scenario](recorder, sanlock, context)
    finally:
        print(json.dumps(recorder.outcomes))


if __name__ == "__main__":
    main()
