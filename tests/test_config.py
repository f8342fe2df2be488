"""leased.conf, the environment and the command line: the pure resolver, then the real ``leased daemon``.

The resolver is driven directly (text and mappings in, settings or one
:class:`ConfigError` line out); the subprocess tests check what an operator
sees: ``--show-config`` output and exit status, and one ``leased: ...`` line
with no traceback for each kind of bad input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leased import config
from leased.cli import daemon as daemon_cli
from leased.config import ConfigError, resolve, show

LEASED = str(Path(sys.executable).parent / "leased")

SANLOCK_CONF = """\
# a sanlock.conf as an operator might have it
quiet_fail = 0
debug_renew = 1
logfile_priority = 7
syslog_priority = -1
use_watchdog = 0
our_host_name = host-a.example.com
  renewal_history_size=30
max_worker_threads = 16
sh_retries = 4
debug_cmd = +acquire
debug_cmd = -inq_lockspace
"""


def test_sanlock_conf_keys_are_read_with_their_line() -> None:
    settings = resolve(("/etc/leased/leased.conf", SANLOCK_CONF))
    assert settings["quiet_fail"] == 0
    assert settings["debug_renew"] == 1
    assert settings["logfile_priority"] == 7
    assert settings["syslog_priority"] == -1
    assert settings["our_host_name"] == "host-a.example.com"
    assert settings["renewal_history_size"] == 30
    assert settings.values["renewal_history_size"].origin == "/etc/leased/leased.conf:8"
    assert settings["debug_cmd"] == ("+acquire", "-inq_lockspace")  # repeatable: every line counts
    assert settings["io_timeout"] == 10
    assert settings.from_default("io_timeout")


def test_keys_not_applied_are_kept_and_reported() -> None:
    settings = resolve(("f", SANLOCK_CONF))
    ignored = {key.name: setting.value for key, setting in settings.ignored()}
    assert ignored == {"max_worker_threads": 16, "sh_retries": 4, "debug_cmd": ("+acquire", "-inq_lockspace")}


def test_later_sources_win() -> None:
    text = "io_timeout = 5\nquiet_fail = 0\nlogfile_priority = 6\n"
    environ = {"LEASED_IO_TIMEOUT": "7", "LEASED_QUIET_FAIL": "1", "PATH": "/bin", "LEASED_CONFIG": "/x"}
    settings = resolve(("f", text), environ, [("io_timeout", "9", "-o")])
    assert settings["io_timeout"] == 9
    assert settings.values["io_timeout"].origin == "command line -o"
    assert settings["quiet_fail"] == 1
    assert settings.values["quiet_fail"].origin == "environment LEASED_QUIET_FAIL"
    assert settings["logfile_priority"] == 6
    assert settings.values["logfile_priority"].origin == "f:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("io_timout = 5\n", "f:1: unknown key 'io_timout'"),
        ("# ok\nio_timeout = ten\n", "f:2: io_timeout: not an integer: 'ten'"),
        ("io_timeout = 0\n", "f:1: io_timeout: 0 is below 1"),
        ("io_timeout = 256\n", "f:1: io_timeout: 256 is above 255"),
        ("watchdog_fire_timeout = -5\n", "f:1: watchdog_fire_timeout: -5 is negative"),
        ("quiet_fail = yes\n", "f:1: quiet_fail: must be 0 or 1, not 'yes'"),
        ("logfile_priority = 8\n", "f:1: logfile_priority: 8 is above 7"),
        ("our_host_name =\n", "f:1: our_host_name: empty value"),
        ("our_host_name = " + "h" * 49 + "\n", "f:1: our_host_name: longer than 48 bytes"),
        ("just words\n", "f:1: expected 'key = value', got 'just words'"),
    ],
)
def test_bad_file_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(("f", text))
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_bad_environment_and_command_line_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"^environment LEASED_IO_TIMOUT: no such setting$"):
        resolve(None, {"LEASED_IO_TIMOUT": "3"})
    with pytest.raises(ConfigError, match=r"^environment LEASED_IO_TIMEOUT: io_timeout: not an integer: 'x'$"):
        resolve(None, {"LEASED_IO_TIMEOUT": "x"})
    with pytest.raises(ConfigError, match=r"^command line -L: logfile_priority: -2 is below -1$"):
        resolve(None, {}, [("logfile_priority", "-2", "-L")])


def test_comments_are_whole_lines_only() -> None:
    """As in sanlock.conf: a '#' after a value is part of the value."""
    settings = resolve(("f", "#our_host_name = commented\nour_host_name = a#b\n"))
    assert settings["our_host_name"] == "a#b"


def test_show_config_round_trips_as_a_config_file() -> None:
    """--show-config prints leased.conf syntax: feeding it back gives the same values."""
    settings = resolve(("f", SANLOCK_CONF), {"LEASED_IO_TIMEOUT": "3"})
    lines = show(settings, [("config", "f", "command line --config")])
    assert lines[0].startswith("# config = f")
    assert any(
        line.startswith("io_timeout = 3 ") and line.endswith("# environment LEASED_IO_TIMEOUT") for line in lines
    )
    assert any(line.startswith("sh_retries = 4 ") and "not applied by leased" in line for line in lines)
    assert any(line.startswith("# kill_grace_seconds =") for line in lines)  # unset: commented out
    text = "\n".join(line.split("  # ")[0] for line in lines)
    again = resolve(("shown", text))
    for key in config.KEYS:
        assert again[key.name] == settings[key.name], key.name


def test_every_option_has_a_unique_flag_and_help() -> None:
    options = [key.option for key in config.KEYS if key.option]
    assert len(options) == len(set(options))
    assert all(key.help for key in config.KEYS)


# -- the real command --------------------------------------------------------


def run_daemon_command(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEASED_") and k not in ("NOTIFY_SOCKET",)}
    full_env |= {"SANLOCK_RUN_DIR": str(tmp_path / "run")} | (env or {})
    return subprocess.run(
        [LEASED, "daemon", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_show_config_reports_each_source(tmp_path: Path) -> None:
    conf = tmp_path / "leased.conf"
    conf.write_text("io_timeout = 5\nlogfile_priority = 6\nquiet_fail = 0\nsh_retries = 3\n")
    result = run_daemon_command(
        tmp_path, "--config", str(conf), "--show-config", "-Q", "1", env={"LEASED_LOGFILE_PRIORITY": "7"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = {line.split(" = ")[0].lstrip("# "): line for line in result.stdout.splitlines()}
    assert lines["config"].endswith("# command line --config")
    assert lines["run_dir"].startswith(f"# run_dir = {tmp_path / 'run'} ")
    assert lines["io_timeout"].endswith(f"# {conf}:1")
    assert lines["logfile_priority"].startswith("logfile_priority = 7 ")
    assert lines["logfile_priority"].endswith("# environment LEASED_LOGFILE_PRIORITY")
    assert lines["quiet_fail"].startswith("quiet_fail = 1 ")
    assert lines["quiet_fail"].endswith("# command line -Q")
    assert lines["syslog_priority"].endswith("# default")
    assert not (tmp_path / "run" / "sanlock.sock").exists()  # it printed and exited; nothing was started


def test_config_file_from_the_environment_and_default_absent(tmp_path: Path) -> None:
    conf = tmp_path / "other.conf"
    conf.write_text("io_timeout = 4\n")
    result = run_daemon_command(tmp_path, "--show-config", env={"LEASED_CONFIG": str(conf)})
    assert result.returncode == 0, result.stderr
    assert f"# config = {conf}" in result.stdout
    assert "environment LEASED_CONFIG" in result.stdout
    assert "io_timeout = 4 " in result.stdout


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("colour = blue\n", (), ":1: unknown key 'colour'"),
        ("io_timeout = ten\n", (), ":1: io_timeout: not an integer: 'ten'"),
        ("kill_grace_seconds = -1\n", (), ":1: kill_grace_seconds: -1 is negative"),
        ("", ("-o", "x"), "command line -o: io_timeout: not an integer: 'x'"),
        ("", ("--bogus",), "unrecognized arguments: --bogus"),
        ("", ("-U", "no-such-user-here"), "uname: unknown user 'no-such-user-here' (command line -U)"),
        ("io_engine = aio\n", (), ":1: io_engine: one of auto, threads, not 'aio'"),
        ("", ("--io-engine", "uring"), "command line --io-engine: io_engine: one of auto, threads, not 'uring'"),
        ("busy_poll = 2000\n", (), ":1: busy_poll: 2000 is above 1000"),
        ("", ("--busy-poll", "-1"), "command line --busy-poll: busy_poll: -1 is negative"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, content: str, args: tuple[str, ...], message: str) -> None:
    conf = tmp_path / "leased.conf"
    conf.write_text(content)
    result = run_daemon_command(tmp_path, "--config", str(conf), *args)
    assert result.returncode == 1
    assert result.stderr.startswith("leased: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert not (tmp_path / "run" / "sanlock.sock").exists()


def test_unreadable_or_missing_config_file(tmp_path: Path) -> None:
    missing = run_daemon_command(tmp_path, "--config", str(tmp_path / "nope.conf"))
    assert missing.returncode == 1
    assert missing.stderr == f"leased: config file {tmp_path / 'nope.conf'} (command line --config): no such file\n"
    directory = run_daemon_command(tmp_path, "--config", str(tmp_path))
    assert directory.returncode == 1
    assert directory.stderr == f"leased: cannot read config file {tmp_path}: Is a directory\n"
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe\x00")
    garbage = run_daemon_command(tmp_path, "--config", str(binary))
    assert garbage.returncode == 1
    assert garbage.stderr == f"leased: config file {binary} is not UTF-8 text\n"


def test_help_lists_every_option(tmp_path: Path) -> None:
    result = run_daemon_command(tmp_path, "--help")
    assert result.returncode == 0
    for key in config.KEYS:
        if key.option:
            assert f"  {key.option} {key.metavar}" in result.stdout, key.name
            assert f"[{key.name}" in result.stdout
    for option in ("--config FILE", "--show-config", "-D"):
        assert option in result.stdout


FLAGS = ["-D", "--show-config", "--help"]
VALUED = ["--config", *(key.option for key in config.KEYS if key.option)]
VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "-12", "-1.5", "", "root", "--", "-", "-D", "-w0", "--config=f", "٣", "-٣"]),
    st.text(max_size=6),
)
ARGV_PARTS = st.one_of(
    st.sampled_from(FLAGS).map(lambda flag: [flag]),
    st.tuples(st.sampled_from(VALUED), VALUES).map(list),
    st.sampled_from(["-w0", "--config=f", "--conf", "--show", "-x", "--", "-Dw", "value"]).map(lambda odd: [odd]),
    st.sampled_from(VALUED).map(lambda option: [option]),  # an option left without its value
)


@settings(max_examples=600, deadline=None)
@given(st.lists(ARGV_PARTS, max_size=6).map(lambda parts: [arg for part in parts for arg in part]))
def test_plain_options_mean_what_argparse_makes_of_them(argv: list[str]) -> None:
    """The daemon reads plain options without argparse (5-6 ms of its start); whatever it accepts that
    way, argparse parses to the same values, and everything else is left to argparse."""
    plain = daemon_cli._plain_options(argv)
    try:
        parsed: dict[str, object] | None = vars(daemon_cli._parser().parse_args(argv))
    except daemon_cli.UsageError:
        parsed = None
    if plain is not None:
        assert parsed == vars(plain)


def test_the_plain_forms_are_read_without_argparse() -> None:
    argv = ["-D", "-w", "0", "-L", "-1", "-U", "root", "--config", "/etc/x.conf", "-w", "1", "--show-config"]
    plain = daemon_cli._plain_options(argv)
    assert plain is not None
    dest = {key.option: key.name for key in config.KEYS if key.option}
    assert plain.foreground is True and plain.show_config is True and plain.help is False
    assert getattr(plain, dest["-w"]) == "1", "the last of a repeated option wins, as in argparse"
    assert (getattr(plain, dest["-L"]), getattr(plain, dest["-U"]), plain.config_file) == ("-1", "root", "/etc/x.conf")
    assert vars(plain) == vars(daemon_cli._parser().parse_args(argv))
    for other in (["-w0"], ["--config=/etc/x.conf"], ["--conf", "x"], ["-w"], ["-w", "-x"], ["--bogus"]):
        assert daemon_cli._plain_options(other) is None, other
    started = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from leased.cli import daemon as d; d._plain_options(['-D'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "argparse" not in started.stderr, "the daemon's own module must not import argparse"
