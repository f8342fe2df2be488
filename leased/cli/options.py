"""Option tables for the ``leased`` command lines: one table builds the parser and the help.

sanlock's option letters clash with argparse's conventions (``-h`` is
``gets -h 0|1`` and ``daemon -h 0|1``), so the parsers are built without
argparse's own help and ``--help`` is an ordinary flag.  Each command keeps
one tuple of :class:`Option` and one of :class:`Action`: the parser comes
from the options, ``leased <command> --help`` lists every option with its
help text, and ``leased <command> <action> --help`` shows the action's
synopsis, what it does, and only the options it takes.  A test walks the
tables, so an option without help, or an action whose help names an option
the parser lacks, fails there rather than in front of an operator.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

LEASED_USAGE = """\
leased <command> <action> ...

leased direct init -s LOCKSPACE | -r RESOURCE [-Z 512|4096 -A 1M|2M|4M|8M] [-o SEC] [-n NUM] [-z 0|1]
leased direct read_leader -s LOCKSPACE | -r RESOURCE
leased direct dump <path>[:<offset>[:<size>]] [-f 0|1|2] [-Z 512|4096 -A 1M|2M|4M|8M]
leased direct acquire_id|renew_id|release_id -s LOCKSPACE [-o SEC] [-e HOST_NAME]
leased direct acquire|release -r RESOURCE -i HOST_ID -g GENERATION
leased direct cluster <path>[:<offset>[:<size>]] ... [--interval SEC] [--json]
leased daemon [options]                  (leased daemon --help)
leased client <action> [options]         (leased client --help)
leased torture --workdir DIR [options]   (leased torture --help)

LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
RESOURCE = <lockspace_name>:<resource_name>:<path>:<offset>[:<lver>|:SH]
Names are at most 48 bytes; a ':' inside a path is written '\\:'.
"""
"""``leased --help``; also the usage line of ``leased direct``, whose actions it lists."""


class UsageError(Exception):
    """A command line that cannot be parsed: reported as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse without its exit-on-error: errors become :class:`UsageError`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Option:
    flag: str
    dest: str
    help: str
    metavar: str | None = None
    """None for a flag without a value."""
    type: Callable[[str], Any] = str
    default: Any = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.metavar is None:
            parser.add_argument(self.flag, dest=self.dest, action="store_true", help=self.help)
        else:
            parser.add_argument(
                self.flag, dest=self.dest, type=self.type, default=self.default, metavar=self.metavar, help=self.help
            )

    @property
    def label(self) -> str:
        return self.flag if self.metavar is None else f"{self.flag} {self.metavar}"


@dataclass(frozen=True)
class Action:
    name: str
    synopsis: str
    """The arguments after the action name, e.g. ``-s LOCKSPACE [-o SEC]``."""
    help: str
    flags: tuple[str, ...] = ()
    """The options this action takes (``--help`` is implied)."""


HELP_OPTION = Option("--help", "help", "print this help (with an action: the action's help) and exit")


def build_parser(prog: str, usage: str, options: Sequence[Option], positionals: Sequence[Option]) -> Parser:
    parser = Parser(prog=prog, add_help=False, usage=usage)
    for positional in positionals:
        parser.add_argument(positional.dest, nargs=positional.metavar, help=positional.help)
    for option in (*options, HELP_OPTION):
        option.add_to(parser)
    return parser


def _option_lines(options: Sequence[Option]) -> list[str]:
    width = max(len(o.label) for o in options) + 2
    return [f"  {o.label.ljust(width)}{o.help}" for o in options]


def command_help(prog: str, summary: str, actions: Sequence[Action], options: Sequence[Option], tail: str = "") -> str:
    """``leased <command> --help``: every action's synopsis and every option's help."""
    width = max(len(a.name) for a in actions) + 2
    lines = [f"usage: {prog} <action> [options]", "", summary, "", "actions:"]
    lines += [f"  {a.name.ljust(width)}{a.help.splitlines()[0]}" for a in actions]
    lines += ["", "options:", *_option_lines([*options, HELP_OPTION])]
    if tail:
        lines += ["", tail.rstrip("\n")]
    lines.append(f"\n'{prog} <action> --help' describes one action.")
    return "\n".join(lines) + "\n"


def action_help(prog: str, action: Action, options: Sequence[Option], tail: str = "") -> str:
    """``leased <command> <action> --help``: the synopsis, what it does, and its options."""
    by_flag = {o.flag: o for o in options}
    lines = [f"usage: {prog} {action.name} {action.synopsis}".rstrip(), "", action.help]
    taken = [by_flag[flag] for flag in action.flags]
    lines += ["", "options:", *_option_lines([*taken, HELP_OPTION])]
    if tail:
        lines += ["", tail.rstrip("\n")]
    return "\n".join(lines) + "\n"
