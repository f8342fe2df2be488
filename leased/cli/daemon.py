"""``leased daemon``: sanlock's daemon options, a configuration file, and the start.

This is the I/O edge of :mod:`leased.config`: it reads the config file
(``--config FILE``, else ``$LEASED_CONFIG``, else ``/etc/leased/leased.conf``
if it exists), the environment and argv, hands them to the pure resolver, and
turns the result into a :class:`~leased.state.DaemonConfig`, the log sinks and
the systemd notifier.  Every daemon option is also a config key (the table in
:data:`leased.config.KEYS`), so the ``--help`` text is generated from it and
cannot drift from what the parser accepts.

Bad input (an unknown key, a non-integer, an unreadable file, an unknown
user) is one ``leased: ...`` line on stderr and exit status 1 before anything
is bound or locked.
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

from leased import config
from leased.config import ConfigError, Settings

TYPE_CHECKING = False  # typing (and the re it imports) is 6 ms of the daemon's start, before it listens
if TYPE_CHECKING:  # the daemon's parts load once options are parsed: `--help` stays fast
    import argparse
    from typing import NoReturn

    from leased.faultpoints import FaultPoints
    from leased.listener import Claim


DEFAULT_RUN_DIR = "/run/sanlock"

_OTHER_OPTIONS = (
    ("-D", "log to stderr at info and up (leased never forks; sanlock's -D also means 'no fork')"),
    ("--config FILE", f"the configuration file (default ${config.CONFIG_ENV}, else {config.DEFAULT_CONFIG_PATH} "
     "if it exists)"),
    ("--show-config", "print the effective settings and where each came from, then exit"),
    ("--help", "this text"),
)  # fmt: skip


def _usage() -> str:
    import textwrap

    lines = [
        "leased daemon [options]   (sanlock daemon's options; each is also a leased.conf key)",
        "",
    ]

    def entry(flag: str, text: str) -> None:
        head = f"  {flag}"
        body = textwrap.wrap(text, 80 - 30)
        if len(head) > 28:
            lines.append(head)
            head = ""
        lines.append(f"{head:<30}{body[0]}")
        lines.extend(f"{'':<30}{more}" for more in body[1:])

    for flag, text in _OTHER_OPTIONS:
        entry(flag, text)
    for key in config.KEYS:
        if key.option:
            default = "" if key.default is None else f", default {key.default}"
            entry(f"{key.option} {key.metavar}", f"{key.help} [{key.name}{default}]")
    lines += [
        "",
        "Every key can also be set in the config file ('key = value' lines, '#' comments) or as",
        f"{config.ENV_PREFIX}<KEY> in the environment; the command line wins over the environment,",
        "which wins over the file.  The socket is $SANLOCK_RUN_DIR/sanlock.sock",
        f"(default {DEFAULT_RUN_DIR}/sanlock.sock).",
        "",
    ]
    return "\n".join(lines)


class UsageError(Exception):
    """Bad daemon options: one line, exit status 1."""


_FLAGS = {"-D": "foreground", "--show-config": "show_config", "--help": "help"}
"""The daemon's flags and where each is stored; with ``_VALUED`` the one table both option readers use."""
_VALUED = {"--config": "config_file", **{key.option: key.name for key in config.KEYS if key.option}}
"""The options that take a value, and where it is stored."""


def _parser() -> argparse.ArgumentParser:
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    parser = _Parser(prog="leased daemon", add_help=False)
    helps = {flag.split()[0]: text for flag, text in _OTHER_OPTIONS}
    helps.update((key.option, key.help) for key in config.KEYS if key.option)
    for flag, dest in _FLAGS.items():
        parser.add_argument(flag, dest=dest, action="store_true", help=helps[flag])
    for option, dest in _VALUED.items():
        parser.add_argument(option, dest=dest, default=None, help=helps[option])
    return parser


def _plain_options(argv: Sequence[str]) -> SimpleNamespace | None:
    """The options of an ``argv`` written in the plain forms, parsed without argparse; None for any other.

    argparse (with typing and ``re``, the rest of what this module no longer
    loads before listening) was 12 ms of the daemon's 34 ms from exec to
    listening, and sanlock's own daemon is listening in 3-9 ms.
    The plain forms are what service files and scripts write: a flag
    (``-D``, ``--show-config``, ``--help``) or an option followed by its value
    as the next argument (a value may be a negative integer: ``-L -1``).
    Anything else (``-w0``, ``--config=FILE``, an abbreviation, an unknown
    option, a missing value) returns None and goes to :func:`_parser`, with
    argparse's meaning and errors.  The result is what argparse would make
    of the same ``argv`` (a test holds them equal).
    """
    values: dict[str, object] = {dest: False for dest in _FLAGS.values()}
    values.update((dest, None) for dest in _VALUED.values())
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in _FLAGS:
            values[_FLAGS[arg]] = True
            continue
        dest = _VALUED.get(arg)
        if dest is None or not rest:
            return None
        value = rest.pop(0)
        if value.startswith("-") and not value[1:].isdecimal():
            return None
        values[dest] = value
    return SimpleNamespace(**values)


def _read_config(path_option: str | None, environ: Mapping[str, str]) -> tuple[str, str, str | None]:
    """(path, how it was chosen, text or None when the default file is absent)."""
    if path_option is not None:
        path, chosen = path_option, "command line --config"
    elif environ.get(config.CONFIG_ENV):
        path, chosen = environ[config.CONFIG_ENV], f"environment {config.CONFIG_ENV}"
    else:
        path, chosen = config.DEFAULT_CONFIG_PATH, "default"
    try:
        with open(path, encoding="utf-8") as f:
            return path, chosen, f.read()
    except FileNotFoundError:
        if chosen == "default":
            return path, chosen, None
        raise UsageError(f"config file {path} ({chosen}): no such file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file {path} is not UTF-8 text") from None


def _id_of(settings: Settings, name: str) -> int:
    """uname/gname to a number; the default 'sanlock' falls back to root when no such user/group exists."""
    kind = "user" if name == "uname" else "group"
    value = settings.text(name) or "sanlock"
    if value.isdigit():
        return int(value)
    try:
        return int(pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid)
    except KeyError:
        if settings.from_default(name):
            return 0
        raise UsageError(f"{name}: unknown {kind} {value!r} ({settings.values[name].origin})") from None


def _notes(settings: Settings) -> list[tuple[int, str]]:
    """Lines for the daemon's log once its sinks are up: what the settings do not do."""
    import logging  # here, not at the top: the daemon listens before it loads logging

    notes = [
        (
            logging.INFO,
            f"{key.name} = {setting.value} ({setting.origin}): accepted for sanlock.conf compatibility, "
            f"not applied: {key.help.removeprefix('accepted; ')}",
        )
        for key, setting in settings.ignored()
    ]
    if not settings.integer("use_watchdog"):
        notes.append(
            (
                logging.WARNING,
                "use_watchdog 0: no watchdog: if this daemon dies or hangs, its lease holders keep running "
                "while other hosts take their leases",
            )
        )
    return notes


def run(
    argv: Sequence[str], environ: Mapping[str, str] | None = None, *, faultpoints: FaultPoints | None = None
) -> int:
    """``leased daemon ...``: serve until shutdown; exit status 0, or 1 with one line on error.

    ``faultpoints`` arms allocation failures: only the test entry point
    ``leased.torture.armed_daemon`` passes one.
    """
    environ = os.environ if environ is None else environ
    try:
        opts = _plain_options(argv) or _parser().parse_args(argv)
        if opts.help:
            sys.stdout.write(_usage())
            return 0
        path, chosen, text = _read_config(opts.config_file, environ)
        given = [
            (key.name, getattr(opts, key.name), key.option)
            for key in config.KEYS
            if key.option and getattr(opts, key.name) is not None
        ]
        settings = config.resolve((path, text) if text is not None else None, environ, given)
        run_dir = environ.get("SANLOCK_RUN_DIR") or DEFAULT_RUN_DIR
        if opts.show_config:
            file_state = chosen if text is not None else f"{chosen}, not present"
            run_dir_origin = "environment SANLOCK_RUN_DIR" if environ.get("SANLOCK_RUN_DIR") else "default"
            extra = [("config", path, file_state), ("run_dir", run_dir, run_dir_origin)]
            sys.stdout.write("\n".join(config.show(settings, extra)) + "\n")
            return 0
        uid, gid = _id_of(settings, "uname"), _id_of(settings, "gname")
    except (UsageError, ConfigError) as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    # Listen first: from here on a client that connects waits in the backlog while the rest loads.
    from leased.listener import ClaimError, claim

    try:
        claimed = claim(run_dir, uid, gid)
    except ClaimError as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        return _serve(opts.foreground, settings, environ, run_dir, uid, gid, claimed, faultpoints)
    finally:
        claimed.release()


def _serve(
    foreground: bool,
    settings: Settings,
    environ: Mapping[str, str],
    run_dir: str,
    uid: int,
    gid: int,
    claimed: Claim,
    faultpoints: FaultPoints | None,
) -> int:
    """Load the daemon's parts (--help, --show-config and a refused start never do) and serve on ``claimed``."""
    try:
        import trio

        from leased.daemon import DaemonError, run_daemon
        from leased.logsetup import LogSettings
        from leased.notify import Notifier
        from leased.state import DaemonConfig

        daemon_config = DaemonConfig(
            run_dir=run_dir,
            our_host_name=settings.text("our_host_name") or "",
            use_watchdog=bool(settings.integer("use_watchdog")),
            high_priority=settings.integer("high_priority"),
            mlock_level=settings.integer("mlock_level"),
            uid=uid,
            gid=gid,
            max_worker_threads=settings.integer("max_worker_threads"),
            kill_grace_seconds=settings.optional_integer("kill_grace_seconds"),
            quiet_fail=bool(settings.integer("quiet_fail")),
            debug_renew=bool(settings.integer("debug_renew")),
            renewal_history_size=settings.integer("renewal_history_size"),
            set_bitmap_seconds=settings.integer("set_bitmap_seconds"),
            io_timeout=settings.integer("io_timeout"),
            watchdog_fire_timeout=settings.integer("watchdog_fire_timeout"),
            max_clients=settings.integer("max_clients"),
            io_engine=settings.text("io_engine") or "auto",
            busy_poll=settings.integer("busy_poll"),
        )
        log_settings = LogSettings(
            foreground=foreground,
            logfile=settings.text("logfile") or "",
            logfile_priority=settings.integer("logfile_priority"),
            logfile_required=not settings.from_default("logfile"),
            logfile_use_utc=bool(settings.integer("logfile_use_utc")),
            syslog_priority=settings.integer("syslog_priority"),
            syslog_socket=settings.text("syslog_socket") or "",
            journal_stream=environ.get("JOURNAL_STREAM"),
        )
    except (UsageError, ConfigError) as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    notifier = Notifier.from_environ(environ)
    os.environ.pop("NOTIFY_SOCKET", None)  # killpath programs must not speak for us to systemd
    try:
        trio.run(
            lambda: run_daemon(
                daemon_config,
                log_settings,
                notifier=notifier,
                notes=_notes(settings),
                faultpoints=faultpoints,
                claim=claimed,
            )
        )
    except DaemonError as exc:
        print(f"leased: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
