"""What every ``hangar`` subcommand shares on its command line: hangar v1.6's Go-style flags
(``--flag``, ``--flag=false``, comma lists), clamped job counts, help and output lines."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from hangar.settings import schema_defaults

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


def normalise_argv(
    argv: Sequence[str], bool_flags: Sequence[str], list_flags: Sequence[str]
) -> list[str]:
    """Rewrite Go-style flags into a form argparse reads without ambiguity.

    A bare boolean flag becomes ``--flag=true``, so a following word is never taken as its value
    (as in Go, ``--tls-verify false`` does not mean false). A list value that ends in a comma
    continues in the next word: ``-a amd64, arm64`` is ``-a amd64,arm64``.
    """
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
