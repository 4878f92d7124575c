"""Load side, no registry: repository mapping, merged index, input location, saved list."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from hangar.layout import LIST_NAME, TOP_DIR
from hangar.load.destination import destination_repository, project_of
from hangar.load.extract import ExtractError, extract
from hangar.load.index import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, merged_index
from hangar.load.items import SavedListError, parse_saved_list
from hangar.load.source import LoadInputError, locate_input
from hangar.verify import verify

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def entry(arch: str, digest: str, media_type: str = OCI_MANIFEST) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": 1,
        "platform": {"architecture": arch, "os": "linux"},
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("reg.example:5000/rancher/busybox", "dest:5000/rancher/busybox"),
        ("reg.example/busybox", "dest:5000/library/busybox"),
        ("docker.io/library/nginx", "dest:5000/library/nginx"),
        ("localhost/app", "dest:5000/library/app"),
        ("rancher/app", "dest:5000/rancher/app"),
    ],
)
def test_repository_mapping_as_hangar(source: str, expected: str) -> None:
    assert destination_repository(source, "dest:5000", "library") == expected


def test_project_of() -> None:
    assert project_of("dest:5000/rancher/busybox") == "rancher"
    assert project_of("dest:5000/busybox") == ""


def test_merge_keeps_platforms_not_brought_and_takes_new_digests() -> None:
    existing = [entry("arm64", "sha256:old-arm"), entry("amd64", "sha256:old-amd")]
    index = json.loads(merged_index([entry("amd64", "sha256:new-amd")], existing))
    assert index["mediaType"] == OCI_INDEX
    assert [(e["platform"]["architecture"], e["digest"]) for e in index["manifests"]] == [
        ("amd64", "sha256:new-amd"),
        ("arm64", "sha256:old-arm"),
    ]


def test_docker_manifests_only_give_a_docker_list() -> None:
    index = json.loads(merged_index([entry("amd64", "sha256:a", DOCKER_MANIFEST)], []))
    assert index["mediaType"] == DOCKER_LIST
    mixed = merged_index([entry("amd64", "sha256:a", DOCKER_MANIFEST)], [entry("arm64", "b")])
    assert json.loads(mixed)["mediaType"] == OCI_INDEX


def _write_parts(dest: Path, count: int) -> None:
    lines = []
    for number in range(count):
        part = dest.with_name(f"{dest.name}.part{number}")
        part.write_bytes(b"\x1f\x8b" + bytes([number]) * 10)
        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        lines.append(f"{digest}  {part.name}\n")
    whole = hashlib.sha256(
        b"".join(dest.with_name(f"{dest.name}.part{n}").read_bytes() for n in range(count))
    ).hexdigest()
    lines.append(f"{whole}  {dest.name}\n")
    dest.with_name(f"{dest.name}.sha256").write_text("".join(lines))


def test_parts_are_taken_in_numeric_order(tmp_path: Path) -> None:
    dest = tmp_path / "x.tar.gz"
    _write_parts(dest, 12)
    for given in (dest, dest.with_name("x.tar.gz.part0")):
        found = locate_input(given)
        assert found.format == "gzip"
        assert found.plan is not None
        assert [p.name for p in found.plan.files] == [f"x.tar.gz.part{n}" for n in range(12)]


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    dest = tmp_path / "x.tar.gz"
    _write_parts(dest, 12)
    dest.with_name("x.tar.gz.part7").unlink()
    with pytest.raises(LoadInputError, match=r"x\.tar\.gz\.part7: part 7 of 12 is missing"):
        locate_input(dest)


def test_a_directory_needs_its_list(tmp_path: Path) -> None:
    with pytest.raises(LoadInputError, match="no saved-images-list.json"):
        locate_input(tmp_path, "dir")


def test_saved_list_with_artifacts() -> None:
    document = {
        "Version": "v1.1.0",
        "List": [
            {
                "Source": "r.io/a/b",
                "Tag": "1",
                "Images": [{"Digest": "sha256:x", "Arch": "amd64", "OS": "linux", "Folder": "f"}],
            }
        ],
        "Artifacts": [
            {"Source": "r.io/charts/c", "Tag": "0.1", "Digest": "sha256:y", "Folder": "g"}
        ],
    }
    items = parse_saved_list(json.dumps(document).encode())
    assert [(i.kind, i.line) for i in items] == [
        ("image", "r.io/a/b:1"),
        ("artifact", "r.io/charts/c:0.1"),
    ]
    assert len({i.item_id for i in items}) == 2
    document["Version"] = "v1.0.0"
    with pytest.raises(SavedListError, match="Version"):
        parse_saved_list(json.dumps(document).encode())


def test_entries_outside_the_top_directory_are_refused_by_extract_and_verify(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [
            (f"{TOP_DIR}/{LIST_NAME}", b"{}"),
            ("beside.txt", b"x"),
            (f"{TOP_DIR}/../../escaped.txt", b"x"),
        ]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    cache = tmp_path / "cache"
    with pytest.raises(ExtractError) as raised:
        extract(locate_input(archive), cache)
    refused = [line.split(":")[0] for line in str(raised.value).splitlines()]
    assert refused == ["beside.txt", f"{TOP_DIR}/../../escaped.txt"]
    assert not (tmp_path / "escaped.txt").exists()
    assert (cache / LIST_NAME).read_bytes() == b"{}"
    errors = verify(archive, require_checksums=False).findings.errors
    outside = [error for error in errors if "entry outside" in error]
    assert [error.split(":")[0] for error in outside] == refused
