"""What every ``hangar`` subcommand shares on its command line: hangar v1.6's Go-style flags
(``--flag``, ``--flag=false``, comma lists), clamped job counts, help and output lines.

A command describes each of its flags once, as a ``Flag`` in a table: its names, its help, the
config key it sets. The parser, the Go-style rewriting, the config and the flag named in a config
error all come from that table."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NoReturn, TextIO

from hangar.settings import ConfigError, schema_defaults

PROGRAM = "hangar"
MIN_JOBS, MAX_JOBS = 1, 20
EXIT_OK, EXIT_FAILED = 0, 1

_GO_TRUE = frozenset({"1", "t", "true"})
_GO_FALSE = frozenset({"0", "f", "false"})


class UsageError(Exception):
    """A bad command line; the message is one line for the user."""


def say(text: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(text + "\n")
    stream.flush()


def warn(text: str) -> None:
    say(f"WARNING: {text}")


def error(text: str) -> None:
    for line in text.splitlines() or [""]:
        say(f"ERROR: {line}")


def go_bool(text: str) -> bool:
    """A boolean as Go's strconv.ParseBool reads it (case-insensitive)."""
    value = text.strip().lower()
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def split_list(values: Sequence[str]) -> list[str]:
    """Comma lists, possibly given several times, with spaces around the items ignored."""
    items = [item.strip() for value in values for item in value.split(",")]
    return [item for item in items if item]


def normalise_argv(argv: Sequence[str], flags: Iterable[Flag]) -> list[str]:
    """Rewrite Go-style flags into a form argparse reads without ambiguity.

    A bare boolean flag becomes ``--flag=true``, so a following word is never taken as its value
    (as in Go, ``--tls-verify false`` does not mean false). A list value that ends in a comma
    continues in the next word: ``-a amd64, arm64`` is ``-a amd64,arm64``.
    """
    flags = list(flags)
    bool_flags = {name for flag in flags if flag.kind == "bool" for name in flag.names}
    list_flags = {name for flag in flags if flag.kind == "list" for name in flag.names}
    result: list[str] = []
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word in bool_flags:
            result.append(f"{word}=true")
            continue
        name, equals, value = word.partition("=")
        if name in list_flags:
            if not equals:
                if index >= len(words):
                    result.append(word)
                    continue
                value = words[index]
                index += 1
            while value.rstrip().endswith(",") and index < len(words):
                if words[index].startswith("-"):
                    break
                value += words[index]
                index += 1
            result.append(f"{name}={value}")
            continue
        result.append(word)
    return result


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Go-like help: ``-f, --file FILE`` and ``--tls-verify[=BOOL]``."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        names = ", ".join(action.option_strings)
        if action.nargs == 0:
            return names
        if action.nargs == "?":
            return f"{names}[=BOOL]"
        return f"{names} {self._metavar_formatter(action, action.dest.upper())(1)[0]}"

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def default_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def clamp_jobs(jobs: int | None, default: int) -> tuple[int, str]:
    """hangar's rule: outside 1-20 is a warning and the nearest allowed value."""
    if jobs is None:
        return default, ""
    clamped = min(max(jobs, MIN_JOBS), MAX_JOBS)
    if clamped != jobs:
        return clamped, f"--jobs {jobs} is outside {MIN_JOBS}-{MAX_JOBS}: using {clamped}"
    return jobs, ""


def default_help(key: str) -> str:
    """`` (default X)`` for a help text, from the workflow schema."""
    return f" (default {default_text(schema_defaults()[key])})"


def add_bool_flag(group: Any, name: str, help_text: str) -> None:
    """A Go-style boolean flag: ``--name`` (true), ``--name=true`` or ``--name=false``."""
    group.add_argument(name, nargs="?", const=True, type=go_bool, help=help_text)


V16_GROUP, ADDITIONS_GROUP = "hangar v1.6 flags", "additions"

FlagKind = Literal["text", "int", "float", "bool", "list", "help"]
_TYPES: dict[str, type] = {"int": int, "float": float}


@dataclass(frozen=True)
class Flag:
    """One flag of a command.

    ``spec`` is the flag as its help shows it: its names, then a metavar when it takes a value
    (``"-o, --failed, --output FILE"``). ``key`` is the config key it sets: by default the name
    argparse stores it under (``--part-size`` sets ``part_size``), "" for a flag only the command
    reads (``--jobs``). A ``computed`` flag's key is set by the command itself (a required value,
    a default from the environment); the other keys are copied into the config when given.
    ``kind``: ``bool`` is Go-style (see ``add_bool_flag``), ``list`` a comma list that may be
    given several times, ``help`` prints the help.
    """

    spec: str
    help: str
    kind: FlagKind = "text"
    key: str | None = None
    choices: tuple[str, ...] | None = None
    computed: bool = False
    group: str = V16_GROUP

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(word for word in self.spec.replace(",", " ").split() if word.startswith("-"))

    @property
    def metavar(self) -> str | None:
        words = [word for word in self.spec.split() if not word.startswith("-")]
        return words[-1] if words else None

    @property
    def label(self) -> str:
        """How messages name it: the short names and the first long one, ``-o/--failed``."""
        short = [name for name in self.names if not name.startswith("--")]
        long = [name for name in self.names if name.startswith("--")]
        return "/".join(short + long[:1])

    @property
    def dest(self) -> str:
        """The attribute argparse stores it under: its first long name, as a name."""
        long = [name for name in self.names if name.startswith("--")] or list(self.names)
        return long[0].lstrip("-").replace("-", "_")

    @property
    def config_key(self) -> str:
        if self.kind == "help":
            return ""
        return self.dest if self.key is None else self.key

    def add_to(self, group: Any) -> None:
        if self.kind == "bool":
            (name,) = self.names
            add_bool_flag(group, name, self.help)
            return
        options: dict[str, Any] = {"help": self.help}
        if self.kind == "help":
            options["action"] = "help"
        else:
            options["metavar"] = self.metavar
        if self.kind == "list":
            options["action"] = "append"
        if self.kind in _TYPES:
            options["type"] = _TYPES[self.kind]
        if self.choices is not None:
            options["choices"] = self.choices
        group.add_argument(*self.names, **options)


def additions(*flags: Flag) -> tuple[Flag, ...]:
    """Flags hangar v1.6 does not have, shown apart in the help."""
    return tuple(replace(flag, group=ADDITIONS_GROUP) for flag in flags)


HELP_FLAG = Flag("-h, --help", "show this help and exit", "help")
TLS_VERIFY_FLAG = Flag(
    "--tls-verify", "require HTTPS and verify certificates (default true)", "bool"
)


def add_flags(parser: argparse.ArgumentParser, flags: Iterable[Flag]) -> None:
    """Each flag into its group, the groups in the order of their first flag."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in flags:
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        flag.add_to(groups[flag.group])


def command_parser(
    command: str, usage: str, description: str, epilog: str, flags: Iterable[Flag]
) -> argparse.ArgumentParser:
    """A subcommand's parser: ``flags`` in their groups, Go-like help, no abbreviated flags, and
    a UsageError (not an exit) for a bad command line."""
    parser = Parser(
        prog=f"{PROGRAM} {command}",
        usage=f"{PROGRAM} {command} {usage}",
        description=description,
        epilog=epilog,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
        add_help=False,
    )
    add_flags(parser, flags)
    return parser


def given_config(args: argparse.Namespace, flags: Iterable[Flag]) -> dict[str, Any]:
    """The config keys of the flags given (not computed), comma lists split."""
    config: dict[str, Any] = {}
    for flag in flags:
        if not flag.config_key or flag.computed:
            continue
        value = getattr(args, flag.dest)
        if value is not None:
            config[flag.config_key] = split_list(value) if flag.kind == "list" else value
    return config


def naming_flags(problem: ConfigError, flags: Iterable[Flag]) -> ConfigError:
    """The config error with each ``key: problem`` line naming the flag that sets the key."""
    labels: Mapping[str, str] = {flag.config_key: flag.label for flag in flags if flag.config_key}
    lines = []
    for line in str(problem).splitlines():
        key, _, message = line.partition(": ")
        label = labels.get(key.split(".")[0])
        lines.append(f"{label}: {message}" if label else line)
    return ConfigError("\n".join(lines))
