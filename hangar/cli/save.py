"""``hangar save``: the flags of hangar v1.6 save, turned into a workflow config and run.

The config file (``<cache>/.hangar/cli-config.yaml``) holds no credentials: SOURCE_USERNAME,
SOURCE_PASSWORD and REGISTRY_AUTH_FILE stay in the environment, where the save jobs read them.
Progress is read from the files the image jobs write (``hangar.save.watch``), shown by
``hangar.cli.progress``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hangar.save.plan as plan_module
from hangar.cli.flags import (
    _GO_FALSE,
    _GO_TRUE,
    EXIT_FAILED,
    EXIT_OK,
    HELP_FLAG,
    MAX_JOBS,
    MIN_JOBS,
    PROGRAM,
    TLS_VERIFY_FLAG,
    Flag,
    UsageError,
    additions,
    clamp_jobs,
    command_parser,
    default_help,
    error,
    given_config,
    naming_flags,
    normalise_argv,
    say,
    warn,
)
from hangar.cli.progress import (
    archive_description,
    make_display,
    missing_archive,
    summary_lines,
)
from hangar.cli.snakemake import (
    LOG_NAME,
    explain_failure,
    run_snakemake,
    snakemake_command,
    write_config_file,
)
from hangar.imagelist import ImageListError, ListEntry, SkippedLine, load_image_list
from hangar.layout import state_path
from hangar.runlock import run_lock_holder
from hangar.save.watch import StatusWatcher, archive_bytes
from hangar.settings import ConfigError, Settings, complete_config
from hangar.status import unoffered_warning

CONFIG_NAME = "cli-config.yaml"
JOB_LOG_DIR = Path("logs") / "save"  # the save rule's log: directive, relative to the run dir
DEFAULT_JOBS = 4
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


SAVE_FLAGS = (
    Flag("-f, --file FILE", "image list file (the format should be NAME[:TAG])", computed=True),
    Flag(
        "-d, --destination DEST",
        "file name of the archive; without a '.' the format's suffix is appended "
        "(default saved-images.tar.gz, .tar.zstd, or saved-images for -c dir)",
    ),
    Flag(
        "-s, --source REGISTRY",
        "override the source registry named in the image list (default $SOURCE_REGISTRY)",
        computed=True,
    ),
    Flag("-a, --arch LIST", "architectures to save" + default_help("arch"), "list"),
    Flag("--os LIST", "operating systems to save" + default_help("os"), "list"),
    Flag(
        "--no-arch-os-fail",
        "count an image as failed when no platform matches --arch/--os (default false)",
        "bool",
    ),
    Flag(
        "-j, --jobs N",
        f"images copied in parallel, {MIN_JOBS}-{MAX_JOBS} (default {DEFAULT_JOBS}; hangar's "
        "default is 1, but copies wait on the network, and a few at once are much faster "
        "without tripping registry rate limits)",
        "int",
        key="",
    ),
    Flag("--part", "split the archive into parts", "bool"),
    Flag(
        "--part-size SIZE",
        "size of each part: bytes, or a number with K, M or G" + default_help("part_size"),
    ),
    Flag(
        "-o, --failed, --output FILE",
        "file listing the images that could not be saved" + default_help("failed"),
    ),
    Flag(
        "-c, --compress FORMAT",
        "archive format: gzip, zstd, or dir (a plain directory)" + default_help("compress"),
        choices=("gzip", "zstd", "dir"),
    ),
    TLS_VERIFY_FLAG,
    Flag("--debug", "show Snakemake's output and the skopeo commands of each image", "bool", ""),
    HELP_FLAG,
    *additions(
        Flag(
            "--dry-run",
            "copy nothing: show the platforms each image would save and which it lacks",
            "bool",
            key="",
        ),
        Flag(
            "--strict",
            "refuse a list with invalid lines, before any download (default: skip each with "
            "a warning, as hangar does)",
            "bool",
        ),
        Flag(
            "--skip-preflight",
            "start copying without the checks made first (arch/os names, one probe of each "
            "registry, the credentials given for it); config: preflight: false",
            "bool",
            key="preflight",
            computed=True,
        ),
        Flag(
            "--ignore-free-space",
            "go on when the disk looks too small for an image or the archive (default: stop, "
            "with the figures); config: ignore_free_space: true",
            "bool",
        ),
        Flag("--cache DIR", "cache folder kept between runs, to resume" + default_help("cache")),
        Flag(
            "--retry-times N",
            "retries of a registry request after a transient error" + default_help("retry_times"),
            "int",
        ),
        Flag(
            "--retry-delay SECONDS",
            "wait before the first retry, doubled at each further one"
            + default_help("retry_delay"),
            "float",
        ),
        Flag(
            "--timeout DURATION",
            "longest one registry operation may take, as 90s, 10m or 1h30m; then it is "
            "retried, and the image fails" + default_help("timeout"),
        ),
        Flag(
            "--cert-dir DIR",
            "directory of extra CA certificates (*.crt) trusted for the source registry",
        ),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    usage = "-f FILE [-d DESTINATION] [flags] [-- SNAKEMAKE_OPTIONS]"
    return command_parser("save", usage, DESCRIPTION, EPILOG, SAVE_FLAGS)


@dataclass
class SaveOptions:
    """The parsed command line: the workflow config plus what only this command uses."""

    config: dict[str, Any]
    jobs: int
    debug: bool
    dry_run: bool
    snakemake_args: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_save_args(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> SaveOptions:
    """Parse ``hangar save`` arguments (those after ``--`` go to Snakemake unchanged)."""
    env = os.environ if environ is None else environ
    words = list(argv)
    snakemake_args: list[str] = []
    if "--" in words:
        cut = words.index("--")
        words, snakemake_args = words[:cut], words[cut + 1 :]
    try:
        args = build_parser().parse_args(normalise_argv(words, SAVE_FLAGS))
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
    config.update(given_config(args, SAVE_FLAGS))
    if args.skip_preflight is not None:
        config["preflight"] = not args.skip_preflight
    jobs, jobs_warning = clamp_jobs(args.jobs, DEFAULT_JOBS)
    return SaveOptions(
        config=config,
        jobs=jobs,
        debug=bool(args.debug),
        dry_run=bool(args.dry_run),
        snakemake_args=snakemake_args,
        warnings=[jobs_warning] if jobs_warning else [],
    )


def complete_flags_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with the schema's defaults, validated as the workflow will; errors name the
    flag."""
    try:
        return complete_config(config)
    except ConfigError as problem:
        raise naming_flags(problem, SAVE_FLAGS) from None


def check_config(config: dict[str, Any]) -> tuple[Settings, list[ListEntry], list[SkippedLine]]:
    """Everything the workflow would reject, checked before it starts: one line per problem.

    Returns the settings, the list's images and its invalid lines (skipped unless strict)."""
    try:
        settings = Settings.from_config(config)
    except ConfigError as problem:
        raise naming_flags(problem, SAVE_FLAGS) from None
    if settings.cert_dir and not Path(settings.cert_dir).is_dir():
        missing = ConfigError(f"cert_dir: {settings.cert_dir} is not a directory")
        raise naming_flags(missing, SAVE_FLAGS)
    image_list = load_image_list(settings.file, settings.source, settings.strict)
    return settings, image_list.entries, image_list.skipped


def credential_warnings(environ: Mapping[str, str]) -> list[str]:
    user, password = environ.get("SOURCE_USERNAME", ""), environ.get("SOURCE_PASSWORD", "")
    if bool(user) != bool(password):
        given, missing = ("SOURCE_USERNAME", "SOURCE_PASSWORD")
        if password:
            given, missing = missing, given
        return [f"{given} is set but {missing} is not: no credentials are used"]
    return []


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


@dataclass
class RunContext:
    options: SaveOptions
    settings: Settings
    entries: list[ListEntry]
    config_path: Path
    log_path: Path
    invalid: list[SkippedLine] = field(default_factory=list)


def _job_log(image_id: str) -> str:
    try:
        return (JOB_LOG_DIR / f"{image_id}.log").read_text(errors="replace")
    except OSError:
        return ""


def run_workflow(context: RunContext) -> int:
    options, settings = context.options, context.settings
    ids = [entry.ref.image_id for entry in context.entries]
    watcher = StatusWatcher(settings.cache, ids)
    started_wall, started = time.time(), time.monotonic()
    live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not options.debug
    display = make_display(sys.stderr, str(settings.destination), live, every_image=True)

    def tick() -> None:
        for image_id, status in watcher.poll():
            display.image_done(status, _job_log(image_id) if options.debug else "")
        tally = watcher.tally()
        archiving = tally.done == tally.total
        archived = archive_bytes(settings.destination, started_wall) if archiving else 0
        display.update(tally, watcher.bytes(), archived)

    command = snakemake_command(context.config_path, options.jobs, options.snakemake_args)
    if options.debug:
        display.message(f"running: {shlex.join(command)}")
    outcome = run_snakemake(
        command, context.log_path, settings.cache, options.debug, tick, display.message
    )
    tick()
    display.close()
    return report(context, watcher, outcome.returncode, outcome.signals, time.monotonic() - started)


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
    lines = summary_lines(tally, statuses, seconds, str(settings.failed), invalid=context.invalid)
    if unoffered := unoffered_warning(statuses.values(), settings.arch, settings.os):
        lines.append(unoffered)
    stopped_first = returncode != 0 and not signals and not any(map(watcher.is_new, watcher.ids))
    for line in [] if stopped_first else lines:  # stopped before any image: the error says it
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
        config = complete_flags_config(options.config)
        settings, entries, invalid = check_config(config)
    except (ConfigError, ImageListError) as problem:
        error(str(problem))
        return EXIT_FAILED
    for line in invalid:
        warn(str(line))
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
    state = state_path(settings.cache)
    config_path = (state / CONFIG_NAME).absolute()
    try:
        write_config_file(config_path, config, "save")
    except OSError as problem:
        error(f"cannot write {config_path}: {problem.strerror}")
        return EXIT_FAILED
    context = RunContext(options, settings, entries, config_path, state / LOG_NAME, invalid)
    return run_workflow(context)
