"""The `hangar save` command: flags, environment, progress output and exit status.

Flag parsing and the progress display are checked in-process; everything else drives the
installed `hangar` command, against the session's local registries where images are involved.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml
from support.images import LINUX_AMD64, PushedImage, push_image
from support.registry import Registry, clean_env

from hangar.cli import save as cli
from hangar.cli.flags import Flag, go_bool
from hangar.cli.load import build_parser as build_load_parser
from hangar.cli.load import load_flags, load_validate_command
from hangar.cli.progress import LiveProgress, PlainProgress, image_line, summary_lines
from hangar.cli.snakemake import explain_failure
from hangar.layout import saved_list_path, status_dir
from hangar.load.settings import load_schema
from hangar.runlock import hold_run_lock, run_lock_holder
from hangar.save.watch import Bytes, StatusWatcher, Tally
from hangar.settings import ConfigError, Settings, schema
from hangar.status import ImageStatus, SavedPlatform, write_atomic

HANGAR = Path(sysconfig.get_path("scripts")) / "hangar"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def run_hangar(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed command, in `workdir`, without proxies or the caller's SOURCE_* settings."""
    if not HANGAR.exists():
        pytest.skip(f"`hangar` is not installed in {HANGAR.parent} (pip install -e .)")
    environment = {k: v for k, v in clean_env().items() if not k.startswith("SOURCE_")}
    environment.update(env or {})
    return subprocess.run(
        [str(HANGAR), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def write_list(workdir: Path, *lines: str, name: str = "images.txt") -> str:
    (workdir / name).write_text("".join(f"{line}\n" for line in lines))
    return name


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR")]


# ---------------------------------------------------------------------------------------------
# Flags, in-process


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("1", True), ("t", True), ("false", False), ("0", False)],
)
def test_boolean_values_are_read_as_go_does(text: str, value: bool) -> None:
    assert go_bool(text) is value


def test_defaults_come_from_the_schema() -> None:
    options = cli.parse_save_args(["-f", "list.txt"], environ={})
    assert options.config == {"file": "list.txt"}
    assert (options.jobs, options.debug, options.dry_run) == (cli.DEFAULT_JOBS, False, False)
    config = cli.complete_flags_config(options.config)
    assert config["arch"] == ["amd64", "arm64"]
    assert config["os"] == ["linux", "windows"]
    expected = {
        "source": "",
        "compress": "gzip",
        "destination": "",
        "failed": "save-failed.txt",
        "cache": "saved-image-cache",
        "tls_verify": True,
        "no_arch_os_fail": False,
        "part": False,
        "part_size": "2G",
        "retry_times": 3,
    }
    assert {key: config[key] for key in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        "-f l.txt -d out -s reg.example:5000 -a s390x -o bad.txt -c zstd -j 7",
        "--file=l.txt --destination=out --source=reg.example:5000 --arch=s390x "
        "--output=bad.txt --compress=zstd --jobs=7",
        "--file l.txt --destination out --source reg.example:5000 --arch s390x "
        "--failed bad.txt --compress zstd --jobs 7",
    ],
    ids=["short", "long=value", "long value"],
)
def test_hangar_flags_map_to_the_config(argv: str) -> None:
    extra = "--os linux --no-arch-os-fail --part --part-size 1M --tls-verify=false --debug"
    extra += " --cache c --retry-times 5 --retry-delay 0.5 --cert-dir certs --dry-run"
    options = cli.parse_save_args([*argv.split(), *extra.split(), "--", "-n", "--quiet"], {})
    assert options.config == {
        "file": "l.txt",
        "destination": "out",
        "source": "reg.example:5000",
        "arch": ["s390x"],
        "os": ["linux"],
        "failed": "bad.txt",
        "compress": "zstd",
        "no_arch_os_fail": True,
        "part": True,
        "part_size": "1M",
        "tls_verify": False,
        "cache": "c",
        "retry_times": 5,
        "retry_delay": 0.5,
        "cert_dir": "certs",
    }
    assert (options.jobs, options.debug, options.dry_run) == (7, True, True)
    assert options.snakemake_args == ["-n", "--quiet"]


@pytest.mark.parametrize(
    ("words", "value"),
    [
        (["--tls-verify"], True),
        (["--tls-verify=false"], False),
        (["--tls-verify=0"], False),
        (["--tls-verify=FALSE", "--tls-verify"], True),
    ],
)
def test_boolean_flags_take_go_style_values(words: list[str], value: bool) -> None:
    assert cli.parse_save_args(["-f", "l", *words], {}).config["tls_verify"] is value


@pytest.mark.parametrize(
    "words",
    [
        ["-a", "amd64, arm64"],
        ["-a", "amd64,", "arm64"],
        ["--arch= amd64 ,arm64,"],
        ["--arch", "amd64", "--arch", "arm64"],
    ],
)
def test_comma_lists_tolerate_spaces_and_repeats(words: list[str]) -> None:
    assert cli.parse_save_args(["-f", "l", *words], {}).config["arch"] == ["amd64", "arm64"]


def test_source_registry_comes_from_the_environment_unless_given() -> None:
    env = {"SOURCE_REGISTRY": "mirror.example:5000"}
    assert cli.parse_save_args(["-f", "l"], env).config["source"] == "mirror.example:5000"
    given = cli.parse_save_args(["-f", "l", "-s", "other.example"], env)
    assert given.config["source"] == "other.example"


@pytest.mark.parametrize(("jobs", "used"), [(0, 1), (-3, 1), (1, 1), (20, 20), (21, 20)])
def test_jobs_outside_1_to_20_are_clamped_with_a_warning(jobs: int, used: int) -> None:
    options = cli.parse_save_args(["-f", "l", "-j", str(jobs)], {})
    assert options.jobs == used
    assert bool(options.warnings) == (jobs != used)


@pytest.mark.parametrize(
    ("flags", "destination"),
    [
        ([], "saved-images.tar.gz"),
        (["-c", "zstd"], "saved-images.tar.zstd"),
        (["-c", "dir"], "saved-images"),
        (["-d", "load"], "load.tar.gz"),
        (["-d", "load", "-c", "zstd"], "load.tar.zstd"),
        (["-d", "out.tar", "-c", "zstd"], "out.tar"),
        (["-d", "exported", "-c", "dir"], "exported"),
    ],
)
def test_destination_defaults_and_suffixes(
    flags: list[str], destination: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = cli.complete_flags_config(cli.parse_save_args(["-f", "l", *flags], {}).config)
    assert str(Settings.from_config(config).destination) == destination


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--part", "--part-size", "12X"], "--part-size: invalid size '12X'"),
        (["--retry-times", "30"], "--retry-times: 30 is greater than the maximum of 20"),
        (["-a", "AMD64"], "-a/--arch: 'AMD64' does not match"),
        (["--cache", "out", "-d", "out/x.tgz"], "-d/--destination:"),
        (["--cert-dir", "no-such-dir"], "--cert-dir: no-such-dir is not a directory"),
    ],
)
def test_bad_values_are_reported_with_the_flag(
    flags: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_list(tmp_path, "nginx:1.25", name="l")
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        cli.check_config(
            cli.complete_flags_config(cli.parse_save_args(["-f", "l", *flags], {}).config)
        )


@pytest.mark.parametrize(
    ("flags", "properties"),
    [
        (cli.SAVE_FLAGS, schema()["properties"]),
        (load_flags("load"), load_schema()["properties"]),
        (load_flags("load-validate"), load_schema()["properties"]),
    ],
    ids=["save", "load", "load-validate"],
)
def test_every_flag_sets_a_key_of_its_schema_or_none(
    flags: tuple[Flag, ...], properties: dict[str, object]
) -> None:
    keys = [flag.config_key for flag in flags if flag.config_key]
    assert sorted(set(keys)) == sorted(keys)
    assert set(keys) <= set(properties)
    command_only = {flag.dest for flag in flags if not flag.config_key}
    assert command_only <= {"jobs", "debug", "dry_run", "help"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--retry-times", "30"], "ERROR: --retry-times: 30 is greater than the maximum of 20"),
        (["-c", "dir", "-s", "no-such-dir"], "ERROR: -s/--source: "),
        (["--timeout", "soon"], "ERROR: --timeout: "),
    ],
)
def test_load_reports_bad_values_with_the_flag(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved").mkdir()
    saved_list_path(tmp_path / "saved").write_text("{}")
    words = ["-s", "saved", "-d", "127.0.0.1:1", *argv]
    assert load_validate_command(words, {}) == 1
    assert capsys.readouterr().err.startswith(message)


def test_load_help_has_one_section_of_additions() -> None:
    assert build_load_parser("load").format_help().count("\nadditions:\n") == 1


def test_failure_explanations_pick_the_cause() -> None:
    raised = (
        "RuleException:\n"
        'InfrastructureError in file "/w/rules/save.smk", line 20:\n'
        "writing blob: no space left on device\n"
        '  File "/w/rules/save.smk", line 20, in __rule_save_image\n'
        "Error in rule save_image:\n    jobid: 5\n"
        "    log: logs/save/none.log (check log file(s) for error details)\n"
        "WorkflowError:\nAt least one job did not complete successfully.\n"
    )
    assert explain_failure(raised, 1) == (
        "step save_image failed: writing blob: no space left on device (log: logs/save/none.log)"
    )
    parse_error = (
        'WorkflowError in file "/w/rules/common.smk", line 18:\n'
        "l.txt: cannot read the image list: No such file or directory\n"
        '  File "/w/rules/common.smk", line 18, in <module>\n'
    )
    assert explain_failure(parse_error, 1) == (
        "l.txt: cannot read the image list: No such file or directory"
    )
    traceback = "Traceback (most recent call last):\n  File x\nFileNotFoundError: [Errno 2] x\n"
    assert explain_failure(traceback, 1) == "FileNotFoundError: [Errno 2] x"
    assert explain_failure("", 3) == "Snakemake exited with status 3"


# ---------------------------------------------------------------------------------------------
# Progress, in-process


def status(reference: str, state: str, size: int = 0, reason: str = "") -> ImageStatus:
    saved = [SavedPlatform("sha256:" + "0" * 64, "amd64", "linux", "f" * 64, Size=size)]
    return ImageStatus(
        reference=reference,
        source=reference.rsplit(":", 1)[0],
        tag=reference.rsplit(":", 1)[1],
        state=state,  # type: ignore[arg-type]
        reason=reason,
        saved=saved if state == "ok" and size else [],
    )


def test_watcher_tells_this_runs_results_from_earlier_ones(tmp_path: Path) -> None:
    directory = status_dir(tmp_path)
    write_atomic(directory / "old-ok.json", status("r/old:1", "ok", 100).to_json())
    write_atomic(directory / "old-failed.json", status("r/bad:1", "failed", reason="x").to_json())
    ids = ["old-ok", "old-failed", "new-ok", "new-skip"]
    watcher = StatusWatcher(tmp_path, ids)
    assert watcher.poll() == []
    tally = watcher.tally()
    assert (tally.saved, tally.resumed, tally.failed, tally.done) == (1, 1, 0, 1)

    write_atomic(directory / "new-ok.json", status("r/new:1", "ok", 2048).to_json())
    write_atomic(directory / "new-skip.json", status("r/skip:1", "skipped", reason="no").to_json())
    finished = watcher.poll()
    assert [image_id for image_id, _ in finished] == ["new-ok", "new-skip"]
    assert watcher.poll() == [], "each image is reported once"
    tally = watcher.tally(final=True)
    assert (tally.saved, tally.resumed, tally.failed, tally.skipped) == (2, 1, 1, 1)
    assert tally.bytes_total == 2148


def test_plain_display_writes_one_line_per_image() -> None:
    stream = io.StringIO()
    display = PlainProgress(stream, "out.tar.gz", every_image=True)
    display.image_done(status("r/a:1", "ok", 1536))
    display.image_done(status("r/b:1", "failed", reason="manifest unknown"))
    display.update(Tally(total=2, saved=1, failed=1), Bytes(1536), 0)
    display.update(Tally(total=2, saved=1, failed=1), Bytes(1536), 10)
    assert stream.getvalue().splitlines() == [
        "OK r/a:1 (linux/amd64; 1.5 KiB)",
        "FAILED r/b:1: not found: no such image or tag in the registry",
        "2/2 images done: archiving out.tar.gz",
    ]


def test_live_display_redraws_one_line() -> None:
    stream = io.StringIO()
    display = LiveProgress(stream, "out.tar.gz")
    tally = Tally(total=10, saved=3, failed=1, resumed=1, bytes_total=3 << 20)
    display.update(tally, Bytes(2 << 20, 8 << 20))
    display.image_done(status("r/b:1", "failed", reason="denied"))
    display.update(Tally(total=10, saved=9, failed=1), Bytes(8 << 20, 8 << 20), 5 << 20)
    display.close()
    text = stream.getvalue()
    denied = (
        "unauthorized at r: set SOURCE_USERNAME and SOURCE_PASSWORD (or REGISTRY_AUTH_FILE) for it"
    )
    assert f"FAILED r/b:1: {denied}\n" in text
    assert "images 4/10, 1 failed, 1 from an earlier run · 2.0 of 8.0 MiB · 0:00" in text
    assert "10/10 images done: archiving out.tar.gz: 5.0 MiB written · 0:00" in text
    assert "\x1b[2K" in text, "the line is redrawn in place"


def test_summary_names_failed_and_skipped_images() -> None:
    statuses = {
        "a": status("r/a:1", "ok", 10),
        "b": status("r/b:1", "failed", reason="denied"),
        "c": status("r/c:1", "skipped", reason="no platform"),
    }
    tally = Tally(total=4, saved=1, failed=1, skipped=1, platforms=1, bytes_total=10)
    assert summary_lines(tally, statuses, 75, "failed.txt") == [
        "saved 1 of 4 images (1 platforms, 10 B) in 1:15",
        "1 image(s) have no result from this run",
        "1 image(s) failed, listed in failed.txt:",
        "  r/b:1: unauthorized at r: set SOURCE_USERNAME and SOURCE_PASSWORD (or "
        "REGISTRY_AUTH_FILE) for it",
        "1 image(s) skipped, no platform matches --arch/--os:",
        "  r/c:1: no platform",
    ]
    assert image_line(statuses["c"]) == "SKIPPED r/c:1: no platform"


# ---------------------------------------------------------------------------------------------
# The installed command, without a registry


def test_help_names_every_flag_and_the_jobs_default(workdir: Path) -> None:
    done = run_hangar(workdir, "save", "--help")
    assert done.returncode == 0
    flags = "-f, --file -d, --destination -s, --source -a, --arch --os --no-arch-os-fail -j, "
    flags += "--jobs --part --part-size -o, --failed, --output -c, --compress --tls-verify "
    flags += "--debug -h, --help --dry-run --cache --retry-times --cert-dir SOURCE_REGISTRY "
    flags += "--skip-preflight --ignore-free-space "
    flags += "SOURCE_USERNAME SOURCE_PASSWORD"
    for flag in flags.split(" "):
        assert flag in done.stdout
    assert f"(default {cli.DEFAULT_JOBS}; hangar's default is 1" in done.stdout
    assert "-- --profile <checkout>/profiles/slurm" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["save"], "-f/--file is required"),
        (["save", "-f", "l.txt", "-c", "rar"], "invalid choice: 'rar'"),
        (["save", "-f", "l.txt", "--tls-verify", "false"], "unrecognized arguments: false"),
        (["save", "-f", "l.txt", "-j", "many"], "invalid int value: 'many'"),
        (["save", "-f", "l.txt", "--tls-verify=maybe"], "expected true or false, got 'maybe'"),
        (["save", "-f", "l.txt", "--bogus"], "unrecognized arguments: --bogus"),
        (["load"], "-s/--source is required"),
        (["mirror"], "unknown command 'mirror'"),
    ],
)
def test_bad_command_lines_exit_1_with_one_line(
    workdir: Path, args: list[str], message: str
) -> None:
    done = run_hangar(workdir, *args)
    assert done.returncode == 1
    assert error_lines(done.stderr) == [done.stderr.strip()]
    assert message in done.stderr


def test_missing_skopeo_exits_1_before_anything_runs(workdir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    write_list(workdir, "nginx:1.25")
    done = run_hangar(workdir, "save", "-f", "images.txt", env={"PATH": str(empty)})
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "ERROR: skopeo not found on PATH: install it (apt-get install skopeo)"
    ]
    assert not (workdir / ".snakemake").exists()


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_strict_bad_list_lines_are_reported_before_snakemake_starts(workdir: Path) -> None:
    write_list(workdir, "# list", "nginx:1.25", "Bad/Name:1", "ok:tag with space")
    done = run_hangar(workdir, "save", "-f", "images.txt", "--strict")
    assert done.returncode == 1
    errors = error_lines(done.stderr)
    assert len(errors) == 2
    assert errors[0].startswith("ERROR: images.txt:3: repository names must be lower-case")
    assert errors[1].startswith("ERROR: images.txt:4: whitespace inside the reference")
    assert not (workdir / ".snakemake").exists()


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_a_cache_in_use_is_refused(workdir: Path) -> None:
    write_list(workdir, "nginx:1.25")
    lock = hold_run_lock(workdir / "saved-image-cache")
    try:
        done = run_hangar(workdir, "save", "-f", "images.txt")
    finally:
        lock.close()
    assert done.returncode == 1
    assert f"is in use by a running save (pid {os.getpid()})" in done.stderr


# ---------------------------------------------------------------------------------------------
# The installed command against the local registries


@pytest.fixture(scope="module")
def first_save(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, sample_images: dict
) -> tuple[Path, subprocess.CompletedProcess[str], list[str]]:
    """One save with hangar's flags: zstd, `-d` without suffix, -j clamped, a missing image."""
    workdir = tmp_path_factory.mktemp("cli-save")
    refs = [sample_images[name].ref for name in ("library/nginx:1.25", "rancher/busybox:1.36")]
    refs += [sample_images["rancher/s390x-only:1.0"].ref, f"{registry.host}/rancher/missing:9"]
    write_list(workdir, "# images", *refs)
    args = ["save", "-f", "images.txt", "-d", "load", "-c", "zstd", "-j", "50"]
    args += ["--tls-verify=false", "-o", "failed.txt", "--cache", "cache", "--retry-times", "0"]
    return workdir, run_hangar(workdir, *args), args


@pytest.mark.slow
def test_save_logs_one_line_per_image_when_not_a_terminal(
    first_save: tuple[Path, subprocess.CompletedProcess[str], list[str]],
    sample_images: dict[str, PushedImage],
    registry: Registry,
) -> None:
    _, done, _ = first_save
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    nginx, busybox = sample_images["library/nginx:1.25"], sample_images["rancher/busybox:1.36"]
    assert lines[0] == "WARNING: --jobs 50 is outside 1-20: using 20"
    assert "\x1b[" not in done.stderr and "\r" not in done.stderr
    finished = sorted(line.split(" (")[0].split(": ")[0] for line in lines[1:5])
    assert finished == sorted(
        [
            f"OK {nginx.ref}",
            f"OK {busybox.ref}",
            f"SKIPPED {sample_images['rancher/s390x-only:1.0'].ref}",
            f"FAILED {registry.host}/rancher/missing:9",
        ]
    )
    assert any(line.startswith(f"OK {nginx.ref} (linux/amd64, linux/arm64/v8; ") for line in lines)
    assert lines[5] == "4/4 images done: archiving load.tar.zstd"
    assert lines[6].startswith("saved 2 of 4 images (3 platforms, ")
    assert "1 image(s) failed, listed in failed.txt:" in lines
    assert lines[-1].startswith("archive: load.tar.zstd (")


@pytest.mark.slow
def test_save_writes_the_archive_failed_list_and_a_config_without_secrets(
    first_save: tuple[Path, subprocess.CompletedProcess[str], list[str]], registry: Registry
) -> None:
    workdir, done, _ = first_save
    assert done.returncode == 0, done.stderr
    assert (workdir / "load.tar.zstd").read_bytes()[:4] == ZSTD_MAGIC
    assert (workdir / "load.tar.zstd.sha256").is_file()
    assert (workdir / "failed.txt").read_text() == f"{registry.host}/rancher/missing:9\n"
    config = yaml.safe_load((workdir / "cache/.hangar/cli-config.yaml").read_text())
    assert config["destination"] == "load" and config["compress"] == "zstd"
    assert config["tls_verify"] is False and config["retry_times"] == 0
    assert config["failed"] == "failed.txt" and config["cache"] == "cache"
    assert config["arch"] == ["amd64", "arm64"] and config["os"] == ["linux", "windows"]
    assert (workdir / "cache/.hangar/snakemake.log").is_file()


@pytest.fixture(scope="module")
def second_save(
    first_save: tuple[Path, subprocess.CompletedProcess[str], list[str]],
) -> subprocess.CompletedProcess[str]:
    """The same command run again in the same directory."""
    workdir, _, args = first_save
    return run_hangar(workdir, *args)


@pytest.mark.slow
def test_running_the_same_command_again_resumes(
    second_save: subprocess.CompletedProcess[str],
) -> None:
    assert second_save.returncode == 0, second_save.stderr
    assert not [line for line in second_save.stderr.splitlines() if line.startswith("OK ")]
    assert "saved 2 of 4 images (3 platforms, " in second_save.stderr
    assert "2 from an earlier run" in second_save.stderr


@pytest.mark.slow
def test_running_again_retries_the_failed_image(
    second_save: subprocess.CompletedProcess[str], registry: Registry
) -> None:
    assert f"FAILED {registry.host}/rancher/missing:9: " in second_save.stderr
    assert "1 image(s) failed, listed in failed.txt:" in second_save.stderr


@pytest.mark.slow
def test_source_registry_env_arch_os_filters_and_parts(
    workdir: Path, registry: Registry, sample_images: dict
) -> None:
    write_list(workdir, "library/nginx:1.25", "rancher/windows-app:3.6", "rancher/s390x-only:1.0")
    args = ["save", "-f", "images.txt", "-a", "arm64,", "amd64", "--os=linux"]
    args += ["--no-arch-os-fail", "--part", "--part-size=1K", "--output", "bad.txt"]
    done = run_hangar(workdir, *args, "--tls-verify=false", env={"SOURCE_REGISTRY": registry.host})
    assert done.returncode == 0, done.stderr
    assert f"OK {registry.host}/library/nginx:1.25 (linux/amd64, linux/arm64/v8; " in done.stderr
    assert f"OK {registry.host}/rancher/windows-app:3.6 (linux/amd64; " in done.stderr
    assert f"FAILED {registry.host}/rancher/s390x-only:1.0: no platform" in done.stderr
    assert (workdir / "bad.txt").read_text() == "rancher/s390x-only:1.0\n"
    parts = sorted(workdir.glob("saved-images.tar.gz.part*"), key=lambda p: int(p.suffix[5:]))
    assert len(parts) > 1 and not (workdir / "saved-images.tar.gz").exists()
    assert all(part.stat().st_size == 1024 for part in parts[:-1])
    assert parts[0].read_bytes()[:2] == GZIP_MAGIC
    assert f"({len(parts)} parts, " in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_nothing_saved_exits_1_and_debug_shows_snakemake_and_skopeo(
    workdir: Path, registry: Registry
) -> None:
    write_list(workdir, f"{registry.host}/rancher/missing:1")
    done = run_hangar(workdir, "--debug", "save", "-f", "images.txt", "--tls-verify=false")
    assert done.returncode == 1
    assert "Building DAG of jobs" in done.stderr
    skopeo = f"  | running: skopeo inspect --raw --tls-verify=false docker://{registry.host}/"
    assert skopeo in done.stderr
    assert f"FAILED {registry.host}/rancher/missing:1: " in done.stderr
    assert error_lines(done.stderr) == [
        "ERROR: no image was saved (see save-failed.txt and the reasons above)"
    ]


@pytest.mark.slow
def test_dry_run_shows_platforms_without_copying(
    workdir: Path, registry: Registry, sample_images: dict
) -> None:
    names = ("library/nginx:1.25", "rancher/busybox:1.36", "rancher/s390x-only:1.0")
    write_list(workdir, *(sample_images[n].ref for n in names), f"{registry.host}/no/such:1")
    done = run_hangar(workdir, "save", "-f", "images.txt", "--tls-verify=false", "--dry-run")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["IMAGE"] == ["IMAGE", "DIGEST", "AVAILABLE", "SELECTED", "MISSING", "SIZE",
                             "DOWNLOAD", "NOTE"]  # fmt: skip
    nginx = rows[sample_images["library/nginx:1.25"].ref]
    assert nginx[2:8] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/amd64",
                          "linux/arm64/v8", "-"]  # fmt: skip
    busybox = rows[sample_images["rancher/busybox:1.36"].ref]
    assert busybox[2:7] == ["linux/amd64", "linux/arm/v7", "linux/s390x", "linux/amd64", "arm64"]
    assert "no platform matches arch/os" in " ".join(
        rows[sample_images["rancher/s390x-only:1.0"].ref]
    )
    assert "manifest unknown" in " ".join(rows[f"{registry.host}/no/such:1"])
    assert "images: 4 in the list, 2 to save (3 platforms), 1 cannot be read" in done.stderr
    assert not (workdir / "saved-image-cache").exists() and not (workdir / ".snakemake").exists()

    write_list(workdir, f"{registry.host}/no/such:1")
    nothing = run_hangar(workdir, "save", "-f", "images.txt", "--tls-verify=false", "--dry-run")
    assert nothing.returncode == 1
    assert error_lines(nothing.stderr) == ["ERROR: no image would be saved"]


@pytest.fixture(scope="module")
def private_image(auth_registry: Registry) -> PushedImage:
    return push_image(
        auth_registry.host,
        "private/app",
        "1.0",
        [LINUX_AMD64],
        kind="oci-single",
        base_seed="private",
        creds=auth_registry.creds,
    )


@pytest.mark.slow
def test_credentials_come_from_the_environment_and_stay_there(
    workdir: Path, auth_registry: Registry, private_image: PushedImage
) -> None:
    user, password = auth_registry.credentials or ("", "")
    write_list(workdir, private_image.ref)
    args = ["save", "-f", "images.txt", "--tls-verify=false", "-c", "dir", "-d", "exported"]
    denied = run_hangar(workdir, *args, "--dry-run")
    assert denied.returncode == 1 and "unauthorized" in denied.stdout

    env = {"SOURCE_USERNAME": user, "SOURCE_PASSWORD": password}
    done = run_hangar(workdir, *args, env=env)
    assert done.returncode == 0, done.stderr
    assert f"OK {private_image.ref} (linux/amd64; " in done.stderr
    assert (workdir / "exported" / "saved-images-list.json").is_file()
    assert done.stderr.splitlines()[-1] == "archive: directory exported"
    for path in workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20 and "share" not in path.parts:
            assert password.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_cert_dir_trusts_a_private_ca(workdir: Path, tls_registry: Registry) -> None:
    image = push_image(
        tls_registry.host,
        "secure/app",
        "1",
        [LINUX_AMD64],
        kind="docker-single",
        base_seed="secure",
        tls_verify=True,
        cert_dir=tls_registry.cert_dir,
    )
    write_list(workdir, image.ref)
    args = ["save", "-f", "images.txt", "--dry-run", "--retry-times", "0"]
    untrusted = run_hangar(workdir, *args)
    assert untrusted.returncode == 1 and "certificate" in untrusted.stdout
    trusted = run_hangar(workdir, *args, "--cert-dir", str(tls_registry.cert_dir))
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "linux/amd64" in trusted.stdout


@pytest.fixture
def stale_lock(workdir: Path) -> Path:
    """A Snakemake lock file naming the run's final output, as a killed run leaves it."""
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    lock = locks / "0.output.lock"
    lock.write_text("saved-images.tar.gz.sha256\n")
    return lock


@pytest.mark.slow
def test_stale_lock_is_cleared_and_a_failed_run_names_its_cause_and_log(
    workdir: Path, tmp_path: Path, stale_lock: Path, sample_images: dict
) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "skopeo").write_text(
        "#!/bin/sh\necho 'level=fatal msg=\"writing blob: no space left on device\"' >&2\nexit 1\n"
    )
    (fake / "skopeo").chmod(0o755)
    write_list(workdir, sample_images["library/alpine:3.18"].ref)
    path = f"{fake}:{os.environ['PATH']}"
    # The workflow profile turns Snakemake's own locking off; without it the lock is checked.
    args = ["save", "-f", "images.txt", "--tls-verify=false", "--", "--workflow-profile", "none",
            "--force-use-threads"]  # fmt: skip
    done = run_hangar(workdir, *args, env={"PATH": path})
    assert done.returncode == 1
    assert "removing a stale Snakemake lock left by a killed run" in done.stderr
    assert not stale_lock.exists()
    errors = error_lines(done.stderr)
    assert errors[0].startswith("ERROR: step save_image failed: writing blob: no space left")
    assert errors[1] == (
        "ERROR: the save did not finish; Snakemake's log: saved-image-cache/.hangar/snakemake.log"
    )
    assert "SNAKEMAKE" not in done.stderr, "without --debug Snakemake's output goes to the log"
    assert "no space left on device" in (workdir / errors[1].split(": ")[-1]).read_text()


def test_run_lock_probe_sees_a_live_holder(tmp_path: Path) -> None:
    assert run_lock_holder(tmp_path) is None
    handle = hold_run_lock(tmp_path)
    try:
        assert run_lock_holder(tmp_path) == f"pid {os.getpid()}"
    finally:
        handle.close()
    assert run_lock_holder(tmp_path) is None
    with (tmp_path / ".hangar" / "run.lock").open() as again:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("command", ["plan", "verify", "report"])
def test_hangar_dispatches_the_other_commands(command: str) -> None:
    done = subprocess.run(["hangar", command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: hangar {command} ")


def test_a_profile_after_the_separator_keeps_its_own_job_counts() -> None:
    from hangar.cli.snakemake import snakemake_command

    local = snakemake_command(Path("c.yaml"), 7, [])
    assert local[local.index("--cores") + 1] == "7" and "--jobs" in local
    cluster = snakemake_command(Path("c.yaml"), 7, ["--profile", "my-slurm"])
    assert "--cores" not in cluster and "--jobs" not in cluster
    assert cluster[-2:] == ["--profile", "my-slurm"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([], {}),
        (["--skip-preflight"], {"preflight": False}),
        (["--skip-preflight=false"], {"preflight": True}),
        (["--ignore-free-space"], {"ignore_free_space": True}),
        (["--skip-preflight", "--ignore-free-space=false"], {"preflight": False,
                                                            "ignore_free_space": False}),
    ],
)  # fmt: skip
def test_skip_preflight_and_ignore_free_space_set_their_config_keys(
    words: list[str], expected: dict[str, bool]
) -> None:
    config = cli.parse_save_args(["-f", "l", *words], {}).config
    assert {key: config[key] for key in ("preflight", "ignore_free_space") if key in config} == (
        expected
    )
    completed = cli.complete_flags_config(config)
    assert completed["preflight"] is expected.get("preflight", True)
    assert completed["ignore_free_space"] is expected.get("ignore_free_space", False)


@pytest.mark.parametrize("words", [["version"], ["-v"], ["--version"], ["--debug", "version"]])
def test_version_is_one_line_naming_the_tool(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import version

    from hangar.cli.main import main

    assert main(words) == 0  # hangar v1.6's test suite runs all three and wants status 0
    assert capsys.readouterr().out == (
        f"hangar (hangar-save {version('hangar-save')}, a Snakemake workflow compatible with "
        "hangar v1.6 archives)\n"
    )
