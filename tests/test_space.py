"""The free-space checks of the image jobs and of the archive step, on made-up figures."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest

import hangar.save.space as space
from hangar.platforms import Platform, manifest_digest
from hangar.reasons import step_error_line
from hangar.resolve import Resolved
from hangar.save.space import (
    MARGIN_BYTES,
    NoSpaceError,
    archive_need,
    bytes_to_write,
    check_archive_space,
    check_image_space,
    known_blobs,
)
from hangar.status import ImageStatus, unoffered_warning

Usage = namedtuple("Usage", "total used free")
MiB = 1 << 20


def digest(name: str) -> str:
    return "sha256:" + name * 64


def single(layers: list[int]) -> Resolved:
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": digest("c"), "size": 100},
        "layers": [{"digest": digest(str(n)), "size": size} for n, size in enumerate(layers)],
    }
    raw = json.dumps(manifest).encode()
    platform = Platform(manifest_digest(raw), "linux", "amd64")
    return Resolved(manifest_digest(raw), raw, platforms=[platform])


def index() -> Resolved:
    entries = [
        {"digest": digest("a"), "size": 500, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": digest("b"), "size": 700, "platform": {"os": "linux", "architecture": "arm64"}},
    ]
    raw = json.dumps({"schemaVersion": 2, "manifests": entries}).encode()
    platforms = [Platform(digest("a"), "linux", "amd64"), Platform(digest("b"), "linux", "arm64")]
    return Resolved(manifest_digest(raw), raw, platforms=platforms)


def free(monkeypatch: pytest.MonkeyPatch, free_bytes: int) -> None:
    monkeypatch.setattr(space.shutil, "disk_usage", lambda path: Usage(1 << 40, 0, free_bytes))


def test_a_single_manifest_tells_every_blob_an_index_only_its_manifests() -> None:
    resolved = single([10 * MiB, 5 * MiB])
    blobs, complete = known_blobs(resolved, resolved.platforms)
    assert complete and sum(size for _, size in blobs) == len(resolved.raw) + 100 + 15 * MiB
    top = index()
    blobs, complete = known_blobs(top, top.platforms[:1])
    assert not complete and blobs == [(top.digest, len(top.raw)), (digest("a"), 500)]


def test_blobs_already_in_the_cache_are_not_counted(tmp_path: Path) -> None:
    blob = tmp_path / "share" / "sha256" / ("1" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    blobs = [(digest("0"), 10 * MiB), (digest("1"), 5 * MiB), (digest("0"), 10 * MiB)]
    assert bytes_to_write(tmp_path, blobs) == 10 * MiB


def test_an_image_that_will_not_fit_stops_the_run_with_one_plain_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = single([30 * MiB])
    logged: list[str] = []
    free(monkeypatch, 20 * MiB)
    with pytest.raises(NoSpaceError) as raised:
        check_image_space(tmp_path, "reg/app:1", resolved, resolved.platforms, logged.append)
    assert (
        str(raised.value) == f"no space left on {tmp_path}: reg/app:1 needs 46.0 MiB, 20.0 MiB free"
    )
    assert logged == [f"ERROR: {raised.value}"]
    assert step_error_line(raised.value, tmp_path) == f"ERROR: {raised.value}"
    free(monkeypatch, 47 * MiB)
    check_image_space(tmp_path, "reg/app:1", resolved, resolved.platforms, logged.append)


def test_for_an_index_the_need_is_a_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = index()
    free(monkeypatch, MARGIN_BYTES - 1)
    with pytest.raises(NoSpaceError, match=r"reg/multi:1 needs at least 16\.0 MiB, 16\.0 MiB free"):
        check_image_space(tmp_path / "cache", "reg/multi:1", top, top.platforms, lambda _: None)


def test_the_archive_needs_about_the_saved_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [40 * MiB, 20 * MiB, 300]
    assert archive_need(sizes, "gzip", True) == sum(sizes) + 1024 * 7
    assert archive_need(sizes, "dir", True) == 4096 * 7  # hard links
    assert archive_need(sizes, "dir", False) == sum(sizes) + 1024 * 7
    free(monkeypatch, 50 * MiB)
    with pytest.raises(NoSpaceError) as raised:
        check_archive_space(tmp_path, tmp_path / "out.tar.gz", sizes, "gzip")
    assert str(raised.value).startswith(
        f"no space left on {tmp_path} for the archive: it needs about 60.0 MiB (the saved "
        "images), 50.0 MiB free; free some space or choose another destination"
    )
    assert "--ignore-free-space" in str(raised.value)
    check_archive_space(tmp_path, tmp_path / "out", sizes, "dir")  # links: fits


def status(*available: str) -> ImageStatus:
    return ImageStatus("reg/a:1", "reg/a", "1", "ok", available=list(available))


def test_requested_names_no_image_offers_are_one_warning() -> None:
    statuses = [status("linux/amd64", "linux/arm/v7"), status("windows/amd64 (10.0.17763)")]
    assert unoffered_warning(statuses, ["amd64", "arm"], ["linux", "windows"]) == ""
    assert unoffered_warning(statuses, ["amd64", "s390x"], ["linux"]) == (
        "WARNING: no image offers arch s390x: nothing was saved for it"
    )
    assert unoffered_warning(statuses, ["s390x", "mips64"], ["linux", "plan9"]) == (
        "WARNING: no image offers arch s390x, arch mips64, os plan9: nothing was saved for them"
    )
    # the defaults (amd64,arm64 and linux,windows) are no one's request: not named
    amd64_only = [status("linux/amd64")]
    assert unoffered_warning(amd64_only, ["amd64", "arm64"], ["linux", "windows"]) == ""
    # nothing read (every image failed), or only artifacts: nothing is known
    assert unoffered_warning([status()], ["s390x"], ["linux"]) == ""
    assert unoffered_warning([status("artifact application/x")], ["s390x"], ["linux"]) == ""
