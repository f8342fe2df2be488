"""``leased client <action>``: sanlock's client actions, options and output.

Scripts written for ``sanlock client ...`` parse its stdout; this prints the
same lines (wire spec §6.4, §6.5) and exits 0 when the daemon's result is 0,
1 otherwise, with one extra stderr line saying what failed.  It talks to
whatever daemon listens on ``$SANLOCK_RUN_DIR/sanlock.sock`` through
:mod:`leased.client`, so it works against leased and against sanlock.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from leased import direct
from leased.client import Client, SanlockError, StatusRecord
from leased.constants import MiB
from leased.errors import LeaseError, ResultCode, code_name
from leased.protocol import RES_SHARED, Resource, StateType, escape_path, format_resource

CLIENT_USAGE = """\
leased client <action> [options]   (actions and options as sanlock client's)

leased client status [-D] [-o p|s]
leased client gets [-h 0|1]
leased client host_status -s LOCKSPACE [-D]
leased client renewal -s LOCKSPACE
leased client log_dump
leased client shutdown [-f 0|1] [-w 0|1]
leased client init -s LOCKSPACE | -r RESOURCE [-z 0|1] [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC]
leased client read -s LOCKSPACE | -r RESOURCE
leased client add_lockspace -s LOCKSPACE [-o SEC]
leased client inq_lockspace -s LOCKSPACE
leased client rem_lockspace -s LOCKSPACE
leased client acquire -r RESOURCE -p <pid>
leased client convert -r RESOURCE -p <pid>
leased client release -r RESOURCE -p <pid>
leased client inquire -p <pid>
leased client request -r RESOURCE -f <force_mode>
leased client version

LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]
"""

ACTIONS = (
    "status",
    "gets",
    "host_status",
    "renewal",
    "log_dump",
    "shutdown",
    "init",
    "read",
    "add_lockspace",
    "inq_lockspace",
    "rem_lockspace",
    "acquire",
    "convert",
    "release",
    "inquire",
    "request",
    "version",
)

HOST_STATES = {1: "UNKNOWN", 2: "FREE", 3: "LIVE", 4: "FAIL", 5: "DEAD"}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leased client", add_help=False, usage=CLIENT_USAGE)
    parser.add_argument("action")
    parser.add_argument("-s", dest="lockspace")
    parser.add_argument("-r", dest="resource")
    parser.add_argument("-p", dest="pid", type=int, default=0)
    parser.add_argument("-D", dest="debug", action="store_true")
    parser.add_argument("-o", dest="o", default=None, help="status: p|s; add_lockspace/init: io_timeout")
    parser.add_argument("-h", dest="hosts", type=int, default=0)
    parser.add_argument("-f", dest="force", type=int, default=0)
    parser.add_argument("-w", dest="wait", type=int, default=0)
    parser.add_argument("-z", dest="clear", type=int, default=0)
    parser.add_argument("-Z", dest="sector_size", type=int, default=0)
    parser.add_argument("-A", dest="align", default="")
    return parser


def _say(line: str = "") -> None:
    print(line, flush=True)


def _text(name: bytes) -> str:
    return name.decode(errors="surrogateescape")


class _Done(Exception):
    def __init__(self, rc: int) -> None:
        self.rc = rc


def _result(label: str, call: Callable[[], object]) -> int:
    """Run ``call``; print ``<label> done <rc>``; return rc."""
    try:
        call()
        rc = 0
    except SanlockError as exc:
        rc = exc.rc
        print(f"leased: {exc}", file=sys.stderr, flush=True)
    _say(f"{label} done {rc}")
    return rc


def _status(client: Client, opts: argparse.Namespace) -> int:
    records = client.status()
    lines_by_kind: dict[str, list[tuple[StatusRecord, str]]] = {"daemon": [], "p": [], "s": [], "r": []}
    for record in records:
        kind, line = _status_line(record)
        lines_by_kind[kind].append((record, line))

    def emit(record: StatusRecord, line: str) -> None:
        _say(line)
        if opts.debug:
            for pair in record.state.text.split():
                _say(f"    {pair}")

    for item in lines_by_kind["daemon"]:
        emit(*item)
    resources = lines_by_kind["r"]
    if opts.o == "p":
        holders = {r.state.data32 for r, _ in resources}
        for item in lines_by_kind["p"]:
            if item[0].state.data32 not in holders:
                emit(*item)
        for item in lines_by_kind["s"]:
            emit(*item)
        for item in lines_by_kind["p"]:
            if item[0].state.data32 in holders:
                emit(*item)
                for res in resources:
                    if res[0].state.data32 == item[0].state.data32:
                        emit(*res)
        return 0
    if opts.o == "s":
        # sanlock lists clients holding nothing first here
        holders = {r.state.data32 for r, _ in resources}
        lines_by_kind["p"].sort(key=lambda item: item[0].state.data32 in holders)
    for item in lines_by_kind["p"]:
        emit(*item)
    if opts.o == "s":
        for item in lines_by_kind["s"]:
            emit(*item)
            name = item[0].state.name
            for res in resources:
                if res[0].resource is not None and res[0].resource.lockspace == name:
                    emit(*res)
        return 0
    for item in lines_by_kind["s"] + resources:
        emit(*item)
    return 0


def _status_line(record: StatusRecord) -> tuple[str, str]:
    state = record.state
    fields = record.fields
    if record.type == StateType.DAEMON:
        return "daemon", f"daemon {_text(state.name)}"
    if record.type == StateType.CLIENT:
        return "p", f"p {state.data32} {_text(state.name)}"
    suffix = {"add": " ADD", "rem": " REM", "orphan": " ORPHAN"}.get(fields.get("list", ""), "")
    if record.type == StateType.LOCKSPACE and record.lockspace is not None:
        ls = record.lockspace
        return "s", f"s {_text(ls.name)}:{ls.host_id}:{escape_path(ls.disk.path)}:{ls.disk.offset}{suffix}"
    if record.type == StateType.RESOURCE and record.resource is not None:
        res = record.resource
        disks = "".join(f":{escape_path(d.path)}:{d.offset}" for d in res.disks)
        mode = "SH" if res.flags & RES_SHARED else str(state.data64)
        return "r", f"r {_text(res.lockspace)}:{_text(res.name)}{disks}:{mode} p {state.data32}{suffix}"
    return "p", f"? {state.type}"


def _lockspace(opts: argparse.Namespace) -> direct.LockspaceArg:
    if not opts.lockspace:
        raise UsageError(f"{opts.action} needs -s LOCKSPACE")
    return direct.parse_lockspace(opts.lockspace)


def _resource(opts: argparse.Namespace) -> direct.ResourceArg:
    if not opts.resource:
        raise UsageError(f"{opts.action} needs -r RESOURCE")
    return direct.parse_resource(opts.resource)


def _pid(opts: argparse.Namespace) -> int:
    if opts.pid <= 0:
        raise UsageError(f"{opts.action} needs -p <pid>")
    pid: int = opts.pid
    return pid


def _io_timeout(opts: argparse.Namespace) -> int:
    try:
        return int(opts.o) if opts.o is not None else 0
    except ValueError:
        raise UsageError(f"-o {opts.o}: not a number") from None


def _run(client: Client, opts: argparse.Namespace) -> int:
    action = opts.action
    if action == "status":
        return _status(client, opts)
    if action == "version":
        info = client.version()
        _say("client version 3.8.5 (0x03080500)")
        _say(f"daemon version {info.version} (0x{info.version_num:08x})")
        _say("client socket protocol 0.1")
        _say(f"daemon socket protocol {info.proto >> 16}.{info.proto & 0xFFFF}")
        return 0
    if action == "gets":
        for joined in client.get_lockspaces():
            state = "ADD " if joined.adding else "REM " if joined.removing else ""
            _say(f"s {_text(joined.name)}:{joined.host_id}:{joined.path}:{joined.offset} {state}")
            if opts.hosts and joined.joined:
                for host in client.get_hosts(joined.name):
                    state_name = HOST_STATES.get(host.flags & 0xF, str(host.flags & 0xF))
                    _say(f"h {host.host_id} gen {host.generation} timestamp {host.timestamp} {state_name}")
        return 0
    if action == "host_status":
        for record in client.host_status(_lockspace(opts).name.encode()):
            _say(f"{record.data32} timestamp {record.data64}")
            if opts.debug:
                for pair in record.text.split():
                    _say(f"    {pair}")
        return 0
    if action == "renewal":
        _, records = client.renewal(_lockspace(opts).name.encode())
        for record in records:
            _say(record.text)
        return 0
    if action == "log_dump":
        sys.stdout.write(client.log_dump() + "\n")
        return 0
    if action == "shutdown":
        _say(f"shutdown force {opts.force} wait {opts.wait}")
        return _result("shutdown", lambda: client.shutdown(force=bool(opts.force), wait=bool(opts.wait)))
    if action == "init":
        return _init(client, opts)
    if action == "read":
        if opts.lockspace:
            ls = _lockspace(opts)
            on_disk = client.read_lockspace(ls.path, ls.offset)
            _say(f"s {_text(on_disk.name)}:{ls.host_id or 1}:{escape_path(ls.path)}:{ls.offset}")
        else:
            res = _resource(opts)
            read = client.read_resource(res.path, res.offset)
            _say(f"r {_text(read.lockspace)}:{_text(read.name)}:{read.lver}")
        return 0
    if action in ("add_lockspace", "inq_lockspace", "rem_lockspace"):
        ls = _lockspace(opts)
        args = (ls.name.encode(), ls.host_id, ls.path, ls.offset)
        if action == "add_lockspace":
            io_timeout = _io_timeout(opts)
            label = f"add_lockspace_timeout {io_timeout}" if io_timeout else "add_lockspace"
            _say(label)
            return _result(label.split()[0], lambda: client.add_lockspace(*args, io_timeout=io_timeout))
        _say(action)
        if action == "inq_lockspace":

            def inq() -> None:
                found = client.inq_lockspace(*args)
                if found is None:
                    raise SanlockError(ResultCode.EINPROGRESS, "inq_lockspace: being added or removed", "inq_lockspace")
                if not found:
                    raise SanlockError(ResultCode.ENOENT, "inq_lockspace: not found", "inq_lockspace")

            return _result(action, inq)
        return _result(action, lambda: client.rem_lockspace(*args))
    if action in ("acquire", "convert", "release"):
        res, pid = _resource(opts), _pid(opts)
        names = (res.lockspace.encode(), res.name.encode())
        _say(f"{action} pid {pid}")
        if action == "acquire":
            disks = [(res.path, res.offset)]
            lver = res.lver or None
            return _result(action, lambda: client.acquire(*names, disks, pid=pid, shared=res.shared, lver=lver))
        if action == "convert":
            return _result(action, lambda: client.convert(*names, res.shared, pid=pid))
        return _result(action, lambda: client.release(*names, pid=pid))
    if action == "inquire":
        pid = _pid(opts)
        _say(f"inquire pid {pid}")
        try:
            held = client.inquire(pid=pid)
        except SanlockError as exc:
            _say(f"inquire done {exc.rc} res_count 0")
            print(f"leased: {exc}", file=sys.stderr, flush=True)
            return exc.rc
        _say(f"inquire done 0 res_count {len(held)}")
        state = " ".join(
            format_resource(
                Resource(lease.lockspace, lease.resource, disks=lease.disks), None if lease.shared else lease.lver
            )
            for lease in held
        )
        _say(f'"{state}"')
        return 0
    if action == "request":
        res = _resource(opts)
        _say("request")
        disks = [(res.path, res.offset)]
        return _result(
            "request",
            lambda: client.request(res.lockspace.encode(), res.name.encode(), disks, opts.force, lver=res.lver or None),
        )
    raise UsageError(f'client action "{action}" is unknown')


def _init(client: Client, opts: argparse.Namespace) -> int:
    align = direct.parse_align(opts.align) or MiB
    sector = opts.sector_size or 512
    _say("init")
    if opts.lockspace:
        ls = _lockspace(opts)
        io_timeout = _io_timeout(opts)
        return _result(
            "init",
            lambda: client.write_lockspace(
                ls.name.encode(), ls.path, ls.offset, io_timeout=io_timeout, align=align, sector=sector
            ),
        )
    res = _resource(opts)
    return _result(
        "init",
        lambda: client.write_resource(
            res.lockspace.encode(),
            res.name.encode(),
            [(res.path, res.offset)],
            clear=bool(opts.clear),
            align=align,
            sector=sector,
        ),
    )


def run_client(argv: Sequence[str]) -> int:
    if not argv:
        sys.stdout.write(CLIENT_USAGE)
        return 1
    try:
        opts = _parser().parse_args(argv)
        if opts.action not in ACTIONS:
            _say(f'client action "{opts.action}" is unknown')
            return 1
        rc = _run(Client(), opts)
    except UsageError as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    except SanlockError as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    except LeaseError as exc:
        print(f"leased: {exc.detail} ({exc.rc} {code_name(exc.rc)})", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"leased: cannot reach the daemon: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if rc == 0 else 1
