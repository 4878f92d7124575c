"""The ``hangar`` console command: ``hangar save`` with the flags of hangar v1.6.

``hangar save`` turns its flags into a workflow config file and runs the workflow's Snakefile
with ``python -m snakemake`` as a child process; it never re-implements what the workflow does.
A child process rather than Snakemake's Python API, because:

* isolation: Snakemake configures global logging, signal handlers and the working directory of
  the process it runs in; a child keeps all of that away from this command's own output;
* it is exactly the documented command (``snakemake --configfile …``), so a run started here and
  one started by hand (or on a cluster, with Snakemake options passed after ``--``) behave the
  same and share the same cache, and re-running either resumes the other;
* clean signals: Ctrl-C and SIGTERM are forwarded once to Snakemake, which stops its jobs (or
  lets them finish, for SIGTERM) and exits; if this command is killed, the child gets SIGTERM;
* Snakemake's command line is its stable, documented interface, its Python API is not.

The config file (``<cache>/.hangar/cli-config.yaml``) holds no credentials: SOURCE_USERNAME,
SOURCE_PASSWORD and REGISTRY_AUTH_FILE stay in the environment, where the save jobs read them.
Progress is read from the status files the image jobs write (see ``hangar.cli.progress``).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import jsonschema
import yaml

import hangar.save.plan as plan_module
from hangar.cli.progress import (
    POLL_SECONDS,
    Display,
    LiveDisplay,
    Phase,
    PlainDisplay,
    StatusWatcher,
    archive_bytes,
    summary_lines,
)
from hangar.imagelist import ImageListError, ListEntry, read_image_list
from hangar.settings import SCHEMA_FILE, SNAKEFILE, ConfigError, Settings
from hangar.status import STATE_DIR, write_atomic
from hangar.units import human_size

PROGRAM = "hangar"
CONFIG_NAME = "cli-config.yaml"
LOG_NAME = "snakemake.log"
JOB_LOG_DIR = Path("logs") / "save"  # the save rule's log: directive, relative to the run dir

MIN_JOBS, MAX_JOBS = 1, 20
DEFAULT_JOBS = 4
STALE_LOCK_MARKER = b"Directory cannot be locked"
EXIT_OK, EXIT_FAILED = 0, 1

# Flags whose value is a boolean, Go style: `--flag`, `--flag=true`, `--flag=false`.
BOOL_FLAGS = ("--no-arch-os-fail", "--tls-verify", "--part", "--debug", "--dry-run")
# Flags taking a comma-separated list; repeating the flag adds to the list.
LIST_FLAGS = ("-a", "--arch", "--os")
# Config keys -> the flags that set them, for error messages.
FLAG_OF_KEY = {
    "file": "-f/--file",
    "source": "-s/--source",
    "arch": "-a/--arch",
    "os": "--os",
    "no_arch_os_fail": "--no-arch-os-fail",
    "failed": "-o/--failed",
    "tls_verify": "--tls-verify",
    "cert_dir": "--cert-dir",
    "retry_times": "--retry-times",
    "retry_delay": "--retry-delay",
    "timeout": "--timeout",
    "cache": "--cache",
    "destination": "-d/--destination",
    "compress": "-c/--compress",
    "part": "--part",
    "part_size": "--part-size",
}
_GO_TRUE = frozenset({"1", "t", "true"})
_GO_FALSE = frozenset({"0", "f", "false"})


class UsageError(Exception):
    """A bad command line; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------
# Output


def say(text: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    stream.write(text + "\n")
    stream.flush()


def warn(text: str) -> None:
    say(f"WARNING: {text}")


def error(text: str) -> None:
    for line in text.splitlines() or [""]:
        say(f"ERROR: {line}")


# ---------------------------------------------------------------------------------------------
# Command line


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


def normalise_argv(argv: Sequence[str]) -> list[str]:
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
        if word in BOOL_FLAGS:
            result.append(f"{word}=true")
            continue
        name, equals, value = word.partition("=")
        if name in LIST_FLAGS:
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
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


def schema_defaults() -> dict[str, Any]:
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    return {key: spec["default"] for key, spec in schema["properties"].items() if "default" in spec}


def _default_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


DESCRIPTION = """\
Save the images of an image list (rancher-images.txt format: one NAME[:TAG] per line) into an
archive that `hangar load` v1.6 reads. Takes the flags of `hangar save` v1.6 and runs this
project's Snakemake workflow; re-running the same command resumes an interrupted or partly
failed save (saved images are kept in the cache)."""

EPILOG = f"""\
boolean flags take Go-style values: --tls-verify=false, --part=true; a bare flag means true.
Comma lists tolerate spaces: -a "amd64, arm64".

environment:
  SOURCE_REGISTRY      registry used as -s/--source when the flag is absent
  SOURCE_USERNAME      with SOURCE_PASSWORD: credentials for the source registry
  SOURCE_PASSWORD      (read by the save jobs; never written to a file or a log)
  REGISTRY_AUTH_FILE   skopeo auth file used when SOURCE_USERNAME/SOURCE_PASSWORD are unset

Snakemake options after `--` are passed on unchanged, e.g. to run on a cluster:
  {PROGRAM} save -f list.txt -- --profile <checkout>/profiles/slurm (a copy you edited)

exit status: 0 when at least one image was saved (failed images are listed in the failed file
and summarised at the end); 1 when nothing was saved, on bad flags or when skopeo is missing;
130/143 when interrupted (run the same command again to resume)."""


def build_parser() -> argparse.ArgumentParser:
    defaults = schema_defaults()

    def default(key: str) -> str:
        return f" (default {_default_text(defaults[key])})"

    parser = _Parser(
        prog=f"{PROGRAM} save",
        usage=f"{PROGRAM} save -f FILE [-d DESTINATION] [flags] [-- SNAKEMAKE_OPTIONS]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        add_help=False,
    )
    flags = parser.add_argument_group("hangar v1.6 flags")
    flags.add_argument(
        "-f", "--file", metavar="FILE", help="image list file (the format should be NAME[:TAG])"
    )
    flags.add_argument(
        "-d",
        "--destination",
        metavar="DEST",
        help="file name of the archive; without a '.' the format's suffix is appended "
        "(default saved-images.tar.gz, .tar.zstd, or saved-images for -c dir)",
    )
    flags.add_argument(
        "-s",
        "--source",
        metavar="REGISTRY",
        help="override the source registry named in the image list (default $SOURCE_REGISTRY)",
    )
    flags.add_argument(
        "-a",
        "--arch",
        action="append",
        metavar="LIST",
        help="architectures to save" + default("arch"),
    )
    flags.add_argument(
        "--os", action="append", metavar="LIST", help="operating systems to save" + default("os")
    )
    flags.add_argument(
        "--no-arch-os-fail",
        nargs="?",
        const=True,
        type=go_bool,
        help="count an image as failed when no platform matches --arch/--os (default false)",
    )
    flags.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help=f"images copied in parallel, {MIN_JOBS}-{MAX_JOBS} (default {DEFAULT_JOBS}; hangar's "
        "default is 1, but copies wait on the network, and a few at once are much faster "
        "without tripping registry rate limits)",
    )
    flags.add_argument(
        "--part", nargs="?", const=True, type=go_bool, help="split the archive into parts"
    )
    flags.add_argument(
        "--part-size",
        metavar="SIZE",
        help="size of each part: bytes, or a number with K, M or G" + default("part_size"),
    )
    flags.add_argument(
        "-o",
        "--failed",
        "--output",
        dest="failed",
        metavar="FILE",
        help="file listing the images that could not be saved" + default("failed"),
    )
    flags.add_argument(
        "-c",
        "--compress",
        choices=("gzip", "zstd", "dir"),
        metavar="FORMAT",
        help="archive format: gzip, zstd, or dir (a plain directory)" + default("compress"),
    )
    flags.add_argument(
        "--tls-verify",
        nargs="?",
        const=True,
        type=go_bool,
        help="require HTTPS and verify certificates (default true)",
    )
    flags.add_argument(
        "--debug",
        nargs="?",
        const=True,
        type=go_bool,
        help="show Snakemake's output and the skopeo commands of each image",
    )
    flags.add_argument("-h", "--help", action="help", help="show this help and exit")
    extra = parser.add_argument_group("additions")
    extra.add_argument(
        "--dry-run",
        nargs="?",
        const=True,
        type=go_bool,
        help="copy nothing: show the platforms each image would save and which it lacks",
    )
    extra.add_argument(
        "--cache",
        metavar="DIR",
        help="cache folder kept between runs, to resume" + default("cache"),
    )
    extra.add_argument(
        "--retry-times",
        type=int,
        metavar="N",
        help="retries of a registry request after a transient error" + default("retry_times"),
    )
    extra.add_argument(
        "--retry-delay",
        type=float,
        metavar="SECONDS",
        help="wait before the first retry, doubled at each further one" + default("retry_delay"),
    )
    extra.add_argument(
        "--timeout",
        metavar="DURATION",
        help="longest one registry operation may take, as 90s, 10m or 1h30m; then it is "
        "retried, and the image fails" + default("timeout"),
    )
    extra.add_argument(
        "--cert-dir",
        metavar="DIR",
        help="directory of extra CA certificates (*.crt) trusted for the source registry",
    )
    return parser


@dataclass
class SaveOptions:
    """The parsed command line: the workflow config plus what only this command uses."""

    config: dict[str, Any]
    jobs: int
    debug: bool
    dry_run: bool
    snakemake_args: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def clamp_jobs(jobs: int | None) -> tuple[int, str]:
    """hangar's rule: outside 1-20 is a warning and the nearest allowed value."""
    if jobs is None:
        return DEFAULT_JOBS, ""
    clamped = min(max(jobs, MIN_JOBS), MAX_JOBS)
    if clamped != jobs:
        return clamped, f"--jobs {jobs} is outside {MIN_JOBS}-{MAX_JOBS}: using {clamped}"
    return jobs, ""


def parse_save_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> SaveOptions:
    """Parse ``hangar save`` arguments (those after ``--`` go to Snakemake unchanged)."""
    env = os.environ if environ is None else environ
    words = list(argv)
    snakemake_args: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, snakemake_args = words[:cut], words[cut + 1 :]
    try:
        args = build_parser().parse_args(normalise_argv(words))
    except UsageError as problem:
        if "unrecognized arguments" in str(problem) and any(
            word.lower() in _GO_TRUE | _GO_FALSE for word in words
        ):
            raise UsageError(
                f"{problem}: a boolean flag takes its value after '=', as in --tls-verify=false"
            ) from None
        raise
    if not args.file:
        raise UsageError("-f/--file is required: the image list to save")
    config: dict[str, Any] = {"file": args.file}
    source = args.source if args.source is not None else env.get("SOURCE_REGISTRY", "")
    if source:
        config["source"] = source.strip()
    for key in ("arch", "os"):
        values = getattr(args, key)
        if values is not None:
            config[key] = split_list(values)
    plain = {
        "destination": args.destination,
        "failed": args.failed,
        "compress": args.compress,
        "part_size": args.part_size,
        "cache": args.cache,
        "cert_dir": args.cert_dir,
        "retry_times": args.retry_times,
        "retry_delay": args.retry_delay,
        "timeout": args.timeout,
        "no_arch_os_fail": args.no_arch_os_fail,
        "tls_verify": args.tls_verify,
        "part": args.part,
    }
    config.update({key: value for key, value in plain.items() if value is not None})
    jobs, jobs_warning = clamp_jobs(args.jobs)
    return SaveOptions(
        config=config,
        jobs=jobs,
        debug=bool(args.debug),
        dry_run=bool(args.dry_run),
        snakemake_args=snakemake_args,
        warnings=[jobs_warning] if jobs_warning else [],
    )


def _flag_message(key: str, message: str) -> str:
    return f"{FLAG_OF_KEY.get(key, key)}: {message}"


def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in the schema's defaults and validate, as the workflow will; errors name the flag."""
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    full = {**schema_defaults(), **config}
    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for problem in sorted(validator.iter_errors(full), key=lambda e: list(e.absolute_path)):
        key = str(problem.absolute_path[0]) if problem.absolute_path else ""
        problems.append(_flag_message(key, problem.message))
    if problems:
        raise ConfigError("\n".join(problems))
    return full


def check_config(config: dict[str, Any]) -> tuple[Settings, list[ListEntry]]:
    """Everything the workflow would reject, checked before it starts: one line per problem."""
    try:
        settings = Settings.from_config(config)
    except ConfigError as problem:
        key, _, message = str(problem).partition(": ")
        text = _flag_message(key, message) if key in FLAG_OF_KEY else str(problem)
        raise ConfigError(text) from None
    if settings.cert_dir and not Path(settings.cert_dir).is_dir():
        raise ConfigError(_flag_message("cert_dir", f"{settings.cert_dir} is not a directory"))
    entries = read_image_list(settings.file, settings.source)
    return settings, entries


def credential_warnings(environ: Mapping[str, str]) -> list[str]:
    user, password = environ.get("SOURCE_USERNAME", ""), environ.get("SOURCE_PASSWORD", "")
    if bool(user) != bool(password):
        given, missing = ("SOURCE_USERNAME", "SOURCE_PASSWORD")
        if password:
            given, missing = missing, given
        return [f"{given} is set but {missing} is not: no credentials are used"]
    return []


# ---------------------------------------------------------------------------------------------
# Dry run


def dry_run(settings: Settings, entries: Sequence[ListEntry], jobs: int) -> int:
    """``hangar plan``'s table and totals (manifests only: nothing is copied)."""
    plan = plan_module.make_plan(settings, entries, jobs)
    for line in plan_module.table_lines(plan):
        say(line.rstrip(), sys.stdout)
    for line in plan_module.summary_lines(plan):
        say(line)
    if not any(image.state == "save" for image in plan.images):
        error("no image would be saved")
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Running the workflow


def run_lock_holder(cache: Path) -> str | None:
    """Who holds the workflow's run lock on this cache (``pid N``), or None when it is free."""
    path = cache / STATE_DIR / "run.lock"
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def write_config_file(path: Path, config: Mapping[str, Any]) -> None:
    header = (
        f"# Written by `{PROGRAM} save` from its flags: the workflow config of the last run.\n"
        "# Same run by hand: snakemake --snakefile <checkout>/Snakefile --configfile <this file>\n"
    )
    write_atomic(path, header + yaml.safe_dump(dict(config), sort_keys=False))


CLUSTER_OPTIONS = ("--profile", "--executor", "-e")


def snakemake_command(config_path: Path, jobs: int, extra: Sequence[str]) -> list[str]:
    """The Snakemake call; with a profile or executor after ``--``, its job counts apply."""
    on_cluster = any(word.split("=")[0] in CLUSTER_OPTIONS for word in extra)
    counts = [] if on_cluster else ["--cores", str(jobs), "--jobs", str(jobs)]
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(Path.cwd()),
        "--configfile",
        str(config_path),
        *counts,
        *extra,
    ]


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM (a graceful stop) if this command dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SnakemakeRun:
    """One Snakemake child writing straight to the log file, so the log stays complete even if
    this command dies; ``follow`` reads what was added (and echoes it with ``echo``)."""

    def __init__(self, command: Sequence[str], log_path: Path, echo: bool, append: bool) -> None:
        self.command = list(command)
        self.echo = echo
        self.stale_lock = False
        self.signals: list[int] = []
        self._pending = b""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab" if append else "wb") as log:
            self._reader = log_path.open("rb")
            self._reader.seek(log.tell())
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )

    def follow(self) -> None:
        data = self._pending + self._reader.read()
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if STALE_LOCK_MARKER in line:
                self.stale_lock = True
            if self.echo:
                sys.stderr.write(line.decode(errors="replace") + "\n")
        if self.echo:
            sys.stderr.flush()

    def forward(self, signum: int) -> None:
        """Pass a signal on, as a terminal would.

        SIGINT goes to Snakemake's whole process group, jobs included (Snakemake waits for its
        jobs to die, as after Ctrl-C); SIGTERM and SIGHUP go to Snakemake alone as SIGTERM: no
        new jobs, running ones finish. A third signal kills the group.
        """
        self.signals.append(signum)
        if self.process.poll() is not None:
            return
        try:
            if len(self.signals) >= 3:
                os.killpg(self.process.pid, signal.SIGKILL)
            elif signum == signal.SIGINT:
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def wait(self, tick: Callable[[], None] | None = None) -> int:
        while True:
            try:
                returncode = self.process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                self.follow()
                if tick is not None:
                    tick()
        self._pending += b"\n"
        self.follow()
        self._reader.close()
        return returncode


@dataclass
class RunContext:
    options: SaveOptions
    settings: Settings
    entries: list[ListEntry]
    config_path: Path
    log_path: Path


_FAILED_RULE = re.compile(r"^Error in rule (\S+):")
_RULE_LOG = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?$")
_RAISED_IN_FILE = re.compile(r'^\w+ in file ".*", line \d+:$')
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(?:Error|Exception): \S")
_NOT_A_REASON = ("At least one job did not complete successfully.",)


def explain_failure(log_text: str, returncode: int) -> str:
    """One line saying why Snakemake failed, from its output and the failed job's log."""
    lines = log_text.splitlines()
    rule = job_log = ""
    for number, line in enumerate(lines):
        if match := _FAILED_RULE.match(line):
            rule = match.group(1)
            for detail in lines[number + 1 : number + 12]:
                if log_match := _RULE_LOG.match(detail):
                    job_log = log_match.group(1).split(",")[0].strip()
                    break
            break
    reason = (
        (_job_log_reason(Path(job_log)) if job_log else "")
        or _raised_in_workflow(lines)
        or _workflow_error(lines)
        or next((line.strip() for line in reversed(lines) if _EXCEPTION_LINE.match(line)), "")
        or f"Snakemake exited with status {returncode}"
    )
    prefix = f"step {rule} failed: " if rule else ""
    suffix = f" (log: {job_log})" if job_log else ""
    return prefix + reason + suffix


def _raised_in_workflow(lines: Sequence[str]) -> str:
    """The message of ``SomeError in file "…", line N:`` (Snakemake's report of an exception
    raised by workflow code, when parsing or in a job)."""
    for number, line in enumerate(lines):
        if _RAISED_IN_FILE.match(line):
            for text in lines[number + 1 : number + 4]:
                if text.strip() and not text.startswith("  File "):
                    return text.strip()
    return ""


def _workflow_error(lines: Sequence[str]) -> str:
    for number, line in enumerate(lines):
        if line.strip() == "WorkflowError:":
            for text in lines[number + 1 : number + 3]:
                if text.strip() and text.strip() not in _NOT_A_REASON:
                    return text.strip()
    return ""


def _job_log_reason(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        if line.startswith("ERROR") or _EXCEPTION_LINE.match(line):
            return line.strip()
    return ""


def _job_log(image_id: str) -> str:
    try:
        return (JOB_LOG_DIR / f"{image_id}.log").read_text(errors="replace")
    except OSError:
        return ""


def missing_archive(settings: Settings) -> str:
    """What is missing of the archive a finished run should have written ("" when whole)."""
    destination = settings.destination
    checksums = destination.with_name(f"{destination.name}.sha256")
    if not checksums.exists():
        return f"{checksums} is missing"
    if settings.compress == "dir":
        return "" if destination.is_dir() else f"the directory {destination} is missing"
    names = [line.split("  ", 1)[-1] for line in checksums.read_text().splitlines() if line]
    parts = [name for name in names if name != destination.name] or [destination.name]
    for name in parts:
        if not (destination.parent / name).is_file():
            return f"{destination.parent / name} is missing"
    return ""


def archive_description(settings: Settings) -> str:
    destination = settings.destination
    if settings.compress == "dir":
        return f"archive: directory {destination}"
    if settings.part_size is None:
        size = destination.stat().st_size if destination.exists() else 0
        return f"archive: {destination} ({human_size(size)}), checksum in {destination}.sha256"
    parts: list[Path] = []
    while (part := destination.with_name(f"{destination.name}.part{len(parts)}")).exists():
        parts.append(part)
    size = sum(part.stat().st_size for part in parts)
    return (
        f"archive: {destination}.part0 … .part{max(len(parts) - 1, 0)} ({len(parts)} parts, "
        f"{human_size(size)}), checksums in {destination}.sha256"
    )


def run_workflow(context: RunContext) -> int:
    options, settings = context.options, context.settings
    ids = [entry.ref.image_id for entry in context.entries]
    watcher = StatusWatcher(settings.cache, ids)
    started_wall, started = time.time(), time.monotonic()
    live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not options.debug
    display: Display = (
        LiveDisplay(sys.stderr, str(settings.destination), started)
        if live
        else PlainDisplay(sys.stderr, str(settings.destination), show_job_logs=options.debug)
    )

    def tick() -> None:
        for image_id, status in watcher.poll():
            display.image_done(status, _job_log(image_id) if options.debug else "")
        tally = watcher.tally()
        phase: Phase = "archive" if tally.done == tally.total else "save"
        archived = archive_bytes(settings.destination, started_wall) if phase == "archive" else 0
        display.update(tally, phase, archived)

    base = snakemake_command(context.config_path, options.jobs, options.snakemake_args)
    if options.debug:
        display.message(f"running: {shlex.join(base)}")
    current: list[SnakemakeRun] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if current:
            current[0].forward(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        run = SnakemakeRun(base, context.log_path, options.debug, append=False)
        current[:] = [run]
        returncode = run.wait(tick)
        stale = returncode != 0 and run.stale_lock and not run.signals
        # Snakemake's lock files outlive a killed run; ours (an flock) does not: when no live
        # run holds the cache, the lock is stale.
        if stale and run_lock_holder(settings.cache) is None:
            display.message("removing a stale Snakemake lock left by a killed run")
            unlock = SnakemakeRun([*base, "--unlock"], context.log_path, options.debug, True)
            current[:] = [unlock]
            unlock.wait()
            run = SnakemakeRun(base, context.log_path, options.debug, append=False)
            current[:] = [run]
            returncode = run.wait(tick)
        signals = run.signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    tick()
    display.close()
    return report(context, watcher, returncode, signals, time.monotonic() - started)


def report(
    context: RunContext,
    watcher: StatusWatcher,
    returncode: int,
    signals: Sequence[int],
    seconds: float,
) -> int:
    settings = context.settings
    tally = watcher.tally(final=True)
    statuses = watcher.statuses()
    for line in summary_lines(tally, statuses, seconds, str(settings.failed)):
        say(line)
    if signals:
        error(
            "interrupted: run the same command again to resume "
            f"({tally.saved} image(s) are saved in {settings.cache})"
        )
        return 128 + signals[0]
    log_text = context.log_path.read_text(errors="replace") if returncode != 0 else ""
    if tally.saved == 0 and (returncode == 0 or "nothing was saved" in log_text):
        error(f"no image was saved (see {settings.failed} and the reasons above)")
        return EXIT_FAILED
    if returncode != 0:
        error(explain_failure(log_text, returncode))
        error(f"the save did not finish; Snakemake's log: {context.log_path}")
        return EXIT_FAILED
    if problem := missing_archive(settings):
        error(f"the save finished but {problem}: run the same command again to write it")
        return EXIT_FAILED
    say(archive_description(settings))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Entry points


def save_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        options = parse_save_args(argv, env)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except UsageError as problem:
        error(f"{problem} (see '{PROGRAM} save --help')")
        return EXIT_FAILED
    for text in options.warnings + credential_warnings(env):
        warn(text)
    if shutil.which("skopeo") is None:
        error("skopeo not found on PATH: install it (apt-get install skopeo)")
        return EXIT_FAILED
    try:
        config = complete_config(options.config)
        settings, entries = check_config(config)
    except (ConfigError, ImageListError) as problem:
        error(str(problem))
        return EXIT_FAILED
    if options.dry_run:
        if options.snakemake_args:
            warn("--dry-run ignores the Snakemake options after '--'")
        try:
            return dry_run(settings, entries, options.jobs)
        except KeyboardInterrupt:
            error("interrupted: nothing was written")
            return 128 + signal.SIGINT
    holder = run_lock_holder(settings.cache)
    if holder is not None:
        error(f"{settings.cache} is in use by a running save ({holder}); wait for it to finish")
        return EXIT_FAILED
    state = settings.cache / STATE_DIR
    config_path = (state / CONFIG_NAME).absolute()
    try:
        write_config_file(config_path, config)
    except OSError as problem:
        error(f"cannot write {config_path}: {problem.strerror}")
        return EXIT_FAILED
    context = RunContext(options, settings, entries, config_path, state / LOG_NAME)
    return run_workflow(context)


TOOL_MODULES = {
    "plan": "hangar.save.plan",
    "report": "hangar.save.report",
    "verify": "hangar.verify",
}

TOP_HELP = f"""\
usage: {PROGRAM} [--debug] COMMAND [flags]

Save container images for air-gapped networks, compatible with hangar v1.6 archives.

commands:
  save        save the images of an image list into an archive ({PROGRAM} save --help)
  plan        resolve a list without downloading: sizes to fetch, free disk, missing platforms
  verify      check an archive (parts, checksums, every blob) without extracting it
  report      write save-report.html and save-report.csv for a cache

flags:
  --debug     show Snakemake's output and the skopeo commands
  --version   show the version and exit
  -h, --help  show this help and exit"""


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    global_flags: list[str] = []
    while words and words[0].startswith("-"):
        word = words.pop(0)
        if word in ("-h", "--help"):
            say(TOP_HELP, sys.stdout)
            return EXIT_OK
        if word == "--version":
            from importlib.metadata import version

            say(f"{PROGRAM} {version('hangar-save')}", sys.stdout)
            return EXIT_OK
        if word == "--debug" or word.startswith("--debug="):
            global_flags.append(word)
            continue
        error(f"unknown flag {word!r} (see '{PROGRAM} --help')")
        return EXIT_FAILED
    if not words:
        say(TOP_HELP, sys.stdout)
        return EXIT_OK
    command, rest = words[0], words[1:]
    if command in TOOL_MODULES:
        from importlib import import_module

        tool_main: Callable[[list[str]], int] = import_module(TOOL_MODULES[command]).main
        return tool_main(rest)
    if command != "save":
        error(f"unknown command {command!r} (see '{PROGRAM} --help')")
        return EXIT_FAILED
    if global_flags:
        cut = rest.index("--") if "--" in rest else len(rest)
        rest = [*rest[:cut], *global_flags, *rest[cut:]]
    return save_command(rest)


if __name__ == "__main__":
    sys.exit(main())
