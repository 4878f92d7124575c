"""What a person sees of the README's command, run as written in a fresh directory: in a pipe
and under a pseudo-terminal, the save's short output (the logger plugin selected by the
workflow profile), and each mistake's one line before any image is copied."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faultproxy import FaultProxy, MountUnavailable, slow, small_filesystem
from support.images import LINUX_AMD64, LINUX_ARM64_V8, PushedImage, push_image
from support.registry import Registry
from workflow import SNAKEFILE

pytestmark = pytest.mark.slow


def readme_command(config: str) -> list[str]:
    """The README's command: snakemake --snakefile <checkout>/Snakefile --cores 10 --configfile"""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--cores", "10",
            "--configfile", config]  # fmt: skip


def demo_dir(
    workdir: Path, registry: Registry, images: dict[str, PushedImage], **config: str
) -> None:
    lines = [image.ref for image in images.values()] + [f"{registry.host}/rancher/not-there:1.0"]
    (workdir / "images.txt").write_text("\n".join(lines) + "\n")
    extra = "".join(f"{key}: {value}\n" for key, value in config.items())
    (workdir / "my.yaml").write_text("file: images.txt\ntls_verify: false\n" + extra)


def in_pipe(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(readme_command("my.yaml"), cwd=workdir, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def under_pty(workdir: Path, command: list[str] | None = None) -> tuple[int, str]:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm"}
    process = subprocess.Popen(command or readme_command("my.yaml"), cwd=workdir, stdin=follower,
                               stdout=follower, stderr=follower, env=env)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return process.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def test_plain_snakemake_prints_the_summary_in_a_pipe(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    demo_dir(workdir, registry, sample_images)
    done = in_pipe(workdir)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines)
    assert len(lines) <= 40, "\n".join(lines)
    text = "\n".join(lines)
    missing = f"{registry.host}/rancher/not-there:1.0: not found: no such image or tag"
    assert f"FAILED {missing}" in text
    assert f"SKIPPED {registry.host}/rancher/s390x-only:1.0: no platform matches" in text
    assert not any(line.startswith(("rule ", "Job ", "[", "localrule")) for line in lines), text
    assert lines[-1].startswith("archive: saved-images.tar.gz (")
    assert "checksum in saved-images.tar.gz.sha256" in lines[-1]
    assert any(line.startswith("saved 7 of 9 images") for line in lines), text
    # The full log is still kept.
    assert list((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    verbose = subprocess.run([*readme_command("my.yaml"), "--verbose"], cwd=workdir,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "Nothing to be done" in verbose.stderr or "steps" in verbose.stderr


def test_plain_snakemake_on_a_terminal(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    demo_dir(workdir, registry, sample_images)
    returncode, text = under_pty(workdir)
    assert returncode == 0, text
    assert "not-there:1.0: not found" in text
    assert "s390x-only:1.0: no platform matches" in text
    assert text.rstrip().splitlines()[-1].startswith("archive: saved-images.tar.gz (")
    assert "Select jobs to execute" not in text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"arch": "[amd46]"},
            "preflight: arch: 'amd46' is not a known arch name; did you mean amd64?",
        ),
        ({"os": "[linus]"}, "preflight: os: 'linus' is not a known os name; did you mean linux?"),
        ({"tls_verify": "true"}, "speaks plain HTTP: use --tls-verify=false"),
    ],
)
def test_mistakes_are_one_line_before_any_copy(
    workdir: Path,
    registry: Registry,
    sample_images: dict[str, PushedImage],
    config: dict[str, str],
    message: str,
) -> None:
    demo_dir(workdir, registry, sample_images)
    text = (workdir / "my.yaml").read_text().replace("tls_verify: false\n", "")
    text += "".join(f"{key}: {value}\n" for key, value in config.items())
    if "tls_verify" not in config:
        text += "tls_verify: false\n"
    (workdir / "my.yaml").write_text(text)
    done = in_pipe(workdir)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not (workdir / "saved-image-cache" / ".hangar" / "status").exists() or not list(
        (workdir / "saved-image-cache" / ".hangar" / "status").glob("*.json")
    )


def test_unreachable_registry_is_one_line(workdir: Path) -> None:
    (workdir / "images.txt").write_text(
        "".join(f"127.0.0.1:1/rancher/img{i}:1\n" for i in range(20))
    )
    (workdir / "my.yaml").write_text("file: images.txt\ntls_verify: false\n")
    done = in_pipe(workdir)
    assert done.returncode == 1
    assert done.stderr.count("ERROR") == 1, done.stderr
    assert "preflight: registry 127.0.0.1:1 unreachable" in done.stderr


def run_in(
    workdir: Path, command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HOME": str(workdir), **(env or {})}  # no auth files of the machine
    for name in ("SOURCE_USERNAME", "SOURCE_PASSWORD", "REGISTRY_AUTH_FILE"):
        if env is None or name not in env:
            environ.pop(name, None)
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600,
                          env=environ)  # fmt: skip


def hangar_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hangar.cli.main", *args]


def no_status_written(workdir: Path, cache: Path | None = None) -> bool:
    status = (cache or workdir / "saved-image-cache") / ".hangar" / "status"
    return not status.exists() or not list(status.glob("*.json"))


def test_an_arch_no_image_offers_is_one_warning_in_both_summaries_and_the_report(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    demo_dir(workdir, registry, sample_images, arch="[amd64, mips64le]")
    warning = "WARNING: no image offers arch mips64le: nothing was saved for it"
    done = in_pipe(workdir)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).splitlines().count(warning) == 1, done.stderr
    assert warning in (workdir / "save-report.html").read_text()
    # hangar save says it too (everything is saved by now: the statuses are what it reads)
    args = ["save", "-f", "images.txt", "--tls-verify=false", "-a", "amd64,mips64le"]
    again = run_in(workdir, hangar_command(*args))
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines().count(warning) == 1, again.stderr


@pytest.mark.parametrize("given", ["wrong", "none"])
def test_credentials_are_one_line_before_any_copy_and_never_shown(
    workdir: Path, auth_registry: Registry, given: str
) -> None:
    user, password = auth_registry.credentials or ("", "")
    host = auth_registry.host
    (workdir / "images.txt").write_text(f"{host}/private/app:1.0\n{host}/private/other:2\n")
    (workdir / "my.yaml").write_text("file: images.txt\ntls_verify: false\n")
    wrong = "Wr0ng-" + password
    env = {"SOURCE_USERNAME": user, "SOURCE_PASSWORD": wrong} if given == "wrong" else {}
    for command in (readme_command("my.yaml"), hangar_command("save", "-f", "images.txt",
                                                              "--tls-verify=false")):  # fmt: skip
        done = run_in(workdir, command, env)
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        if given == "wrong":
            expected = (
                f"preflight: registry {host} refused the credentials of "
                "SOURCE_USERNAME/SOURCE_PASSWORD (HTTP 401): correct SOURCE_USERNAME and "
                f"SOURCE_PASSWORD (they are used for {host})"
            )
        else:
            expected = f"preflight: registry {host} requires credentials and none are given"
        assert expected in errors[0], done.stderr
        assert not any(line.startswith("saved ") for line in done.stderr.splitlines()), "summary"
        assert no_status_written(workdir)
        assert wrong not in done.stdout + done.stderr
    for path in workdir.rglob("*"):
        if path.is_file():
            assert wrong.encode() not in path.read_bytes(), path


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with small_filesystem(tmp_path / "small-disk", "8m") as mount:
            yield mount
    except MountUnavailable as reason:
        pytest.skip(f"no small file system: {reason}")


def test_an_image_the_cache_disk_will_not_hold_stops_the_run_before_its_copy(
    workdir: Path, registry: Registry, small_disk: Path
) -> None:
    image = push_image(registry.host, "rancher/big", "1", [LINUX_AMD64], kind="oci-single",
                       base_seed="big-image", layer_size=3 << 20)  # fmt: skip
    (workdir / "images.txt").write_text(image.ref + "\n")
    cache = small_disk / "cache"
    (workdir / "my.yaml").write_text(f"file: images.txt\ntls_verify: false\ncache: {cache}\n")
    done = in_pipe(workdir)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [
        f"ERROR: no space left on {cache}: {image.ref} needs 22.0 MiB, 8.0 MiB free"
    ], done.stderr
    share = cache / "share" / "sha256"
    assert not share.exists() or all(p.stat().st_size < 1 << 20 for p in share.iterdir())
    assert no_status_written(workdir, cache)


def test_an_archive_its_disk_will_not_hold_is_refused_with_the_figures(
    workdir: Path, registry: Registry, small_disk: Path
) -> None:
    image = push_image(registry.host, "rancher/big-archive", "1", [LINUX_AMD64],
                       kind="oci-single", base_seed="big-archive", layer_size=5 << 20)  # fmt: skip
    (workdir / "images.txt").write_text(image.ref + "\n")
    destination = small_disk / "saved-images.tar.gz"
    (workdir / "my.yaml").write_text(
        f"file: images.txt\ntls_verify: false\ndestination: {destination}\n"
    )
    done = in_pipe(workdir)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[0].startswith(
        f"ERROR: step archive failed: no space left on {small_disk} for the archive: it needs "
        "about 10."
    ), done.stderr
    assert "MiB free; free some space or choose another destination" in errors[0]
    assert [p.name for p in small_disk.iterdir() if not p.name.endswith(".lock")] == []


# -- bytes while skopeo copies ----------------------------------------------------------------

SLOW_BYTES_PER_SECOND = 1 << 20  # per blob download: each layer of 1.5 MiB takes about 1.5 s
PROGRESS = re.compile(
    r"images (\d+)/(\d+) · ([\d.]+)(?: (B|KiB|MiB))? of (≈?)([\d.]+) (KiB|MiB)"
    r"(?: · [\d.]+ (?:B|KiB|MiB)/s)?(?: · (ETA ≈?\d+:\d\d|\d+:\d\d))?"
)
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}


@pytest.fixture(scope="module")
def big_images(registry: Registry) -> dict[str, PushedImage]:
    """A single-manifest image (its manifest lists every blob) and a two-platform index (whose
    blobs are known once copied), each with two layers of 1.5 MiB."""
    size = 1536 << 10
    single = push_image(registry.host, "rancher/big-single", "1", [LINUX_AMD64],
                        kind="oci-single", base_seed="big-single", layer_size=size)  # fmt: skip
    index = push_image(registry.host, "rancher/big-index", "1", [LINUX_AMD64, LINUX_ARM64_V8],
                       kind="oci-index", base_seed="big-index", layer_size=size)  # fmt: skip
    return {"single": single, "index": index}


@pytest.fixture
def slow_proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as proxy:
        proxy.inject(slow(SLOW_BYTES_PER_SECOND, path_contains="/blobs/"))
        yield proxy


def progress_figures(text: str) -> list[tuple[int, int, float, bool, float, str]]:
    """(images done, images, bytes done, total estimated, total bytes, ETA) of each line."""
    found = []
    for match in PROGRESS.finditer(text):
        done, images, copied, copied_unit, about, total, unit, clock = match.groups()
        copied_bytes = float(copied) * UNITS[copied_unit or unit]
        total_bytes = float(total) * UNITS[unit]
        found.append((int(done), int(images), copied_bytes, bool(about), total_bytes, clock or ""))
    return found


def downloaded(workdir: Path) -> int:
    """Bytes of every blob in a fresh cache: what the run downloaded."""
    blobs = workdir / "saved-image-cache" / "share" / "sha256"
    return sum(path.stat().st_size for path in blobs.iterdir())


def save_command(workdir: Path, how: str, refs: list[str]) -> list[str]:
    """The README's snakemake command, or `hangar save`, for these images (amd64 only)."""
    (workdir / "images.txt").write_text("\n".join(refs) + "\n")
    if how == "snakemake":
        (workdir / "my.yaml").write_text("file: images.txt\ntls_verify: false\narch: [amd64]\n")
        return readme_command("my.yaml")
    return [sys.executable, "-m", "hangar.cli.main", "save", "-f", "images.txt",
            "--tls-verify=false", "-a", "amd64"]  # fmt: skip


@pytest.mark.parametrize("how", ["snakemake", "hangar save"])
def test_bytes_grow_while_skopeo_copies_in_a_pipe(
    workdir: Path, slow_proxy: FaultProxy, big_images: dict[str, PushedImage], how: str
) -> None:
    """In a CI log: progress lines now and then, with the bytes of the blobs being
    downloaded, of a total estimated (≈) while the index's platform is unknown."""
    refs = [f"{slow_proxy.host}/{image.repo}:1" for image in big_images.values()]
    env = {**os.environ, "HANGAR_PROGRESS_SECONDS": "0.4"}
    done = subprocess.run(save_command(workdir, how, refs), cwd=workdir, capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = progress_figures(done.stderr)
    during = [f for f in figures if f[0] == 0 and f[2] > 0]
    assert during, f"no bytes counted before an image finished:\n{done.stderr}"
    assert all(about for _, _, _, about, _, _ in during), "the index's platform is estimated"
    assert any(clock.startswith("ETA ≈") for *_, clock in during), done.stderr
    copied = [f[2] for f in figures]
    assert copied == sorted(copied), "bytes only grow"
    total = downloaded(workdir)
    assert all(f[2] <= total * 1.01 for f in figures), (total, figures)


@pytest.mark.parametrize("how", ["snakemake", "hangar save"])
def test_bytes_and_exact_total_on_a_terminal(
    workdir: Path, slow_proxy: FaultProxy, big_images: dict[str, PushedImage], how: str
) -> None:
    """On a terminal: the live line counts the bytes of the blobs being downloaded, of the
    exact total the single manifest tells, with a rate and an ETA."""
    single = big_images["single"]
    command = save_command(workdir, how, [f"{slow_proxy.host}/{single.repo}:1"])
    returncode, text = under_pty(workdir, command)
    assert returncode == 0, text
    figures = progress_figures(text)
    during = [f for f in figures if f[0] == 0 and f[2] > 0]
    assert during, f"no bytes counted before the image finished:\n{text}"
    total = downloaded(workdir)
    for _, images, copied, about, shown_total, _ in during:
        assert images == 1 and not about, "the total is exact"
        assert abs(shown_total - total) <= 0.05 * (1 << 20), (shown_total, total)
        assert copied <= shown_total
    assert any(clock.startswith("ETA ") for *_, clock in during), text
    assert "\x1b[2K" in text, "one line redrawn in place"
    assert "archive: saved-images.tar.gz (" in text
