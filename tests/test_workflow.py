"""End to end: real snakemake, real skopeo, a real registry on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.images import LINUX_AMD64, PushedImage, push_image
from support.registry import Registry
from workflow import (
    entries_by_source,
    oci_manifest,
    run_workflow,
    saved_list,
    snakemake_command,
    write_list,
)

pytestmark = pytest.mark.slow


def folder_of(source: str, copied_tag: str) -> str:
    return hashlib.sha256(f"{source}:{copied_tag}".encode()).hexdigest()


@pytest.fixture(scope="module")
def full_save(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, sample_images: dict
) -> Path:
    """One save of the whole catalogue plus a missing image, shared by the checks below."""
    workdir = tmp_path_factory.mktemp("full-save")
    lines = [f"# catalogue\n// of {registry.host}"]
    lines += [image.ref for image in sample_images.values()]
    lines += [f"  {registry.host}/rancher/missing:0.1  ", sample_images["library/nginx:1.25"].ref]
    write_list(workdir, lines)
    run_workflow(workdir, {"file": "images.txt"})
    return workdir


def content_mtimes(cache: Path) -> dict[Path, int]:
    """Modification times of everything saved (the run lock is rewritten by every run)."""
    return {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.name != "run.lock"}


def expected_platforms(image: PushedImage, arch: set[str], os_names: set[str]) -> list[Any]:
    return [
        m
        for m in image.manifests
        if m.platform.in_index
        and m.platform.architecture in arch
        and m.platform.os in os_names
        and not m.platform.is_attestation
    ]


def test_saved_list_matches_the_registry_field_by_field(
    full_save: Path, sample_images: dict[str, PushedImage]
) -> None:
    cache = full_save / "saved-image-cache"
    document = saved_list(cache)
    assert list(document) == ["List", "Version", "SavedTime"]
    assert document["Version"] == "v1.1.0"
    by_source = entries_by_source(cache)
    for name, image in sample_images.items():
        key = f"{image.host}/{image.repo}:{image.tag}"
        wanted = expected_platforms(image, {"amd64", "arm64"}, {"linux", "windows"})
        if not wanted:
            assert key not in by_source, f"{name} has no wanted platform and must not be listed"
            continue
        entry = by_source[key]
        assert entry["Source"] == f"{image.host}/{image.repo}"
        assert entry["Tag"] == image.tag
        got = [
            (i["Digest"], i["Arch"], i["OS"], i.get("Variant"), i.get("OsVersion"))
            for i in entry["Images"]
        ]
        assert got == [
            (
                m.digest,
                m.platform.architecture,
                m.platform.os,
                m.platform.variant,
                m.platform.os_version,
            )
            for m in wanted
        ], name
        assert entry["ArchList"] == list(dict.fromkeys(i["Arch"] for i in entry["Images"]))
        assert entry["OsList"] == list(dict.fromkeys(i["OS"] for i in entry["Images"]))
    assert len(document["List"]) == sum(
        1
        for image in sample_images.values()
        if expected_platforms(image, {"amd64", "arm64"}, {"linux", "windows"})
    )


def test_folders_are_named_by_hash_and_hold_valid_oci_images(
    full_save: Path, sample_images: dict[str, PushedImage]
) -> None:
    cache = full_save / "saved-image-cache"
    windows = entries_by_source(cache)[sample_images["rancher/windows-app:3.6"].ref]
    tags = {i["OS"]: i["Folder"] for i in windows["Images"]}
    source = windows["Source"]
    assert tags["linux"] == folder_of(source, "3.6-amd64")
    assert tags["windows"] == folder_of(source, "3.6-windows-amd64-10.0.17763.2114")
    nginx = entries_by_source(cache)[sample_images["library/nginx:1.25"].ref]
    assert [i["Folder"] for i in nginx["Images"]] == [
        folder_of(nginx["Source"], "1.25-amd64"),
        folder_of(nginx["Source"], "1.25-arm64"),
    ]
    for entry in saved_list(cache)["List"]:
        image = sample_images[entry["Source"].split("/", 1)[1] + ":" + entry["Tag"]]
        for saved in entry["Images"]:
            folder = cache / saved["Folder"]
            assert json.loads((folder / "oci-layout").read_text()) == {
                "imageLayoutVersion": "1.0.0"
            }
            assert list((folder / "blobs").iterdir()) == []
            index = json.loads((folder / "index.json").read_text())
            assert index["schemaVersion"] == 2
            source = next(m for m in image.manifests if m.digest == saved["Digest"])
            # the manifest as the registry serves it (Docker v2s2 stays v2s2), with its digest
            assert [(m["mediaType"], m["digest"]) for m in index["manifests"]] == [
                (source.media_type, saved["Digest"])
            ]
            manifest = oci_manifest(cache, saved["Folder"])
            assert [layer["digest"] for layer in manifest["layers"]] == list(source.layer_digests)


def test_shared_blobs_are_stored_once(
    full_save: Path, sample_images: dict[str, PushedImage]
) -> None:
    share = full_save / "saved-image-cache" / "share" / "sha256"
    base = sample_images["library/nginx:1.25"].manifest("linux/amd64").layer_digests[0]
    assert base in sample_images["rancher/shared-a:1"].manifest("linux/amd64").layer_digests
    assert base in sample_images["rancher/shared-b:1"].manifest("linux/amd64").layer_digests
    assert (share / base.removeprefix("sha256:")).is_file()
    stored = list(share.iterdir())
    for blob in stored:  # every blob is complete and named by its digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_missing_image_is_failed_while_the_rest_is_saved(
    full_save: Path, registry: Registry
) -> None:
    failed = (full_save / "save-failed.txt").read_text()
    assert failed == f"{registry.host}/rancher/missing:0.1\n"
    log = next((full_save / "logs" / "save").glob("rancher_missing_0.1-*.log")).read_text()
    assert "manifest unknown" in log


def test_noop_rerun_copies_nothing(full_save: Path) -> None:
    cache = full_save / "saved-image-cache"
    (full_save / "images.txt").write_text(
        "\n".join(
            line
            for line in (full_save / "images.txt").read_text().splitlines()
            if "missing" not in line
        )
    )
    run_workflow(full_save, {"file": "images.txt"})  # the failed line is gone: list shrinks
    assert not (full_save / "save-failed.txt").exists()
    before = content_mtimes(cache)
    archive = full_save / "saved-images.tar.gz"
    archive_mtime = archive.stat().st_mtime_ns
    done = run_workflow(full_save, {"file": "images.txt"})
    assert "Nothing to be done" in done.stderr
    after = content_mtimes(cache)
    assert after == before
    assert archive.stat().st_mtime_ns == archive_mtime


def test_arch_and_os_filters(workdir: Path, sample_images: dict[str, PushedImage]) -> None:
    names = ["library/nginx:1.25", "rancher/busybox:1.36", "rancher/windows-app:3.6"]
    write_list(workdir, [sample_images[n].ref for n in names])
    run_workflow(workdir, {"file": "images.txt", "arch": ["arm", "amd64"], "os": ["windows"]})
    by_source = entries_by_source(workdir / "saved-image-cache")
    assert list(by_source) == [sample_images["rancher/windows-app:3.6"].ref]
    run_workflow(workdir, {"file": "images.txt", "arch": "arm", "os": "linux"})
    by_source = entries_by_source(workdir / "saved-image-cache")
    assert {
        k: [(i["Arch"], i.get("Variant")) for i in e["Images"]] for k, e in by_source.items()
    } == {
        sample_images["library/nginx:1.25"].ref: [("arm", "v7")],
        sample_images["rancher/busybox:1.36"].ref: [("arm", "v7")],
    }
    assert not (workdir / "save-failed.txt").exists()


def test_no_arch_os_fail_lists_images_without_platform(
    workdir: Path, sample_images: dict[str, PushedImage]
) -> None:
    s390x = sample_images["rancher/s390x-only:1.0"].ref
    write_list(workdir, [s390x, sample_images["library/alpine:3.18"].ref])
    run_workflow(workdir, {"file": "images.txt"})
    assert not (workdir / "save-failed.txt").exists()
    run_workflow(workdir, {"file": "images.txt", "no_arch_os_fail": True})
    assert (workdir / "save-failed.txt").read_text() == f"{s390x}\n"


def test_source_replaces_and_supplies_the_registry(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    write_list(workdir, ["library/alpine:3.18", "quay.io/rancher/busybox:1.36"])
    run_workflow(workdir, {"file": "images.txt", "source": registry.host})
    assert list(entries_by_source(workdir / "saved-image-cache")) == [
        f"{registry.host}/library/alpine:3.18",
        f"{registry.host}/rancher/busybox:1.36",
    ]


def test_failed_image_is_retried_and_new_lines_only_save_new_images(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    late = f"{registry.host}/rancher/late:1"
    alpine = sample_images["library/alpine:3.18"].ref
    write_list(workdir, [alpine, late])
    run_workflow(workdir, {"file": "images.txt"})
    assert (workdir / "save-failed.txt").read_text() == f"{late}\n"
    status_dir = workdir / "saved-image-cache" / ".hangar" / "status"
    alpine_status = next(status_dir.glob("library_alpine_3.18-*.json"))
    saved_at = alpine_status.stat().st_mtime_ns

    push_image(
        registry.host, "rancher/late", "1", [LINUX_AMD64], kind="oci-single", base_seed="late"
    )
    run_workflow(workdir, {"file": "images.txt"})  # the same command retries the failed image
    assert not (workdir / "save-failed.txt").exists()
    assert list(entries_by_source(workdir / "saved-image-cache")) == [alpine, late]

    nginx = sample_images["library/nginx:1.25"].ref
    write_list(workdir, [alpine, late, nginx])
    run_workflow(workdir, {"file": "images.txt"})
    assert list(entries_by_source(workdir / "saved-image-cache")) == [alpine, late, nginx]
    assert alpine_status.stat().st_mtime_ns == saved_at  # not saved twice


def test_strict_bad_list_stops_before_any_download(workdir: Path, sample_images: dict) -> None:
    write_list(workdir, [sample_images["library/alpine:3.18"].ref, "Bad/Name:1"])
    done = run_workflow(workdir, {"file": "images.txt", "strict": True}, check=False)
    assert done.returncode != 0
    assert "images.txt:2: repository names must be lower-case: 'Bad/Name'" in done.stderr
    assert not (workdir / "saved-image-cache" / "share").exists()


def test_bad_lines_are_skipped_with_a_warning(workdir: Path, sample_images: dict) -> None:
    alpine = sample_images["library/alpine:3.18"].ref
    write_list(workdir, [alpine, "Bad/Name:1"])
    done = run_workflow(workdir, {"file": "images.txt"})
    assert 'ignore line "Bad/Name:1" in list file: invalid format (images.txt:2: ' in done.stderr
    assert list(entries_by_source(workdir / "saved-image-cache")) == [alpine]
    assert not (workdir / "save-failed.txt").exists()


def test_resume_after_sigkill(
    workdir: Path, registry: Registry, sample_images: dict[str, PushedImage]
) -> None:
    names = [f"rancher/resume-{i}" for i in range(8)]
    for name in names:
        push_image(
            registry.host,
            name,
            "1",
            [LINUX_AMD64],
            kind="oci-single",
            base_seed=name,
            layer_size=4 << 20,
        )
    write_list(workdir, [f"{registry.host}/{name}:1" for name in names])
    command = snakemake_command(workdir, {"file": "images.txt"}, "--cores", "2")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    status_dir = workdir / "saved-image-cache" / ".hangar" / "status"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(status_dir.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(status_dir.glob("*.json")))
    assert 0 < done_before < len(names), "the kill must land mid-run"

    run_workflow(workdir, {"file": "images.txt"}, "--cores", "2")
    assert len(entries_by_source(workdir / "saved-image-cache")) == len(names)
    for entry in saved_list(workdir / "saved-image-cache")["List"]:
        oci_manifest(workdir / "saved-image-cache", entry["Images"][0]["Folder"])
    assert not list((workdir / "saved-image-cache" / ".hangar" / "tmp").iterdir())


def test_saved_folders_load_into_another_registry_as_hangar_does(
    full_save: Path, registry_factory: Any, sample_images: dict[str, PushedImage]
) -> None:
    target = registry_factory()
    cache = full_save / "saved-image-cache"
    for entry in saved_list(cache)["List"]:
        repo = entry["Source"].split("/", 1)[1]
        for saved in entry["Images"]:
            copied_tag = next(
                tag
                for tag in _candidate_tags(entry["Tag"], saved)
                if folder_of(entry["Source"], tag) == saved["Folder"]
            )
            subprocess.run(
                [
                    "skopeo",
                    "--insecure-policy",
                    "copy",
                    "--quiet",
                    "--src-shared-blob-dir",
                    str(cache / "share"),
                    "--dest-tls-verify=false",
                    f"oci:{cache / saved['Folder']}",
                    f"docker://{target.host}/{repo}:{copied_tag}",
                ],
                check=True,
                capture_output=True,
            )
            pushed = json.loads(
                subprocess.run(
                    [
                        "skopeo",
                        "inspect",
                        "--raw",
                        "--tls-verify=false",
                        f"docker://{target.host}/{repo}:{copied_tag}",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            source = sample_images[f"{repo}:{entry['Tag']}"]
            layers = next(m for m in source.manifests if m.digest == saved["Digest"]).layer_digests
            assert [layer["digest"] for layer in pushed["layers"]] == list(layers)


def _candidate_tags(tag: str, saved: dict[str, str]) -> list[str]:
    arch = (
        saved["Arch"]
        if saved["Arch"] in ("amd64", "arm64")
        else saved["Arch"] + saved.get("Variant", "")
    )
    os_part = "" if saved["OS"] == "linux" else f"-{saved['OS']}"
    version = f"-{saved['OsVersion']}" if saved.get("OsVersion") else ""
    return [f"{tag}{os_part}-{arch}{version}"]


def test_one_image_under_many_tags_saves_concurrently(workdir: Path, registry: Registry) -> None:
    """skopeo rewrites a shared manifest in place; jobs saving the same one must not trip."""
    image = push_image(
        registry.host, "rancher/retagged", "0", [LINUX_AMD64], kind="oci-single", base_seed="rt"
    )
    refs = [image.ref]
    for tag in range(1, 12):
        refs.append(f"{registry.host}/rancher/retagged:{tag}")
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
             f"docker://{image.ref}", f"docker://{refs[-1]}"],
            check=True,
        )  # fmt: skip
    write_list(workdir, refs)
    run_workflow(workdir, {"file": "images.txt"}, "--cores", "12")
    assert len(entries_by_source(workdir / "saved-image-cache")) == len(refs)
    assert not (workdir / "save-failed.txt").exists()
