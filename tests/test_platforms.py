"""Platform selection and hangar's naming of copied tags and cache folders."""

import hashlib
import json

import pytest

from hangar.platforms import (
    Platform,
    index_platforms,
    is_index,
    schema1_platform,
    select,
    single_platform,
)


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (Platform("d", "linux", "amd64"), "1.25-amd64"),
        (Platform("d", "linux", "arm64", "v8"), "1.25-arm64"),
        (Platform("d", "linux", "arm", "v7"), "1.25-armv7"),
        (Platform("d", "linux", "arm", "v6"), "1.25-armv6"),
        (Platform("d", "linux", "s390x"), "1.25-s390x"),
        (Platform("d", "linux", "ppc64le"), "1.25-ppc64le"),
        (
            Platform("d", "windows", "amd64", "", "10.0.17763.2114"),
            "1.25-windows-amd64-10.0.17763.2114",
        ),
    ],
)
def test_copied_tag(platform: Platform, expected: str) -> None:
    assert platform.copied_tag("1.25") == expected


def test_folder_is_sha256_of_source_and_copied_tag() -> None:
    platform = Platform("d", "linux", "amd64")
    expected = hashlib.sha256(b"docker.io/library/nginx:1.25-amd64").hexdigest()
    assert platform.folder("docker.io/library/nginx", "1.25") == expected


INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {
            "digest": "sha256:b",
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {"digest": "sha256:c", "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "sha256:d"},
        {
            "digest": "sha256:e",
            "platform": {"os": "windows", "architecture": "amd64", "os.version": "10.0.1"},
        },
    ],
}


def test_index_platforms_skip_attestations_and_platformless_entries() -> None:
    assert is_index(INDEX)
    found = index_platforms(INDEX)
    assert [p.digest for p in found] == ["sha256:a", "sha256:b", "sha256:e"]
    assert found[1].variant == "v8"
    assert found[2].os_version == "10.0.1"


def test_docker_manifest_list_is_an_index() -> None:
    assert is_index({"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json"})
    assert not is_index({"mediaType": "application/vnd.docker.distribution.manifest.v2+json"})


def test_select_needs_both_arch_and_os() -> None:
    found = index_platforms(INDEX)
    assert [p.digest for p in select(found, ["amd64"], ["linux"])] == ["sha256:a"]
    assert [p.digest for p in select(found, ["amd64", "arm64"], ["windows"])] == ["sha256:e"]
    assert select(found, ["s390x"], ["linux", "windows"]) == []


def test_single_manifest_platform_comes_from_its_config() -> None:
    raw = b'{"schemaVersion":2}'
    platform = single_platform(raw, {"os": "linux", "architecture": "arm", "variant": "v7"})
    assert platform.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert platform.copied_tag("1") == "1-armv7"


def test_schema1_manifest() -> None:
    raw = json.dumps({"schemaVersion": 1, "architecture": "amd64"}).encode()
    assert schema1_platform(raw).architecture == "amd64"


def test_colliding_copied_tags_keep_the_first_platform() -> None:
    from hangar.save.image import one_per_folder

    v2 = Platform("sha256:1", "linux", "amd64", "v2")
    v3 = Platform("sha256:2", "linux", "amd64", "v3")
    arm = Platform("sha256:3", "linux", "arm64", "v8")
    warnings: list[str] = []
    kept = one_per_folder([v2, v3, arm], "r/x", "1", warnings.append)
    assert kept == [v2, arm]
    assert len(warnings) == 1 and "linux/amd64/v3" in warnings[0]
