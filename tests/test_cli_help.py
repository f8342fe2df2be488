"""Every ``leased`` command and action answers ``--help``, and the help names every option.

The parsers are walked, not a list kept here, so an option added without
help text, or an action whose help lists an option the parser lacks, fails
this test.  Most calls go through :func:`leased.cli.main` in-process (the
same code the script runs); the installed script itself is run for the
top-level commands, to check the exit status a shell sees.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import leased_command

from leased import cli
from leased.cli import client as client_cli
from leased.cli import daemon as daemon_cli
from leased.cli import direct as direct_cli
from leased.cli.options import Action
from leased.torture import cli as torture_cli


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def assert_all_have_help(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{parser.prog} {action.option_strings or action.dest}: no help"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert rc == 0, f"leased {' '.join(argv)} exited {rc}: {err}"
    assert out.strip() and not err
    return out


COMMANDS: dict[str, tuple[argparse.ArgumentParser, tuple[Action, ...]]] = {
    "direct": (direct_cli._direct_parser(), direct_cli.DIRECT_ACTION_TABLE),
    "client": (client_cli._parser(), client_cli.ACTION_TABLE),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_lists_every_action_and_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser, actions = COMMANDS[command]
    assert_all_have_help(parser)
    text = run_main(capsys, command, "--help")
    for flag in option_strings(parser):
        assert flag in text, f"leased {command} --help does not mention {flag}"
    for action in actions:
        assert f"  {action.name} " in text, f"leased {command} --help does not list {action.name}"


@pytest.mark.parametrize(
    ("command", "action"), [(command, action) for command, (_, table) in COMMANDS.items() for action in table]
)
def test_action_help_shows_its_options(command: str, action: Action, capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = COMMANDS[command]
    known = set(option_strings(parser))
    assert set(action.flags) <= known, f"{command} {action.name} lists options the parser lacks"
    text = run_main(capsys, command, action.name, "--help")
    assert text.startswith(f"usage: leased {command} {action.name}")
    for flag in (*action.flags, "--help"):
        assert f"  {flag}" in text, f"leased {command} {action.name} --help does not mention {flag}"
    others = known - set(action.flags) - {"--help"}
    listed = {line.split()[0] for line in text.split("options:", 1)[1].splitlines() if line.startswith("  -")}
    assert not listed & others, f"{command} {action.name} --help lists options it does not take: {listed & others}"


@pytest.mark.parametrize(("command", "parser"), [("daemon", daemon_cli._parser()), ("torture", torture_cli.parser())])
def test_daemon_and_torture_help_mention_every_option(
    command: str, parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_all_have_help(parser)
    text = run_main(capsys, command, "--help")
    for flag in option_strings(parser):
        assert flag in text, f"leased {command} --help does not mention {flag}"


def test_torture_fuzz_help_mentions_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = torture_cli.fuzz_parser()
    assert_all_have_help(parser)
    text = run_main(capsys, "torture", "--fuzz", "--help")
    assert text.startswith("usage: leased torture --fuzz")
    for flag in option_strings(parser):
        assert flag in text, f"leased torture --fuzz --help does not mention {flag}"
    assert "--fuzz" in run_main(capsys, "torture", "--help"), "torture --help points to the fuzz mode"


def test_torture_fuzz_without_a_daemon_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*leased_command(), "torture", "--fuzz", "--workdir", str(tmp_path), "--run-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("leased torture --fuzz: setting up the run failed:"), proc.stderr


@pytest.mark.parametrize(
    "argv", [["--help"], ["direct", "--help"], ["client", "--help"], ["daemon", "--help"], ["torture", "--help"]]
)
def test_the_installed_script_exits_0_on_help(argv: list[str]) -> None:
    proc = subprocess.run(
        [*leased_command(), *argv], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower() or proc.stdout.startswith("leased ")
    assert proc.stderr == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["direct", "dump", "-f"],  # option without its value
        ["direct", "cluster", "x", "--interval", "-5"],
        ["client", "status", "--bogus"],
        ["direct", "acquire", "-i", "one"],
    ],
)
def test_bad_options_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("leased: ") and "Traceback" not in err


@pytest.mark.parametrize("option", ["--help", "--show-config"])
def test_daemon_help_and_show_config_load_no_daemon_code(option: str, tmp_path: Path) -> None:
    """Asking the daemon what it would do must not pay for (or depend on) trio and the lease code."""
    program = (
        "import sys\n"
        "from leased.cli import main\n"
        f"rc = main(['daemon', {option!r}])\n"
        "print(rc, sorted(m for m in sys.modules if m == 'trio' or m.startswith(('leased.daemon', 'leased.state'))))\n"
    )
    (tmp_path / "leased.conf").write_text("# empty: every key at its default\n")
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SANLOCK_RUN_DIR": str(tmp_path), "LEASED_CONFIG": str(tmp_path / "leased.conf")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"
