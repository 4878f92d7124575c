"""The one resolver: images to platforms, OCI artifacts (Helm charts, signatures) to themselves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from hangar.platforms import manifest_digest
from hangar.resolve import artifact_folder, resolve
from hangar.skopeo import ImageError, Skopeo

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
HELM = "application/vnd.cncf.helm.config.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"


class Answers(Skopeo):
    """`inspect --raw` from a dict, recording what was asked."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        super().__init__(log=lambda _text: None)
        self.answers = answers
        self.asked: list[str] = []

    def inspect_raw(self, reference: str, config: bool = False) -> bytes:
        key = reference + (" --config" if config else "")
        self.asked.append(key)
        if key not in self.answers:
            raise ImageError(f"manifest unknown: {key}")
        return self.answers[key]


def manifest(config_type: str, **extra: Any) -> bytes:
    config = {"mediaType": config_type, "digest": "sha256:" + "c" * 64, "size": 2}
    document = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": []}
    return json.dumps(document | extra).encode()


def test_a_helm_chart_is_an_artifact_read_from_its_manifest_alone() -> None:
    raw = manifest(HELM)
    skopeo = Answers({"r/charts/app:1": raw})
    resolved = resolve(skopeo, "r/charts/app:1")
    assert resolved.platforms == []
    assert resolved.artifact is not None
    assert (resolved.artifact.digest, resolved.artifact.media_type) == (
        manifest_digest(raw),
        MANIFEST,
    )
    assert resolved.artifact.artifact_type == HELM
    assert skopeo.asked == ["r/charts/app:1"]  # no config: skopeo inspect --config refuses it


def test_an_artifact_type_makes_any_manifest_an_artifact() -> None:
    raw = manifest("application/vnd.oci.empty.v1+json", artifactType="application/spdx+json")
    resolved = resolve(Answers({"r/sbom:1": raw}), "r/sbom:1")
    assert (
        resolved.artifact is not None and resolved.artifact.artifact_type == "application/spdx+json"
    )


@pytest.mark.parametrize(
    "config_type",
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"],
)
def test_an_image_manifest_has_its_platform(config_type: str) -> None:
    raw = manifest(config_type)
    answers = {"r/a:1": raw, "r/a:1 --config": b'{"os": "linux", "architecture": "arm64"}'}
    resolved = resolve(Answers(answers), "r/a:1")
    assert resolved.artifact is None and resolved.single
    assert [(p.os, p.architecture, p.digest) for p in resolved.platforms] == [
        ("linux", "arm64", manifest_digest(raw))
    ]


def test_an_index_without_platforms_is_an_artifact_one_with_them_is_not() -> None:
    entry = {"mediaType": MANIFEST, "digest": "sha256:" + "d" * 64, "size": 9}
    charts = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry]}).encode()
    resolved = resolve(Answers({"r/c:1": charts}), "r/c:1")
    assert resolved.artifact is not None and resolved.artifact.is_index
    image = {**entry, "platform": {"os": "linux", "architecture": "amd64"}}
    attestation = {**entry, "platform": {"os": "unknown", "architecture": "unknown"}}
    both = json.dumps({"mediaType": INDEX, "manifests": [image, attestation]}).encode()
    resolved = resolve(Answers({"r/i:1": both}), "r/i:1")
    assert resolved.artifact is None and [p.architecture for p in resolved.platforms] == ["amd64"]


def test_a_malformed_manifest_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="malformed"):
        resolve(Answers({"r/x:1": b"[1, 2]"}), "r/x:1")


def test_artifact_folders_are_named_by_source_and_tag() -> None:
    expected = hashlib.sha256(b"r.io/charts/app:1.0").hexdigest()
    assert artifact_folder("r.io/charts/app", "1.0") == expected


def test_skopeo_from_settings_takes_the_registry_options() -> None:
    class Options:
        tls_verify, cert_dir, retry_times, retry_delay, timeout = False, "/certs", 5, 0.5, 30.0

    skopeo = Skopeo.from_settings(Options(), "/auth.json")
    assert (skopeo.tls_verify, skopeo.cert_dir, skopeo.authfile) == (False, "/certs", "/auth.json")
    assert (skopeo.retry_times, skopeo.retry_delay, skopeo.timeout) == (5, 0.5, 30.0)


def test_a_single_manifests_config_is_read_from_the_cache_when_a_copy_put_it_there(
    tmp_path: Path,
) -> None:
    config = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8"}).encode()
    digest = manifest_digest(config)
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": IMAGE_CONFIG, "digest": digest, "size": len(config)},
        "layers": [],
    }
    raw = json.dumps(document).encode()
    fetched = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    answers = {"r/app:1": raw, "r/app:1 --config": fetched}

    blob = tmp_path / "share" / "sha256" / digest.removeprefix("sha256:")
    blob.parent.mkdir(parents=True)
    blob.write_bytes(config)
    skopeo = Answers(answers)
    platform = resolve(skopeo, "r/app:1", tmp_path).platforms[0]
    assert (platform.architecture, platform.variant) == ("arm64", "v8")
    assert skopeo.asked == ["r/app:1"]  # no second manifest request

    blob.write_bytes(config[:-1])  # damaged: not trusted, fetched
    skopeo = Answers(answers)
    assert resolve(skopeo, "r/app:1", tmp_path).platforms[0].architecture == "amd64"
    assert skopeo.asked == ["r/app:1", "r/app:1 --config"]
    skopeo = Answers(answers)
    assert resolve(skopeo, "r/app:1").platforms[0].architecture == "amd64"  # no cache given
    assert skopeo.asked == ["r/app:1", "r/app:1 --config"]
