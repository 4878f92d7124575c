"""The test infrastructure itself: registries, synthetic images, the catalogue."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.images import (
    CATALOGUE,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    LINUX_AMD64,
    LINUX_ARM64_V8,
    OCI_MANIFEST,
    PlatformSpec,
    PushedImage,
    build_image,
    inspect_raw,
    push_image,
)
from support.registry import Registry, clean_env


def raw_manifest(ref: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """(digest, parsed body) of `docker://ref` as the registry serves it."""
    result = inspect_raw(ref, **options)
    assert result.returncode == 0, result.stderr
    return f"sha256:{hashlib.sha256(result.stdout.encode()).hexdigest()}", json.loads(result.stdout)


def test_platform_spec_parse_and_key() -> None:
    spec = PlatformSpec.parse("linux/arm64/v8")
    assert spec == LINUX_ARM64_V8
    assert spec.key == "linux/arm64/v8"
    assert PlatformSpec.parse("windows/amd64", os_version="10.0.1").key == "windows/amd64:10.0.1"
    with pytest.raises(ValueError, match="os/arch"):
        PlatformSpec.parse("amd64")


def test_layers_are_deterministic(tmp_path: Path) -> None:
    def build(root: Path, repo: str) -> list[str]:
        _, _, manifests = build_image(
            root, repo, "1", [LINUX_AMD64], kind="oci-single", base_seed="base"
        )
        return list(manifests[0].layer_digests)

    first, again, other = (
        build(tmp_path / "a", "x"),
        build(tmp_path / "b", "x"),
        build(tmp_path / "c", "y"),
    )
    assert first == again
    assert first[0] == other[0] and first[1] != other[1]  # same base layer, own top layer


def test_registry_answers(registry: Registry) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
    assert registry.host.startswith("127.0.0.1:")


def test_catalogue_has_every_manifest_kind(sample_images: dict[str, PushedImage]) -> None:
    assert list(sample_images) == [entry.name for entry in CATALOGUE]
    assert sample_images["rancher/busybox:1.36"].media_type == DOCKER_LIST
    assert sample_images["library/alpine:3.18"].media_type == DOCKER_MANIFEST
    assert sample_images["rancher/s390x-only:1.0"].media_type == OCI_MANIFEST
    assert sample_images["rancher/windows-app:3.6"].platforms == [
        "linux/amd64",
        "windows/amd64:10.0.17763.2114",
    ]
    assert sample_images["rancher/no-platform:1.0"].platforms[-1] == "none"


@pytest.mark.parametrize("name", [entry.name for entry in CATALOGUE])
def test_pushed_image_matches_registry(sample_images: dict[str, PushedImage], name: str) -> None:
    image = sample_images[name]
    digest, top = raw_manifest(image.ref)
    assert (digest, top["mediaType"]) == (image.digest, image.media_type)
    if image.is_list:
        entries = top["manifests"]
        assert [e["digest"] for e in entries] == [m.digest for m in image.manifests]
        for entry, pushed in zip(entries, image.manifests, strict=True):
            if pushed.platform.in_index:
                assert entry["platform"] == pushed.platform.index_platform()
            else:
                assert "platform" not in entry
    for pushed in image.manifests:
        digest, manifest = raw_manifest(f"{image.host}/{image.repo}@{pushed.digest}")
        assert digest == pushed.digest
        assert manifest["config"]["digest"] == pushed.config_digest
        assert tuple(layer["digest"] for layer in manifest["layers"]) == pushed.layer_digests


def test_shared_images_share_base_layers(sample_images: dict[str, PushedImage]) -> None:
    nginx, shared_a, shared_b = (
        sample_images[name]
        for name in ("library/nginx:1.25", "rancher/shared-a:1", "rancher/shared-b:1")
    )
    for platform in ("linux/amd64", "linux/arm64/v8"):
        bases = {image.manifest(platform).layer_digests[0] for image in (nginx, shared_a, shared_b)}
        tops = {image.manifest(platform).layer_digests[1] for image in (nginx, shared_a, shared_b)}
        assert len(bases) == 1 and len(tops) == 3
    _, manifest_a = raw_manifest(
        f"{shared_a.host}/{shared_a.repo}@{shared_a.manifest(LINUX_AMD64).digest}"
    )
    _, manifest_b = raw_manifest(
        f"{shared_b.host}/{shared_b.repo}@{shared_b.manifest(LINUX_AMD64).digest}"
    )
    assert manifest_a["layers"][0]["digest"] == manifest_b["layers"][0]["digest"]
    assert manifest_a["layers"][0]["mediaType"] != manifest_b["layers"][0]["mediaType"]


def test_saved_platform_keeps_layer_digests(
    sample_images: dict[str, PushedImage], tmp_path: Path
) -> None:
    """What a save does: copy one platform by digest into an OCI layout with a shared blob dir."""
    image = sample_images["rancher/busybox:1.36"]
    pushed = image.manifest("linux/arm/v7")
    share = tmp_path / "share"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"]
        + [f"docker://{image.host}/{image.repo}@{pushed.digest}", f"oci:{tmp_path / 'layout'}"]
        + [f"--dest-shared-blob-dir={share}"],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    oci_manifest = json.loads((share / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert oci_manifest["mediaType"] == OCI_MANIFEST  # converted from Docker v2 schema 2
    assert tuple(layer["digest"] for layer in oci_manifest["layers"]) == pushed.layer_digests
    saved = {f"sha256:{path.name}" for path in (share / "sha256").iterdir()}
    assert set(pushed.layer_digests) <= saved
    # The conversion re-encodes the config: a Docker image's saved config digest is a new one.
    assert oci_manifest["config"]["digest"] != pushed.config_digest


def test_htpasswd_registry_checks_credentials(auth_registry: Registry) -> None:
    assert auth_registry.creds
    with pytest.raises(RuntimeError, match="(?i)unauthorized|authentication"):
        push_image(auth_registry.host, "auth/denied", "1", None, kind="oci-single", base_seed="a")
    image = push_image(
        auth_registry.host,
        "auth/app",
        "1",
        None,
        kind="oci-single",
        base_seed="a",
        creds=auth_registry.creds,
    )
    assert raw_manifest(image.ref, creds=auth_registry.creds)[0] == image.digest
    for creds in (None, "hangar:wrong-password"):
        refused = inspect_raw(image.ref, creds=creds)
        assert refused.returncode != 0
        assert (
            "unauthorized" in refused.stderr.lower() or "authentication" in refused.stderr.lower()
        )


def test_tls_registry_needs_its_ca(tls_registry: Registry) -> None:
    assert tls_registry.url.startswith("https://") and tls_registry.ca_file
    image = push_image(
        tls_registry.host,
        "tls/app",
        "1",
        [LINUX_AMD64, LINUX_ARM64_V8],
        kind="oci-index",
        base_seed="t",
        tls_verify=True,
        cert_dir=tls_registry.cert_dir,
    )
    digest, _ = raw_manifest(image.ref, tls_verify=True, cert_dir=tls_registry.cert_dir)
    assert digest == image.digest
    refused = inspect_raw(image.ref, tls_verify=True)
    assert refused.returncode != 0 and "certificate" in refused.stderr


def test_restart_keeps_port_and_images(registry_factory: Callable[..., Registry]) -> None:
    private = registry_factory()
    image = push_image(private.host, "restart/app", "1", None, kind="docker-single", base_seed="r")
    port = private.port
    private.stop()
    assert not private.running
    assert inspect_raw(image.ref).returncode != 0
    private.start()
    assert private.port == port
    assert raw_manifest(image.ref)[0] == image.digest
