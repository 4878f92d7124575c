"""hangar load / load-validate end to end: real skopeo, two real local registries, real archives.

The archives are made once per format by `hangar save` from the session's source registry; each
test loads into its own fresh destination registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.faultproxy import FaultProxy, SilentServer, fail
from support.images import LINUX_S390X, PushedImage, push_image
from support.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.registry]
REPO = Path(__file__).resolve().parent.parent


def hangar(
    cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hangar.cli.main", *args, "--tls-verify=false"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"hangar {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-5000:]}"
        )
    return done


@pytest.fixture(scope="module")
def archives(
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
    sample_images: dict[str, PushedImage],
) -> dict[str, Path]:
    """gzip, zstd, dir and split (>10 parts) archives of the catalogue, saved once."""
    root = tmp_path_factory.mktemp("archives")
    (root / "list.txt").write_text("".join(f"{registry.host}/{name}\n" for name in sample_images))
    made = {}
    for name, flags in {
        "gzip": ["-d", "images.tar.gz"],
        "zstd": ["-c", "zstd", "-d", "images.tar.zstd"],
        "dir": ["-c", "dir", "-d", "images-dir"],
        "parts": ["--part", "--part-size=4K", "-d", "parts.tar.gz"],
    }.items():
        hangar(root, "save", "-f", "list.txt", "-j", "4", *flags)
        made[name] = root / flags[-1]
    assert len(list(root.glob("parts.tar.gz.part*"))) > 10
    return made


def inspect_raw(reference: str) -> bytes:
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        check=True,
    )
    return done.stdout


def saved_list(archive: Path) -> dict[str, Any]:
    cache = archive if archive.is_dir() else archive.parent / "saved-image-cache"
    return json.loads((cache / "saved-images-list.json").read_text())


def dest_repository(source: str, host: str) -> str:
    return f"{host}/{source.split('/', 1)[1]}"


def registry_index(host: str, source: str, tag: str) -> dict[str, Any]:
    return json.loads(inspect_raw(f"{dest_repository(source, host)}:{tag}"))


def catalog(host: str) -> list[str]:
    with urllib.request.urlopen(f"http://{host}/v2/_catalog") as answer:
        repositories: list[str] = json.load(answer)["repositories"]
    return repositories


@pytest.mark.parametrize("kind", ["gzip", "zstd", "dir", "parts"])
def test_round_trip_keeps_every_platform_digest(
    kind: str, archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    source = archives[kind] if kind != "parts" else archives[kind].with_name("parts.tar.gz.part0")
    done = hangar(tmp_path, "load", "-s", str(source), "-d", dest.host, "-j", "4")
    assert "0 failed" in done.stderr
    assert not (tmp_path / "saved-image-cache").exists()  # never a save cache
    for image in saved_list(archives["gzip"])["List"]:
        index = registry_index(dest.host, image["Source"], image["Tag"])
        listed = {entry["digest"] for entry in index["manifests"]}
        for platform in image["Images"]:
            # the recorded (source) digest is the one in the destination, for OCI and Docker
            assert platform["Digest"] in listed, (image["Source"], platform)
            raw = inspect_raw(f"{dest_repository(image['Source'], dest.host)}@{platform['Digest']}")
            assert "sha256:" + hashlib.sha256(raw).hexdigest() == platform["Digest"]
    hangar(tmp_path, "load-validate", "-s", str(source), "-d", dest.host, "-j", "4")
    assert not (tmp_path / "load-validate-failed.txt").exists()


@pytest.mark.parametrize("existing_kind", ["docker-list", "oci-index"])
def test_merge_with_platforms_already_in_the_destination(
    existing_kind: str, archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    before = push_image(
        dest.host, "library/nginx", "1.25", [LINUX_S390X], kind=existing_kind, base_seed="other"
    )
    hangar(tmp_path, "load", "-s", str(archives["gzip"]), "-d", dest.host)
    index = json.loads(inspect_raw(f"{dest.host}/library/nginx:1.25"))
    platforms = {(e["platform"]["architecture"], e["digest"]) for e in index["manifests"]}
    assert ("s390x", before.manifests[0].digest) in platforms
    assert {arch for arch, _ in platforms} == {"amd64", "arm64", "s390x"}


def test_amd64_then_arm64_archives_give_both(
    registry: Registry, sample_images: dict[str, PushedImage], registry_factory: Any, tmp_path: Path
) -> None:
    """hangar #22: each load adds its platform to the tag; the second keeps the first's."""
    dest = registry_factory()
    (tmp_path / "list.txt").write_text(f"{registry.host}/rancher/shared-a:1\n")
    for arch in ("amd64", "arm64"):
        hangar(
            tmp_path,
            "save",
            "-f",
            "list.txt",
            "-a",
            arch,
            "-c",
            "dir",
            "-d",
            arch,
            "--cache",
            f"cache-{arch}",
        )
    for arch in ("amd64", "arm64"):
        hangar(tmp_path, "load", "-s", arch, "-c", "dir", "-d", dest.host, "-j", "1")
    index = json.loads(inspect_raw(f"{dest.host}/rancher/shared-a:1"))
    assert sorted(e["platform"]["architecture"] for e in index["manifests"]) == ["amd64", "arm64"]
    wanted = {
        m.digest for m in sample_images["rancher/shared-a:1"].manifests if m.platform.in_index
    }
    assert {e["digest"] for e in index["manifests"]} == wanted


def _copy_parts(archives: dict[str, Path], target: Path) -> Path:
    for path in archives["parts"].parent.glob("parts.tar.gz*"):
        shutil.copy(path, target / path.name)
    return target / "parts.tar.gz"


def test_a_damaged_part_is_refused_before_any_push(
    archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    base = _copy_parts(archives, tmp_path)
    part = base.with_name("parts.tar.gz.part3")
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    done = hangar(tmp_path, "load", "-s", str(base), "-d", dest.host, check=False)
    assert done.returncode == 1
    assert "parts.tar.gz.part3" in done.stderr
    assert catalog(dest.host) == []
    base.with_name("parts.tar.gz.part5").unlink()
    done = hangar(tmp_path, "load", "-s", str(base), "-d", dest.host, check=False)
    assert done.returncode == 1
    assert "parts.tar.gz.part5: part 5" in done.stderr
    assert "Snakemake" not in done.stderr  # refused before the workflow started


def test_a_killed_load_resumes(
    archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    command = [
        sys.executable,
        "-m",
        "hangar.cli.main",
        "load",
        "-s",
        str(archives["zstd"]),
        "-d",
        dest.host,
        "-j",
        "1",
        "--tls-verify=false",
    ]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("loaded "):
            break
    # the whole load dies at once: the command, and Snakemake (which holds the cache's lock)
    holder = next(tmp_path.glob("hangar-load-cache/*/.hangar/run.lock")).read_text()
    os.killpg(process.pid, signal.SIGKILL)
    os.kill(int(holder.split()[1]), signal.SIGKILL)
    process.wait()
    time.sleep(0.5)
    statuses = list(tmp_path.glob("hangar-load-cache/*/.hangar/status/*.json"))
    assert 1 <= len(statuses) < 7
    done = hangar(tmp_path, "load", "-s", str(archives["zstd"]), "-d", dest.host)
    assert "extracting" not in done.stderr  # extracted once
    pushed = [line for line in done.stderr.splitlines() if line.startswith("loaded ")]
    assert len(pushed) <= 7 - len(statuses) + 1  # the last one may have been cut short
    assert "7 image(s) loaded (" in done.stderr
    hangar(tmp_path, "load-validate", "-s", str(archives["zstd"]), "-d", dest.host)


def test_a_refused_image_is_listed_and_the_rest_loads(
    archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    methods = ("GET", "HEAD", "POST", "PUT", "PATCH")
    with FaultProxy(dest.host) as proxy:
        proxy.inject(fail(403, path_contains="/rancher/busybox/", methods=methods))
        done = hangar(
            tmp_path, "load", "-s", str(archives["gzip"]), "-d", proxy.host, "--retry-times", "0"
        )
    assert "6 image(s) loaded, 1 failed" in done.stderr
    assert (tmp_path / "load-failed.txt").read_text().endswith("rancher/busybox:1.36\n")
    failed = hangar(
        tmp_path, "load-validate", "-s", str(archives["gzip"]), "-d", dest.host, check=False
    )
    assert failed.returncode == 1
    assert "rancher/busybox:1.36" in (tmp_path / "load-validate-failed.txt").read_text()


def test_a_destination_that_never_answers_fails_within_the_timeout(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    with SilentServer() as silent:
        for command in (["load", "--retry-times", "0"], ["load-validate"]):
            started = time.monotonic()
            done = hangar(
                tmp_path,
                command[0],
                "-s",
                str(archives["gzip"]),
                "-d",
                silent.host,
                "--timeout",
                "1s",
                *command[1:],
                check=False,
            )
            took = time.monotonic() - started
            assert done.returncode == 1, done.stderr
            assert took < 90, f"{command[0]} took {took:.0f}s with a 1s timeout"
        assert silent.accepted >= 2
    failed = (tmp_path / "load-validate-failed.txt").read_text().splitlines()
    assert failed == (tmp_path / "load-failed.txt").read_text().splitlines()
    assert len(failed) == 7
    for line in failed:  # each image named once, with the plain reason
        assert f"ERROR: {line}: registry did not answer within 1s" in done.stderr.splitlines()


def test_nothing_loaded_exits_1(archives: dict[str, Path], tmp_path: Path) -> None:
    done = hangar(
        tmp_path,
        "load",
        "-s",
        str(archives["gzip"]),
        "-d",
        "127.0.0.1:9",
        "--retry-times",
        "0",
        check=False,
    )
    assert done.returncode == 1
    assert "no image was loaded" in done.stderr
    assert len((tmp_path / "load-failed.txt").read_text().splitlines()) == 7


def test_snakemake_with_a_load_config_does_the_same(
    archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    dest = registry_factory()
    config = tmp_path / "load.yaml"
    config.write_text(f"archive: {archives['dir']}\ndestination: {dest.host}\ntls_verify: false\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--cores",
            "4",
            "--configfile",
            str(config),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    hangar(tmp_path, "load-validate", "-s", str(archives["dir"]), "-d", dest.host)


def _blob(share: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (share / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def test_an_oci_artifact_is_pushed_unchanged(
    archives: dict[str, Path], registry_factory: Any, tmp_path: Path
) -> None:
    """The Artifacts key of saved-images-list.json (Helm charts): pushed with its digest."""
    dest = registry_factory()
    archive = tmp_path / "with-chart"
    shutil.copytree(archives["dir"], archive)
    share = archive / "share"
    config = {
        "mediaType": "application/vnd.cncf.helm.config.v1+json",
        **_blob(share, b'{"name":"c"}'),
    }
    layer = {
        "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        **_blob(share, b"chart"),
    }
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
        }
    ).encode()
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(share, manifest),
    }
    source = "charts.example/charts/mychart"
    folder = hashlib.sha256(f"{source}:1.2.3".encode()).hexdigest()
    (archive / folder).mkdir()
    (archive / folder / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (archive / folder / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [descriptor]})
    )
    listing = json.loads((archive / "saved-images-list.json").read_text())
    listing["Artifacts"] = [
        {
            "Source": source,
            "Tag": "1.2.3",
            "Digest": descriptor["digest"],
            "MediaType": descriptor["mediaType"],
            "ArtifactType": "application/vnd.cncf.helm.config.v1+json",
            "Folder": folder,
        }
    ]
    (archive / "saved-images-list.json").write_text(json.dumps(listing))
    hangar(tmp_path, "load", "-s", str(archive), "-d", dest.host)
    raw = inspect_raw(f"{dest.host}/charts/mychart:1.2.3")
    assert raw == manifest
    hangar(tmp_path, "load-validate", "-s", str(archive), "-d", dest.host)
