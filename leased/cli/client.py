"""``leased client <action>``: sanlock's client actions, options and output.

Scripts written for ``sanlock client ...`` parse its stdout; this prints the
same lines (wire spec §6.4, §6.5) and exits 0 when the daemon's result is 0,
1 otherwise, with one extra stderr line saying what failed.  It talks to
whatever daemon listens on ``$SANLOCK_RUN_DIR/sanlock.sock`` through
:mod:`leased.client`, so it works against leased and against sanlock.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from leased.cli import specs
from leased.cli.options import Action, Option, UsageError, action_help, build_parser, command_help
from leased.client import Client, SanlockError, StatusRecord
from leased.constants import MiB
from leased.errors import LeaseError, ResultCode, code_name
from leased.locations import LockspaceArg, ResourceArg
from leased.protocol import RES_SHARED, Resource, StateType
from leased.text_forms import escape_path, format_resource

CLIENT_USAGE = """\
leased client <action> [options]   (actions and options as sanlock client's)

leased client status [-D] [-o p|s] [--json]
leased client gets [-h 0|1]
leased client host_status -s LOCKSPACE [-D]
leased client renewal -s LOCKSPACE
leased client log_dump
leased client metrics
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

CLIENT_SUMMARY = """\
Ask the daemon on $SANLOCK_RUN_DIR/sanlock.sock (default /run/sanlock) to act, as 'sanlock client'.
Works against leased and against sanlock; 'metrics' only against leased."""

CLIENT_TAIL = """\
LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]"""

OPTIONS = (
    Option("-s", "lockspace", "lockspace NAME:HOST_ID:PATH:OFFSET", "LOCKSPACE"),
    Option("-r", "resource", "resource LOCKSPACE:NAME:PATH:OFFSET[:LVER|:SH]", "RESOURCE"),
    Option("-p", "pid", "the registered process to act for", "PID", int, 0),
    Option("-D", "debug", "status, host_status: also print each record's key=value fields"),
    Option(
        "-o",
        "o",
        "status: p groups leases under processes, s under lockspaces; add_lockspace, init -s: io_timeout SEC",
        "p|s|SEC",
    ),
    Option("-h", "hosts", "gets: 1 also lists each lockspace's hosts and their states", "0|1", int, 0),
    Option(
        "-f",
        "force",
        "shutdown: 1 stops lease holders and leaves lockspaces first; "
        "request: 1 FORCE (kill the holder), 2 GRACEFUL (killpath, else SIGTERM)",
        "NUM",
        int,
        0,
    ),
    Option("-w", "wait", "shutdown: 1 waits until the daemon has exited", "0|1", int, 0),
    Option("-z", "clear", "init -r: 1 writes the lease cleared, so nobody can acquire it", "0|1", int, 0),
    Option("-Z", "sector_size", "init: sector size, with -A (default 512)", "512|4096", int, 0),
    Option("-A", "align", "init: align size (size of one area), with -Z (default 1M)", "1M|2M|4M|8M", str, ""),
    Option("--json", "json", "status: one JSON document (daemon, lockspaces, resources, clients) instead of lines"),
)

_LS, _RES = "-s LOCKSPACE", "-r RESOURCE"
ACTION_TABLE = (
    Action(
        "status",
        "[-D] [-o p|s] [--json]",
        "The daemon's state: clients, lockspaces and held leases, as 'sanlock client status'.\n"
        "--json prints the same as one JSON document: lockspaces with host id and renewal state,\n"
        "resources with mode, lver and holder pid, clients.",
        ("-D", "-o", "--json"),
    ),
    Action("gets", "[-h 0|1]", "The lockspaces the daemon has joined (with -h 1, their hosts).", ("-h",)),
    Action("host_status", f"{_LS} [-D]", "The hosts of a joined lockspace, with their last timestamps.", ("-s", "-D")),
    Action("renewal", _LS, "The recent renewals of our host id in a lockspace, with their durations.", ("-s",)),
    Action("log_dump", "", "The daemon's in-memory log."),
    Action(
        "metrics",
        "",
        "The daemon's numbers in Prometheus text format (leased only).\n"
        "A leased extension: a sanlock daemon does not answer it.  Feed node_exporter's textfile\n"
        "collector with e.g. 'leased client metrics > DIR/leased.prom.tmp && mv DIR/leased.prom.tmp\n"
        "DIR/leased.prom' from a timer.",
    ),
    Action(
        "shutdown",
        "[-f 0|1] [-w 0|1]",
        "Stop the daemon; without -f 1 it refuses while lockspaces are joined.",
        ("-f", "-w"),
    ),
    Action(
        "init",
        f"{_LS} | {_RES} [-z 0|1] [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC]",
        "Write a new lockspace or resource lease area through the daemon.",
        ("-s", "-r", "-z", "-Z", "-A", "-o"),
    ),
    Action("read", f"{_LS} | {_RES}", "Read a lockspace or resource leader through the daemon.", ("-s", "-r")),
    Action("add_lockspace", f"{_LS} [-o SEC]", "Join a lockspace with our host id (waits until joined).", ("-s", "-o")),
    Action("inq_lockspace", _LS, "Whether the daemon has joined the lockspace (0) or not.", ("-s",)),
    Action("rem_lockspace", _LS, "Leave a lockspace; processes holding leases in it are killed.", ("-s",)),
    Action("acquire", f"{_RES} -p PID", "Acquire a lease for a registered process (':SH' for shared).", ("-r", "-p")),
    Action(
        "convert", f"{_RES} -p PID", "Convert a held lease to the mode RESOURCE names (':SH' or not).", ("-r", "-p")
    ),
    Action("release", f"{_RES} -p PID", "Release a lease of a registered process.", ("-r", "-p")),
    Action("inquire", "-p PID", "The leases a registered process holds, as a state string.", ("-p",)),
    Action(
        "request",
        f"{_RES}:LVER -f NUM",
        "Ask the holder of a lease to give it up (-f 1 FORCE, 2 GRACEFUL).",
        ("-r", "-f"),
    ),
    Action("version", "", "The daemon's version and protocol."),
)
ACTIONS = tuple(action.name for action in ACTION_TABLE)

HOST_STATES = {1: "UNKNOWN", 2: "FREE", 3: "LIVE", 4: "FAIL", 5: "DEAD"}

METRICS_TIMEOUT = 10.0
"""Seconds to wait for a metrics reply: a sanlock daemon ignores the command and never answers."""


def _parser() -> argparse.ArgumentParser:
    return build_parser("leased client", CLIENT_USAGE, OPTIONS, (Option("action", "action", "what to do", "?"),))


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


def _number(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        try:
            return int(text, 16)
        except ValueError:
            return text


def _typed(fields: dict[str, str]) -> dict[str, int | str]:
    return {
        key: value if key in ("our_host_name", "version_str", "version_num", "list") else _number(value)
        for key, value in fields.items()
    }


_LOCKSPACE_STATES = {"spaces": "joined", "add": "adding", "rem": "removing"}


def status_document(records: Sequence[StatusRecord]) -> dict[str, object]:
    """``status --json``: the STATUS records as one document, for tools rather than eyes.

    The same records ``status`` prints, with the fields a tool asks about
    pulled out (lockspace state and renewal health, lease mode, lver and
    holder pid) and every key=value of the record kept under ``fields``.
    Works on a sanlock daemon's records too: they have the same texts.
    """
    document: dict[str, Any] = {"daemon": None, "clients": [], "lockspaces": [], "resources": []}
    for record in records:
        state, fields = record.state, _typed(record.fields)
        if record.type == StateType.DAEMON:
            document["daemon"] = {"name": _text(state.name), "fields": fields}
        elif record.type == StateType.CLIENT:
            pid = state.data32 if state.data32 < 1 << 31 else state.data32 - (1 << 32)
            document["clients"].append({"pid": pid, "name": _text(state.name), "fields": fields})
        elif record.type == StateType.LOCKSPACE and record.lockspace is not None:
            ls = record.lockspace
            listed = _LOCKSPACE_STATES.get(record.fields.get("list", ""), record.fields.get("list", ""))
            document["lockspaces"].append(
                {
                    "name": _text(ls.name),
                    "host_id": ls.host_id,
                    "path": ls.disk.path,
                    "offset": ls.disk.offset,
                    "state": "failed" if fields.get("space_dead") == 1 else listed,
                    "io_timeout": fields.get("io_timeout"),
                    "host_generation": fields.get("host_generation"),
                    "renewal_failed": bool(fields.get("renew_fail")),
                    "renewal_last_success": fields.get("renewal_last_success"),
                    "renewal_last_result": fields.get("renewal_last_result"),
                    "fields": fields,
                }
            )
        elif record.type == StateType.RESOURCE and record.resource is not None:
            res = record.resource
            pid = state.data32 if state.data32 < 1 << 31 else state.data32 - (1 << 32)
            shared = bool(res.flags & RES_SHARED)
            text_lver = fields.get("lver", 0)
            document["resources"].append(
                {
                    "lockspace": _text(res.lockspace),
                    "name": _text(res.name),
                    "disks": [{"path": d.path, "offset": d.offset} for d in res.disks],
                    "mode": "SH" if shared else "EX",
                    "lver": state.data64 or (text_lver if isinstance(text_lver, int) else 0),
                    "pid": pid,
                    "state": record.fields.get("list", "held"),
                    "fields": fields,
                }
            )
    return document


def _status(client: Client, opts: argparse.Namespace) -> int:
    records = client.status()
    if opts.json:
        _say(json.dumps(status_document(records), indent=2))
        return 0
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


def _lockspace(opts: argparse.Namespace) -> LockspaceArg:
    if not opts.lockspace:
        raise UsageError(f"{opts.action} needs -s LOCKSPACE")
    return specs.parse_lockspace_spec(opts.lockspace)


def _resource(opts: argparse.Namespace) -> ResourceArg:
    if not opts.resource:
        raise UsageError(f"{opts.action} needs -r RESOURCE")
    return specs.parse_resource_spec(opts.resource)


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
    if action == "metrics":
        try:
            sys.stdout.write(client.metrics())
        except SanlockError as exc:
            if exc.rc != ResultCode.ETIMEDOUT:
                raise
            raise SanlockError(
                exc.rc, f"no metrics reply in {METRICS_TIMEOUT:.0f} s: is the daemon sanlock, not leased?"
            ) from None
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
    align = specs.parse_align_option(opts.align) or MiB
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
        if opts.help and opts.action in (None, *ACTIONS):
            chosen = next((a for a in ACTION_TABLE if a.name == opts.action), None)
            if chosen is None:
                sys.stdout.write(command_help("leased client", CLIENT_SUMMARY, ACTION_TABLE, OPTIONS, CLIENT_TAIL))
            else:
                sys.stdout.write(action_help("leased client", chosen, OPTIONS, CLIENT_TAIL))
            return 0
        if opts.action not in ACTIONS:
            _say(f'client action "{opts.action}" is unknown')
            return 1
        rc = _run(Client(timeout=METRICS_TIMEOUT if opts.action == "metrics" else None), opts)
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
