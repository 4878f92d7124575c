"""The image job's checks of the shared blob dir, which other jobs write at the same time."""

import hashlib
import threading
from pathlib import Path

import pytest

from hangar.layout import blob_path, share_path
from hangar.save.image import read_manifest_blob, remove_damaged, wrong_sized_blobs
from hangar.skopeo import InfrastructureError


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(cache: Path, data: bytes) -> tuple[str, Path]:
    digest = digest_of(data)
    path = blob_path(cache, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest, path


def test_a_manifest_being_fetched_again_is_waited_for(tmp_path: Path) -> None:
    manifest = b'{"schemaVersion": 2}'
    digest = digest_of(manifest)
    path = blob_path(tmp_path, digest)
    path.parent.mkdir(parents=True)
    writer = threading.Timer(0.2, path.write_bytes, (manifest,))
    writer.start()
    try:
        assert read_manifest_blob(share_path(tmp_path), digest) == manifest
    finally:
        writer.join()


def test_a_manifest_that_stays_wrong_fails_the_job(tmp_path: Path) -> None:
    digest, path = put_blob(tmp_path, b'{"schemaVersion": 2}')
    path.write_bytes(b'{"schemaVers')
    with pytest.raises(InfrastructureError, match="does not match its digest"):
        read_manifest_blob(share_path(tmp_path), digest, attempts=3)


def test_missing_and_wrong_sized_blobs_are_found(tmp_path: Path) -> None:
    good, _ = put_blob(tmp_path, b"good layer")
    short, short_path = put_blob(tmp_path, b"a layer cut short")
    short_path.write_bytes(b"a layer")
    missing = digest_of(b"never written")
    found = wrong_sized_blobs([(good, 10), (short, 17), (missing, 13)], share_path(tmp_path))
    assert found == {short_path: short_path.stat().st_ino, blob_path(tmp_path, missing): None}


def test_a_damaged_blob_replaced_meanwhile_by_another_job_is_kept(tmp_path: Path) -> None:
    damaged, damaged_path = put_blob(tmp_path, b"layer one")
    replaced, replaced_path = put_blob(tmp_path, b"layer two")
    found = wrong_sized_blobs([(damaged, 99), (replaced, 99)], share_path(tmp_path))
    # another job renames a complete copy into place, as skopeo writes layers
    fresh = replaced_path.with_name("fresh")
    fresh.write_bytes(b"layer two")
    fresh.rename(replaced_path)
    remove_damaged(found)
    assert not damaged_path.exists()
    assert replaced_path.read_bytes() == b"layer two"
