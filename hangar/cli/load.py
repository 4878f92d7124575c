"""``hangar load`` and ``hangar load-validate``: hangar v1.6's flags, the receiving side.

``load`` writes a load config (``<load cache>/.hangar/cli-config.yaml``, no credentials:
DEST_USERNAME, DEST_PASSWORD and REGISTRY_AUTH_FILE stay in the environment) and runs the workflow:
extract once, one push job per image. ``load-validate`` extracts (once) and checks the
destination in this process; it pushes nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hangar.cli.flags import (
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
    error,
    given_config,
    naming_flags,
    normalise_argv,
    say,
    warn,
)
from hangar.cli.snakemake import (
    LOG_NAME,
    explain_failure,
    run_snakemake,
    snakemake_command,
    write_config_file,
)
from hangar.layout import state_path, status_dir
from hangar.load.extract import ExtractError, extract, is_extracted
from hangar.load.items import SavedListError, read_saved_list
from hangar.load.push import LoadStatus
from hangar.load.settings import LoadSettings, complete_load_config
from hangar.load.validate import validate, write_failed
from hangar.runlock import RunLockError, hold_run_lock, run_lock_holder
from hangar.settings import ConfigError

CONFIG_NAME = "cli-config.yaml"
DEFAULT_JOBS = 4
FAILED_DEFAULT = {"load": "load-failed.txt", "load-validate": "load-validate-failed.txt"}

ENVIRONMENT = """\
environment:
  DEST_REGISTRY        registry used as -d/--destination when the flag is absent
  DEST_USERNAME        with DEST_PASSWORD: credentials for the destination registry (and Harbor's
  DEST_PASSWORD        API); never written to a file or a log
  REGISTRY_AUTH_FILE   skopeo auth file used when DEST_USERNAME/DEST_PASSWORD are unset"""

LOAD_EPILOG = f"""\
The archive is extracted once into a load cache (default hangar-load-cache/<name>-<hash>, never
saved-image-cache); re-running the same command resumes a killed load, and a finished load run
again pushes everything again (blobs the registry has are not uploaded).

{ENVIRONMENT}

exit status: 0 when at least one image was loaded (failed ones are listed in the failed file);
1 when nothing was loaded, on bad flags or a damaged archive (nothing is pushed then);
130/143 when interrupted (run the same command again to resume)."""

VALIDATE_EPILOG = f"""\
{ENVIRONMENT}

exit status: 0 when every saved platform is in the destination with its saved digest; 1 when
something is missing (listed in the failed file; hangar v1.6.1 exits 0 there) or on bad flags."""


def load_flags(command: str) -> tuple[Flag, ...]:
    """The flags of ``load`` or ``load-validate`` (which pushes nothing, so has no Harbor
    project or manifest format flags)."""
    common = (
        Flag(
            "-s, --source FILE",
            "archive to load: x.tar.gz, x.tar.zstd, x.tar.gz.part0 (or the parts' base name), "
            "or a directory",
            key="archive",
            computed=True,
        ),
        Flag(
            "-d, --destination REGISTRY",
            "destination registry (default $DEST_REGISTRY)",
            computed=True,
        ),
        Flag(
            "-c, --compress FORMAT",
            "gzip, zstd or dir (default: detected from the magic bytes, or a directory)",
            choices=("gzip", "zstd", "dir"),
        ),
        Flag(
            "--default-project NAME",
            "project (namespace) for repositories that have none (default library)",
        ),
        Flag(
            "-o, --failed FILE",
            f"file listing the failed images (default {FAILED_DEFAULT[command]})",
            computed=True,
        ),
        Flag(
            "-j, --jobs N",
            f"images in parallel, {MIN_JOBS}-{MAX_JOBS} (default {DEFAULT_JOBS})",
            "int",
            key="",
        ),
        TLS_VERIFY_FLAG,
        Flag("--debug", "show Snakemake's output and skopeo commands", "bool", key=""),
        HELP_FLAG,
        *additions(
            Flag("--cache DIR", "load cache (default hangar-load-cache/<name>-<hash>)"),
            Flag("--cert-dir DIR", "extra CA certificates (*.crt) for the destination"),
            Flag("--retry-times N", "retries after a transient error (default 3)", "int"),
            Flag("--retry-delay SECONDS", "first retry delay, doubled (default 1)", "float"),
        ),
        Flag(
            "--timeout DURATION",
            "longest one registry operation may take, as 90s, 10m or 1h30m (default 10m)",
        ),
    )
    if command == "load-validate":
        return common
    return (
        *common,
        Flag("--repo-type TYPE", "harbor: create missing projects", choices=("", "harbor")),
        Flag("--harbor-https", "use HTTPS for Harbor's API (default true)", "bool"),
        *additions(
            Flag(
                "--format v2s2",
                "convert manifests to Docker v2s2, as hangar v1.6 (changes digests)",
                choices=("v2s2",),
            ),
        ),
    )


def build_parser(command: str) -> argparse.ArgumentParser:
    validate_only = command == "load-validate"
    return command_parser(
        command,
        "-s SOURCE [-d REGISTRY] [flags]" + ("" if validate_only else " [-- SNAKEMAKE_OPTIONS]"),
        "Check that the images of an archive are in the destination registry, every saved "
        "platform with its saved digest. Pushes nothing."
        if validate_only
        else "Load the images of an archive (written by hangar save v1.6 or this project) into "
        "a registry, keeping every manifest as saved, and merge each tag with the platforms "
        "the registry already has. Runs this project's Snakemake workflow.",
        VALIDATE_EPILOG if validate_only else LOAD_EPILOG,
        load_flags(command),
    )


@dataclass
class LoadOptions:
    config: dict[str, Any]
    jobs: int
    debug: bool
    snakemake_args: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_load_args(command: str, argv: Sequence[str], environ: Mapping[str, str]) -> LoadOptions:
    words = list(argv)
    snakemake_args: list[str] = []
    if "--" in words and command == "load":
        cut = words.index("--")
        words, snakemake_args = words[:cut], words[cut + 1 :]
    args = build_parser(command).parse_args(normalise_argv(words, load_flags(command)))
    if not args.source:
        raise UsageError("-s/--source is required: the archive to load")
    destination = args.destination or environ.get("DEST_REGISTRY", "")
    if not destination.strip():
        raise UsageError("destination registry not specified: use -d or set DEST_REGISTRY")
    config: dict[str, Any] = {
        "archive": args.source,
        "destination": destination.strip(),
        "failed": args.failed or FAILED_DEFAULT[command],
        **given_config(args, load_flags(command)),
    }
    jobs, jobs_warning = clamp_jobs(args.jobs, DEFAULT_JOBS)
    return LoadOptions(
        config, jobs, bool(args.debug), snakemake_args, [jobs_warning] if jobs_warning else []
    )


def _settings(command: str, config: dict[str, Any]) -> tuple[dict[str, Any], LoadSettings]:
    try:
        full = complete_load_config(config)
        return full, LoadSettings.from_config(full)
    except ConfigError as problem:
        raise naming_flags(problem, load_flags(command)) from None


def _run(
    command: str,
    argv: Sequence[str],
    environ: Mapping[str, str] | None,
    run: Callable[[LoadOptions, dict[str, Any], LoadSettings], int],
) -> int:
    """Read and check the command line, then ``run`` it with the full config and its settings
    (unless the cache is in use); the exit status."""
    try:
        options = parse_load_args(command, argv, os.environ if environ is None else environ)
    except SystemExit as done:
        return int(done.code or 0)
    except UsageError as problem:
        error(f"{problem} (see '{PROGRAM} {command} --help')")
        return EXIT_FAILED
    if shutil.which("skopeo") is None:
        error("skopeo not found on PATH: install it (apt-get install skopeo)")
        return EXIT_FAILED
    try:
        config, settings = _settings(command, options.config)
    except ConfigError as problem:
        error(str(problem))
        return EXIT_FAILED
    for text in options.warnings + list(settings.source.warnings):
        warn(text)
    holder = run_lock_holder(settings.cache)
    if holder is not None:
        error(f"{settings.cache} is in use by a running load ({holder}); wait for it to finish")
        return EXIT_FAILED
    return run(options, config, settings)


def _statuses(settings: LoadSettings) -> dict[str, tuple[int, LoadStatus]]:
    """Status files by item id, with their mtime (to tell this run's from a resumed one's)."""
    found = {}
    for path in sorted(status_dir(settings.cache).glob("*.json")):
        try:
            found[path.stem] = (path.stat().st_mtime_ns, LoadStatus.read(path))
        except (OSError, ValueError, TypeError):
            continue
    return found


def load_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    return _run("load", argv, environ, _load)


def _load(options: LoadOptions, config: dict[str, Any], settings: LoadSettings) -> int:
    """Write the config and run the workflow, a line for each image as its push ends."""
    config_path = (state_path(settings.cache) / CONFIG_NAME).absolute()
    log_path = state_path(settings.cache) / LOG_NAME
    try:
        write_config_file(config_path, config, "load")
    except OSError as problem:
        error(f"cannot write {config_path}: {problem.strerror}")
        return EXIT_FAILED
    if settings.source.format != "dir" and not is_extracted(settings.source, settings.cache):
        say(f"extracting {settings.source.path} into {settings.cache}")
    earlier = {item_id: mtime for item_id, (mtime, _) in _statuses(settings).items()}
    seen: set[str] = set()
    begun = time.monotonic()

    def tick() -> None:
        for item_id, (mtime, status) in _statuses(settings).items():
            if item_id in seen or earlier.get(item_id) == mtime:
                continue
            seen.add(item_id)
            if status.state == "ok":
                say(f"loaded {status.line} -> {status.destination}")
            else:
                say(f"FAILED {status.line}: {status.reason}")

    command = snakemake_command(config_path, options.jobs, options.snakemake_args)
    if options.debug:
        say(f"running: {shlex.join(command)}")
    outcome = run_snakemake(command, log_path, settings.cache, options.debug, tick, say)
    tick()
    statuses = _statuses(settings)
    loaded = sum(status.state == "ok" for _, status in statuses.values())
    failed = len(statuses) - loaded
    resumed = sum(earlier.get(item_id) == mtime for item_id, (mtime, _) in statuses.items())
    kept = f" ({resumed} by the interrupted run)" if resumed else ""
    say(f"{loaded} image(s) loaded{kept}, {failed} failed in {time.monotonic() - begun:.0f}s")
    if outcome.signals:
        error(f"interrupted: run the same command again to resume ({loaded} image(s) loaded)")
        return 128 + outcome.signals[0]
    if failed:
        warn(f"failed images are listed in {settings.failed}")
    if outcome.returncode != 0:
        log_text = log_path.read_text(errors="replace")
        if "nothing was loaded" in log_text:
            error(f"no image was loaded (see {settings.failed} and the reasons above)")
        else:
            error(explain_failure(log_text, outcome.returncode))
            error(f"the load did not finish; Snakemake's log: {log_path}")
        return EXIT_FAILED
    return EXIT_OK


def load_validate_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    return _run("load-validate", argv, environ, _validate)


def _validate(options: LoadOptions, _config: dict[str, Any], settings: LoadSettings) -> int:
    """Extract (once, under the run lock) and check every saved platform in the destination."""
    try:
        lock = hold_run_lock(settings.cache)
        with lock:
            if settings.source.plan is not None:
                extract(settings.source, settings.cache, say)
            items = read_saved_list(settings.root)
    except (RunLockError, ExtractError, SavedListError, OSError) as problem:
        error(str(problem))
        return EXIT_FAILED
    failures = validate(
        items, settings.push, options.jobs, say if options.debug else lambda _t: None
    )
    for item, problems in failures:
        error(f"{item.line}: " + "; ".join(problems))
    write_failed(settings.failed, failures)
    if failures:
        error(
            f"{len(failures)} of {len(items)} image(s) not validated: listed in {settings.failed}"
        )
        return EXIT_FAILED
    say(f"{len(items)} image(s) validated in {settings.push.registry}")
    return EXIT_OK
