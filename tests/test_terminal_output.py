"""What a person sees of the README's command, run as written in a fresh directory: in a pipe
and under a pseudo-terminal, the save's short output (the logger plugin selected by the
workflow profile), and each mistake's one line before any image is copied."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from support.images import PushedImage
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


def under_pty(workdir: Path) -> tuple[int, str]:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm"}
    process = subprocess.Popen(readme_command("my.yaml"), cwd=workdir, stdin=follower,
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
