"""Decide, before a run, which earlier saves can be trusted; drop the others so they are redone.

An image is saved again when its last save failed, its status file is unreadable, one of its
folders is gone, or a blob its folders reference is missing or damaged. Damaged blobs are
deleted: skopeo reuses any blob file that exists, so a bad one must go before the re-save.

Two depths: ``size`` (default; one ``stat`` per blob, finds missing and truncated blobs) and
``digest`` (reads and hashes every referenced blob once, finds any corruption).

Staging layouts left in ``.hangar/tmp`` by jobs that were killed are removed as well. Call this
only while holding the run lock: no job of another run may be writing to the cache.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hangar.layout import INDEX_NAME, blob_path, expected_dir, share_path, status_dir, tmp_dir
from hangar.safedelete import check_own_dirs, remove_blobs, remove_matching
from hangar.save.claims import Claim, claim, release_stale
from hangar.status import ImageStatus, SavedPlatform

Depth = Literal["size", "digest"]

# What a blob digest may look like. Any other (from a damaged or tampered index.json or
# manifest) makes the save untrusted and is never used as a path: no file outside the shared
# blob dir can be read or deleted through it.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# What the image jobs leave behind when killed: staging dirs ``<folder>.<mkdtemp suffix>`` and
# unfinished status and expected files ``.<id>.json.<suffix>.tmp``. Nothing else is deleted.
_STAGING = re.compile(r"[0-9a-f]{64}\.[A-Za-z0-9_]+")
_STATUS_TEMP = re.compile(r"\.[A-Za-z0-9._-]+\.json\.[A-Za-z0-9_]+\.tmp")


@dataclass
class CheckResult:
    trusted: set[str] = field(default_factory=set)  # ids whose status is kept
    retried: list[str] = field(default_factory=list)
    removed_blobs: list[str] = field(default_factory=list)
    removed_leftovers: list[str] = field(default_factory=list)


def referenced_blobs(
    layout: Path, share: Path, index: Any | None = None
) -> Iterator[tuple[str, int]]:
    """(digest, size) of every blob the layout's index references, manifests included.
    ``index``: the layout's index.json, when already read."""
    if index is None:
        index = json.loads((layout / INDEX_NAME).read_text())
    pending = list(index["manifests"])
    while pending:
        descriptor = pending.pop()
        yield descriptor["digest"], descriptor["size"]
        document = json.loads(blob_path(share.parent, descriptor["digest"]).read_bytes())
        if "manifests" in document:
            pending.extend(document["manifests"])
            continue
        yield document["config"]["digest"], document["config"]["size"]
        for layer in document.get("layers", []):
            yield layer["digest"], layer["size"]


class BlobChecker:
    """Checks blobs of the shared dir, each at most once, deleting the damaged ones."""

    def __init__(self, share: Path, depth: Depth) -> None:
        self.share, self.depth = share, depth
        self.known: dict[str, bool] = {}
        self.removed: list[str] = []

    def ok(self, digest: str, size: int) -> bool:
        if digest not in self.known:
            self.known[digest] = self._check(digest, size)
        return self.known[digest]

    def _check(self, digest: str, size: int) -> bool:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            return False
        algorithm, _, hex_digest = digest.partition(":")
        path = self.share / algorithm / hex_digest
        try:
            good = path.stat().st_size == size
            if good and self.depth == "digest":
                good = _sha256_of(path) == hex_digest
        except FileNotFoundError:
            return False
        if not good:
            remove_blobs(path.parent, [hex_digest])
            self.removed.append(digest)
        return good

    def layout_ok(self, layout: Path, index: Any | None = None) -> bool:
        try:
            return all(self.ok(d, s) for d, s in referenced_blobs(layout, self.share, index))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return False  # unreadable index or manifest: damaged as well


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def invalidate_stale(
    cache: str | Path, image_ids: Iterable[str], depth: Depth = "size"
) -> CheckResult:
    """Remove the status files of saves that cannot be trusted, so those images are redone."""
    cache = Path(cache)
    check_own_dirs(cache)
    image_ids = list(image_ids)
    # claims of images no longer listed; the others are read once, here
    held = release_stale(cache, set(image_ids))
    directory = status_dir(cache)
    checker = BlobChecker(share_path(cache), depth)
    result = CheckResult()
    trusted_ids: set[str] = set()
    for image_id in image_ids:
        path = directory / f"{image_id}.json"
        try:
            status: ImageStatus | None = ImageStatus.read(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError):
            status = None
        indexes = _read_indexes(cache, status.folders if status else [])
        trusted = (
            status is not None
            and status.state != "failed"
            and all(checker.layout_ok(cache / f, indexes.get(f)) for f in status.folders)
            and all(_holds_its_manifest(cache, p, indexes.get(p.Folder)) for p in status.saved)
            and all(
                _owns(cache, held, p.Folder, Claim(image_id, status.reference))
                for p in status.saved
            )
        )
        if trusted:
            trusted_ids.add(image_id)
        else:
            path.unlink(missing_ok=True)
            result.retried.append(image_id)
    release_stale(cache, trusted_ids, held)  # and of those saved again: they claim anew
    result.trusted = trusted_ids
    result.removed_blobs = checker.removed
    result.removed_leftovers = remove_leftovers(cache)
    return result


def _read_indexes(cache: Path, folders: Iterable[str]) -> dict[str, Any]:
    """The index.json of each folder that has a readable one, read once for both checks."""
    indexes = {}
    for folder in folders:
        with suppress(OSError, ValueError, RecursionError):  # the checks read it again, and fail
            indexes[folder] = json.loads((cache / folder / INDEX_NAME).read_text())
    return indexes


def _holds_its_manifest(cache: Path, saved: SavedPlatform, index: Any | None = None) -> bool:
    """The folder still holds the manifest this save wrote (not another image's, copied over
    it). Statuses from before ``Layout`` was recorded are not checked. ``index``: the
    folder's index.json, when already read."""
    if not saved.Layout:
        return True
    try:
        if index is None:
            index = json.loads((cache / saved.Folder / INDEX_NAME).read_text())
        return [m["digest"] for m in index["manifests"]] == [saved.Layout]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return False


def _owns(cache: Path, held: dict[str, Claim], folder: str, claimant: Claim) -> bool:
    """The image holds the claim on its folder (taken now if nobody holds it). ``held``: the
    cache's claims, kept up to date here (no job runs meanwhile: the run lock is held)."""
    holder = held.get(folder)
    if holder is None:
        holder, _ = claim(cache, folder, claimant)
        if holder is None:
            held[folder] = claimant
            return True
    return holder.image_id == claimant.image_id


def remove_leftovers(cache: Path) -> list[str]:
    """Delete what killed jobs left: partial layouts in ``.hangar/tmp`` and unfinished status
    and expected files (``.<id>.json.*.tmp``), which nothing refers to. Only those names, never
    through a symbolic link. (Finished expected files stay: one per image, rewritten by each
    save of it.)"""
    return (
        remove_matching(tmp_dir(cache), _STAGING)
        + remove_matching(status_dir(cache), _STATUS_TEMP)
        + remove_matching(expected_dir(cache), _STATUS_TEMP)
    )
