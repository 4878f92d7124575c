"""Which earlier saves are trusted on resume, on a synthetic cache (no registry)."""

import hashlib
import json
from pathlib import Path

import pytest

from hangar.save.cachecheck import invalidate_stale
from hangar.status import ImageStatus, SavedPlatform, write_atomic


def add_blob(cache: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = cache / "share" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def add_image(cache: Path, image_id: str, folder: str, layers: list[bytes]) -> list[dict]:
    """A saved one-platform image with the given layers; returns the layer descriptors."""
    layer_descriptors = [add_blob(cache, layer) for layer in layers]
    config = add_blob(cache, json.dumps({"id": image_id}).encode())
    manifest = add_blob(
        cache,
        json.dumps({"schemaVersion": 2, "config": config, "layers": layer_descriptors}).encode(),
    )
    (cache / folder / "blobs").mkdir(parents=True)
    (cache / folder / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest]})
    )
    saved = SavedPlatform(manifest["digest"], "amd64", "linux", folder)
    status = ImageStatus(f"r/{image_id}:1", f"r/{image_id}", "1", "ok", saved=[saved])
    write_atomic(cache / ".hangar" / "status" / f"{image_id}.json", status.to_json())
    return layer_descriptors


def blob_path(cache: Path, descriptor: dict) -> Path:
    return cache / "share" / "sha256" / descriptor["digest"].removeprefix("sha256:")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    add_image(cache, "a", "fa", [b"base layer", b"a top"])
    add_image(cache, "b", "fb", [b"base layer", b"b top"])
    add_image(cache, "c", "fc", [b"c only"])
    status_dir = cache / ".hangar" / "status"
    write_atomic(status_dir / "failed.json", ImageStatus("r/f:1", "r/f", "1", "failed").to_json())
    write_atomic(status_dir / "skipped.json", ImageStatus("r/s:1", "r/s", "1", "skipped").to_json())
    write_atomic(status_dir / "garbage.json", "{not json")
    return cache


IDS = ["a", "b", "c", "failed", "skipped", "garbage", "never-saved"]


def remaining(cache: Path) -> list[str]:
    return sorted(p.stem for p in (cache / ".hangar" / "status").iterdir())


def test_healthy_saves_are_kept_failed_and_unreadable_ones_redone(cache: Path) -> None:
    result = invalidate_stale(cache, IDS)
    assert sorted(result.retried) == ["failed", "garbage"]
    assert remaining(cache) == ["a", "b", "c", "skipped"]


def test_a_vanished_folder_redoes_its_image(cache: Path) -> None:
    (cache / "fc" / "index.json").unlink()
    assert invalidate_stale(cache, ["a", "b", "c"]).retried == ["c"]


def test_a_truncated_shared_blob_redoes_exactly_the_images_using_it(cache: Path) -> None:
    base = json.loads(
        (cache / "share" / "sha256")
        .joinpath(
            json.loads((cache / "fa" / "index.json").read_text())["manifests"][0]["digest"][7:]
        )
        .read_text()
    )["layers"][0]
    blob_path(cache, base).write_bytes(b"base")
    result = invalidate_stale(cache, ["a", "b", "c"])
    assert result.retried == ["a", "b"]
    assert result.removed_blobs == [base["digest"]]
    assert not blob_path(cache, base).exists()  # skopeo would otherwise reuse it


def test_same_size_corruption_needs_the_digest_check(cache: Path) -> None:
    manifest_digest = json.loads((cache / "fc" / "index.json").read_text())["manifests"][0][
        "digest"
    ]
    layer = json.loads((cache / "share" / "sha256" / manifest_digest[7:]).read_text())["layers"][0]
    blob_path(cache, layer).write_bytes(b"C ONLY")  # same size, other bytes
    assert invalidate_stale(cache, ["a", "b", "c"], "size").retried == []
    assert invalidate_stale(cache, ["a", "b", "c"], "digest").retried == ["c"]


def test_leftovers_of_killed_jobs_are_removed(cache: Path) -> None:
    staging = cache / ".hangar" / "tmp" / f"{'f' * 64}.abc" / "layout"
    staging.mkdir(parents=True)
    unfinished = cache / ".hangar" / "status" / ".a.json.x1y2.tmp"
    unfinished.write_text("{")
    result = invalidate_stale(cache, ["a"])
    assert sorted(result.removed_leftovers) == [".a.json.x1y2.tmp", f"{'f' * 64}.abc"]
    assert not unfinished.exists() and not staging.exists()
    assert (cache / ".hangar" / "status" / "a.json").exists()
