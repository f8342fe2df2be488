"""The daemon's settings: one table of keys, three sources, one winner per key.

leased reads sanlock.conf's syntax so an operator can carry a
``/etc/sanlock/sanlock.conf`` over to ``/etc/leased/leased.conf``: one
``key = value`` per line, blank lines, and whole-line ``#`` comments (sanlock
has no trailing comments, so neither do we: ``our_host_name = a#b`` is the
name ``a#b``).  Then the environment (``LEASED_<KEY>``, e.g.
``LEASED_IO_TIMEOUT``), then the command line: later sources win, and every
effective value remembers where it came from so ``--show-config`` can say so.

Every key is in :data:`KEYS` with its default and the reason for that
default.  Keys of sanlock.conf that make no sense for leased (they tune
sanlock's AIO, its debug buffer, ...) are accepted and kept, so a copied
sanlock.conf does not stop the daemon, but they change nothing; the daemon
logs one line for each one set.  Any other key is an error: a typo such as
``io_timout`` must not silently leave a lockspace on its default.

Nothing here reads files, the environment or the clock: callers pass text and
mappings in, and a :class:`ConfigError` (one line, naming the source and the
line) comes out on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

TYPE_CHECKING = False  # typing (and the re it imports) is 6 ms of the daemon's start, before it listens
if TYPE_CHECKING:
    from typing import TypeAlias

Value: TypeAlias = int | str | tuple[str, ...]

DEFAULT_CONFIG_PATH = "/etc/leased/leased.conf"
CONFIG_ENV = "LEASED_CONFIG"

NOT_SETTINGS = frozenset({CONFIG_ENV})
"""LEASED_* variables that are not settings: where the file is."""
ENV_PREFIX = "LEASED_"
HOST_NAME_MAX = 48  # bytes of a host name in a delta lease (NAME_ID_SIZE)


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line naming where it came from."""


# -- value kinds -----------------------------------------------------------


def _integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
        if low is not None and value < low:
            raise ValueError(f"{value} is below {low}" if low else f"{value} is negative")
        if high is not None and value > high:
            raise ValueError(f"{value} is above {high}")
        return value

    return parse


def _flag(text: str) -> int:
    if text not in ("0", "1"):
        raise ValueError(f"must be 0 or 1, not {text!r}")
    return int(text)


_priority = _integer(-1, 7)  # syslog priority numbers: 3 err, 4 warning, 6 info, 7 debug; -1 off


def _text(text: str) -> str:
    if not text:
        raise ValueError("empty value")
    return text


def _choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"one of {', '.join(values)}, not {text!r}")
        return text

    return parse


def _host_name(text: str) -> str:
    if len(text.encode()) > HOST_NAME_MAX:
        raise ValueError(f"longer than {HOST_NAME_MAX} bytes (the delta lease field)")
    return _text(text)


class Key:
    """One setting: how to parse it, its default and why, and where it may be given.

    (A plain class, not a dataclass or a NamedTuple: ``leased daemon`` reads
    its settings before it listens, and a dataclass would load ``inspect``,
    a NamedTuple ``typing`` and the ``re`` it imports: milliseconds of a
    start that sanlock makes in 3-9 ms.)

    ``applied`` False: accepted for sanlock.conf compatibility and logged,
    but leased has nothing it tunes.  ``sanlock_conf``: whether sanlock
    3.8.5's sanlock.conf has this key (False: a leased extension).
    ``repeatable``: each line adds a value (sanlock's ``debug_cmd``) instead
    of replacing the last.
    """

    __slots__ = ("applied", "default", "help", "metavar", "name", "option", "parse", "repeatable", "sanlock_conf")

    def __init__(
        self,
        name: str,
        parse: Callable[[str], int | str],
        default: int | str | None,
        help: str,
        option: str | None = None,
        metavar: str = "NUM",
        applied: bool = True,
        sanlock_conf: bool = True,
        repeatable: bool = False,
    ) -> None:
        self.name = name
        self.parse = parse
        self.default = default
        self.help = help
        self.option = option
        self.metavar = metavar
        self.applied = applied
        self.sanlock_conf = sanlock_conf
        self.repeatable = repeatable

    def __repr__(self) -> str:
        return f"Key({self.name!r}, option={self.option!r}, default={self.default!r})"

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


KEYS: tuple[Key, ...] = (
    # -- keys leased applies (sanlock_conf=False: not in sanlock 3.8.5's sanlock.conf) --
    Key(
        "our_host_name",
        _host_name,
        None,
        "host name written in delta leases (default: a new <uuid4>.<nodename>)",
        option="-e",
        metavar="NAME",
    ),
    Key(
        "io_timeout",
        _integer(1, 255),
        10,
        "io_timeout of lockspaces added with io_timeout 0; stored in one byte on disk, so 1..255",
        option="-o",
        metavar="SEC",
        sanlock_conf=False,
    ),
    Key(
        "watchdog_fire_timeout",
        _integer(0),
        60,
        "W in host_dead_seconds = 8*io_timeout + W; 60 as sanlock 3.8.5 "
        "(W is not on disk: every host of a cluster with real sanlock hosts must keep 60)",
        option="--watchdog-fire-timeout",
        metavar="SEC",
        sanlock_conf=False,
    ),
    Key(
        "kill_grace_seconds",
        _integer(0),
        None,
        "seconds between SIGTERM and SIGKILL for lease holders of a failed "
        "lockspace (default 40; 15 or 0 when watchdog_fire_timeout < 60)",
        option="-g",
        metavar="SEC",
        sanlock_conf=False,
    ),
    Key(
        "use_watchdog",
        _flag,
        1,
        "arm wdmd (/run/wdmd/wdmd.sock) for every lockspace joined; without it a join fails (-203)",
        option="-w",
        metavar="0|1",
    ),
    Key(
        "quiet_fail",
        _flag,
        1,
        "log lease contention (busy, held by another host) at debug instead of error",
        option="-Q",
        metavar="0|1",
    ),
    Key("debug_renew", _flag, 0, "log a debug line for every renewal", option="-R", metavar="0|1"),
    Key(
        "renewal_history_size",
        _integer(0),
        180,
        "renewals kept per lockspace for 'client renewal'",
        option="-H",
        metavar="NUM",
    ),
    Key(
        "logfile_priority",
        _priority,
        4,
        "write log lines at this syslog priority and more urgent to the log "
        "file (3 err, 4 warning, 6 info, 7 debug, -1 none)",
        option="-L",
        metavar="PRI",
    ),
    Key("logfile_use_utc", _flag, 0, "UTC instead of local time in log file lines", metavar="0|1"),
    Key(
        "syslog_priority",
        _priority,
        3,
        "send log lines at this priority and more urgent to syslog (or the journal under systemd; -1 none)",
        option="-S",
        metavar="PRI",
    ),
    Key(
        "uname",
        _text,
        "sanlock",
        "user owning the socket (name or number; default 'sanlock' if that user exists, else root)",
        option="-U",
        metavar="USER",
    ),
    Key(
        "gname",
        _text,
        "sanlock",
        "group owning the socket (name or number; default 'sanlock' if that group exists, else root)",
        option="-G",
        metavar="GROUP",
    ),
    Key(
        "set_bitmap_seconds",
        _integer(0),
        0,
        "seconds a host id bit stays set in our delta lease bitmap (0: sanlock's default of the lockspace's timeouts)",
        option="-b",
        metavar="SEC",
        sanlock_conf=False,
    ),
    # -- leased's own keys -------------------------------------------------------
    Key(
        "logfile",
        _text,
        "/var/log/leased.log",
        "the log file (sanlock writes /var/log/sanlock.log)",
        option="--logfile",
        metavar="PATH",
        sanlock_conf=False,
    ),
    Key(
        "syslog_socket",
        _text,
        "/dev/log",
        "the syslog socket; not used when it does not exist or when stderr is the journal (JOURNAL_STREAM)",
        option="--syslog-socket",
        metavar="PATH",
        sanlock_conf=False,
    ),
    Key(
        "max_clients",
        _integer(0),
        0,
        "most client connections (and registered processes) at once; past it a new connection is "
        "logged and closed (0: (RLIMIT_NOFILE - 64) / 3, at least 8)",
        option="--max-clients",
        metavar="NUM",
        sanlock_conf=False,
    ),
    Key(
        "io_engine",
        _choice("auto", "threads"),
        "auto",
        "how lease I/O reaches the disk: auto is io_uring where the kernel has it (x86-64), "
        "else a worker thread per I/O; threads always uses worker threads",
        option="--io-engine",
        metavar="auto|threads",
        sanlock_conf=False,
    ),
    Key(
        "busy_poll",
        _integer(0, 1000),
        50,
        "microseconds the daemon keeps polling client connections without sleeping after it served "
        "some, while nothing else waits to run (0: sleep at once)",
        option="--busy-poll",
        metavar="USEC",
        sanlock_conf=False,
    ),
    # -- accepted for compatibility, nothing to tune in leased -------------------
    Key(
        "max_worker_threads",
        _integer(1),
        8,
        "accepted; leased uses trio tasks and disk I/O threads",
        option="-t",
        metavar="NUM",
        applied=False,
    ),
    Key(
        "high_priority",
        _flag,
        0,
        "accepted; leased does not switch to RR scheduling",
        option="-h",
        metavar="0|1",
        applied=False,
    ),
    Key(
        "mlock_level",
        _integer(0, 2),
        1,
        "accepted; leased does not mlockall",
        option="-l",
        metavar="0|1|2",
        applied=False,
    ),
    Key(
        "names_log_priority", _priority, 4, "accepted; resource names are logged at info", metavar="PRI", applied=False
    ),
    Key("sh_retries", _integer(0), 8, "accepted; shared acquires retry 8 times", applied=False),
    Key(
        "renewal_read_extend_sec",
        _integer(0),
        None,
        "accepted; a timed-out renewal read is abandoned",
        metavar="SEC",
        applied=False,
    ),
    Key(
        "write_init_io_timeout",
        _integer(1),
        60,
        "accepted; init writes use the lockspace io_timeout",
        metavar="SEC",
        applied=False,
    ),
    Key("paxos_debug_all", _flag, 0, "accepted; no extra paxos debug logging", metavar="0|1", applied=False),
    Key("debug_io", _text, None, "accepted; no per-I/O debug logging", metavar="STR", applied=False),
    Key(
        "max_sectors_kb",
        _text,
        None,
        "accepted; leased leaves max_sectors_kb of lockspace disks alone",
        metavar="STR",
        applied=False,
    ),
    Key(
        "debug_clients",
        _flag,
        0,
        "accepted; client connections are logged at debug anyway",
        metavar="0|1",
        applied=False,
    ),
    Key(
        "debug_cmd",
        _text,
        None,
        "accepted (repeatable); every command is logged at debug",
        metavar="+|-NAME",
        applied=False,
        repeatable=True,
    ),
)

BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}


class Setting:
    """An effective value and where it came from ('default', 'FILE:LINE', 'environment X', 'command line -o')."""

    __slots__ = ("origin", "value")

    def __init__(self, value: Value | None, origin: str) -> None:
        self.value = value
        self.origin = origin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Setting) and (self.value, self.origin) == (other.value, other.origin)

    def __hash__(self) -> int:
        return hash((self.value, self.origin))

    def __repr__(self) -> str:
        return f"Setting({self.value!r}, {self.origin!r})"


class Settings:
    """The effective value of every key."""

    def __init__(self, values: dict[str, Setting] | None = None) -> None:
        self.values: dict[str, Setting] = {} if values is None else values

    def __getitem__(self, name: str) -> Value | None:
        return self.values[name].value

    def integer(self, name: str) -> int:
        value = self.values[name].value
        assert isinstance(value, int), name
        return value

    def optional_integer(self, name: str) -> int | None:
        value = self.values[name].value
        assert value is None or isinstance(value, int), name
        return value

    def text(self, name: str) -> str | None:
        value = self.values[name].value
        assert value is None or isinstance(value, str), name
        return value

    def from_default(self, name: str) -> bool:
        return self.values[name].origin == "default"

    def ignored(self) -> list[tuple[Key, Setting]]:
        """Keys that were set somewhere but that leased does not apply: each gets a log line at start."""
        return [(key, self.values[key.name]) for key in KEYS if not key.applied and not self.from_default(key.name)]


def _convert(key: Key, raw: str, origin: str) -> int | str:
    try:
        return key.parse(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{origin}: {key.name}: {exc}") from None


def parse_file(text: str, path: str) -> list[tuple[Key, int | str, str]]:
    """The assignments of a config file, in order, as (key, value, 'PATH:LINE')."""
    assignments = []
    for number, line in enumerate(text.splitlines(), start=1):
        origin = f"{path}:{number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, raw = stripped.partition("=")
        name = name.strip()
        if not equals:
            raise ConfigError(f"{origin}: expected 'key = value', got {stripped!r}")
        key = BY_NAME.get(name)
        if key is None:
            raise ConfigError(f"{origin}: unknown key {name!r}")
        assignments.append((key, _convert(key, raw, origin), origin))
    return assignments


def resolve(
    file: tuple[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    command_line: Iterable[tuple[str, str, str]] = (),
) -> Settings:
    """Defaults, then the file (path, text), then ``LEASED_*`` variables, then (key, raw, option) from argv.

    An environment variable that starts with ``LEASED_`` but names no key is
    an error, like an unknown key in the file (except ``LEASED_CONFIG``,
    which names the file).
    """
    settings = Settings({key.name: Setting(key.default, "default") for key in KEYS})

    def put(key: Key, value: int | str, origin: str) -> None:
        if key.repeatable:
            previous = settings.values[key.name]
            before = previous.value if isinstance(previous.value, tuple) else ()
            settings.values[key.name] = Setting((*before, str(value)), origin)
        else:
            settings.values[key.name] = Setting(value, origin)

    if file is not None:
        for key, value, origin in parse_file(file[1], file[0]):
            put(key, value, origin)
    for variable, raw in sorted((environ or {}).items()):
        if not variable.startswith(ENV_PREFIX) or variable in NOT_SETTINGS:
            continue
        named = BY_NAME.get(variable[len(ENV_PREFIX) :].lower())
        if named is None or named.env != variable:
            raise ConfigError(f"environment {variable}: no such setting")
        put(named, _convert(named, raw, f"environment {variable}"), f"environment {variable}")
    for name, raw, option in command_line:
        key = BY_NAME[name]
        put(key, _convert(key, raw, f"command line {option}"), f"command line {option}")
    return settings


def show(settings: Settings, extra: Iterable[tuple[str, str, str]] = ()) -> list[str]:
    """``--show-config``: one ``key = value  # origin`` line per key, in leased.conf syntax.

    ``extra`` adds (name, value, origin) lines for effective values that are
    not keys (the config file in use, the run directory).  Keys leased does
    not apply are marked so, so nobody tunes them expecting an effect.
    """
    rows = [(f"# {name} = {value}", origin) for name, value, origin in extra]
    for key in KEYS:
        setting = settings.values[key.name]
        note = "" if key.applied else ", not applied by leased"
        if setting.value is None:  # commented out, so the output stays a valid leased.conf
            rows.append((f"# {key.name} =", f"{setting.origin}, unset{note}"))
        elif isinstance(setting.value, tuple):  # a repeatable key: one line per value, as it was written
            rows.extend((f"{key.name} = {item}", setting.origin + note) for item in setting.value)
        else:
            rows.append((f"{key.name} = {setting.value}", setting.origin + note))
    width = max(len(text) for text, _ in rows)
    return [f"{text:<{width}}  # {origin}" for text, origin in rows]
