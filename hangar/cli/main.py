"""The ``hangar`` command: its subcommands and the global flags hangar v1.6 takes before them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from hangar.cli.flags import EXIT_FAILED, EXIT_OK, PROGRAM, error, go_bool, say, warn

TOOL_MODULES = {
    "plan": "hangar.save.plan",
    "report": "hangar.save.report",
    "verify": "hangar.verify",
}

DISTRIBUTION = "hangar-save"
COMPATIBLE_WITH = "v1.6"
# hangar v1.6's persistent flags: given before the command, they apply to it.
GLOBAL_FLAGS = ("--debug", "--tls-verify")

TOP_HELP = f"""\
usage: {PROGRAM} [--debug] [--tls-verify[=BOOL]] COMMAND [flags]

Save container images for air-gapped networks, compatible with hangar v1.6 archives.

commands:
  save        save the images of an image list into an archive ({PROGRAM} save --help)
  load        load an archive into a registry ({PROGRAM} load --help)
  load-validate  check that an archive's images are in a registry, with their digests
  plan        resolve a list without downloading: sizes to fetch, free disk, missing platforms
  verify      check an archive (parts, checksums, every blob) without extracting it
  report      write save-report.html and save-report.csv for a cache
  version     show the version (as -v, --version)

flags (as hangar's, they apply to the command that follows):
  --debug               show Snakemake's output and the skopeo commands
  --tls-verify[=BOOL]   require HTTPS and verify certificates (default true)
  -v, --version         show the version and exit
  -h, --help            show this help and exit"""


def version_line() -> str:
    """One line naming this tool, as ``hangar version``, ``-v`` and ``--version`` print it (hangar
    v1.6's own test suite runs all three and expects exit status 0)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version(DISTRIBUTION)
    except PackageNotFoundError:  # a plain checkout on sys.path, not installed
        release = "unknown version"
    return (
        f"{PROGRAM} ({DISTRIBUTION} {release}, a Snakemake workflow compatible with "
        f"hangar {COMPATIBLE_WITH} archives)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    global_flags: list[str] = []
    while words and words[0].startswith("-"):
        word = words.pop(0)
        if word in ("-h", "--help"):
            say(TOP_HELP, sys.stdout)
            return EXIT_OK
        if word in ("-v", "--version"):
            say(version_line(), sys.stdout)
            return EXIT_OK
        name, equals, value = word.partition("=")
        if name in GLOBAL_FLAGS:
            try:
                go_bool(value if equals else "true")
            except argparse.ArgumentTypeError as problem:
                error(f"{name}: {problem} (see '{PROGRAM} --help')")
                return EXIT_FAILED
            global_flags.append(word)
            continue
        error(f"unknown flag {word!r} (see '{PROGRAM} --help')")
        return EXIT_FAILED
    if not words:
        say(TOP_HELP, sys.stdout)
        return EXIT_OK
    command, rest = words[0], words[1:]
    if command == "version":
        say(version_line(), sys.stdout)
        return EXIT_OK
    if command in TOOL_MODULES:
        for flag in global_flags:
            name, _, value = flag.partition("=")
            if command == "plan" and name == "--tls-verify":
                rest = [f"--tls-verify={str(go_bool(value or 'true')).lower()}", *rest]
            else:
                warn(f"{name} does not apply to '{PROGRAM} {command}': ignored")
        tool_main: Callable[[list[str]], int] = import_module(TOOL_MODULES[command]).main
        return tool_main(rest)
    if command not in ("save", "load", "load-validate"):
        error(f"unknown command {command!r} (see '{PROGRAM} --help')")
        return EXIT_FAILED
    # first: a flag given after the command as well wins, as the later one does in hangar
    rest = [*global_flags, *rest]
    if command == "save":
        from hangar.cli.save import save_command

        return save_command(rest)
    from hangar.cli.load import load_command, load_validate_command

    return (load_command if command == "load" else load_validate_command)(rest)


if __name__ == "__main__":
    sys.exit(main())
