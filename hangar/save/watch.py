"""What a running save has done so far, read from the cache the image jobs write.

The image jobs know nothing about the display. Each writes ``<cache>/.hangar/expected/<id>.json``
(``hangar.save.expected``) once its manifest is read and ``<cache>/.hangar/status/<id>.json``
when its image is done, both atomically. ``StatusWatcher`` polls those directories, the shared
blob dir and the staging layouts (directory scans, plus one small read per new file: cheap twice
a second at 10,000 images and blobs) and tells new results from the ones an earlier run left
behind, so a resumed run counts them apart.

Bytes are those this run downloads: blobs that were not in ``share/sha256`` when it started.
skopeo writes each config and layer to ``oci-put-blob*`` in the staging layout while it
downloads it, then renames it into ``share/sha256``, so bytes are counted as they arrive.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hangar.layout import (
    INDEX_NAME,
    blob_path,
    expected_dir,
    part_number,
    status_dir,
    tmp_dir,
)
from hangar.save.expected import Blob, Expected, manifest_blobs
from hangar.status import ImageStatus

SKOPEO_TEMPORARY = "oci-put-blob"  # skopeo 1.9's temporary blob files, in the layout it writes
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_MANIFEST_BYTES = 4 << 20  # skopeo's own limit on a manifest


@dataclass
class Tally:
    """Counts over the images of the list; ``resumed`` images are part of ``saved``."""

    total: int
    saved: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    platforms: int = 0
    bytes_total: int = 0

    @property
    def done(self) -> int:
        return self.saved + self.failed + self.skipped


@dataclass(frozen=True)
class Bytes:
    """Bytes this run has downloaded, and those it will download in all when known
    (``approximate``: partly estimated from the images seen so far)."""

    done: int = 0
    total: int | None = None
    approximate: bool = False


@dataclass
class Known:
    """What the watcher knows of the images of this run, for the total."""

    new_bytes: int = 0  # of known blobs not in the cache at the start, each counted once
    known_platforms: int = 0  # platforms whose every blob is known
    unknown_platforms: int = 0  # started, blobs not known yet (platforms of an index)
    started_images: int = 0  # including finished ones
    started_platforms: int = 0
    pending_images: int = 0  # not started yet


def estimate_total(known: Known) -> tuple[int | None, bool]:
    """``(total, approximate)``: exact when every image has started and every started image's
    blobs are known; else the unknown platforms are counted at the mean new bytes per known
    platform, and the images not started at the mean platforms per started image. None when
    nothing is known yet."""
    if not known.unknown_platforms and not known.pending_images:
        return known.new_bytes, False
    if not known.known_platforms or not known.started_images:
        return None, True
    per_platform = known.new_bytes / known.known_platforms
    per_image = known.started_platforms / known.started_images
    unknown = known.unknown_platforms + known.pending_images * per_image
    return round(known.new_bytes + unknown * per_platform), True


def layout_blobs(cache: Path, folder: str) -> list[Blob] | None:
    """Every blob a saved folder's layout references, read back from the cache (None when it
    cannot be read: the folder is being replaced, or a descriptor is not a manifest's)."""
    try:
        pending = list(json.loads((cache / folder / INDEX_NAME).read_text())["manifests"])
        blobs: list[Blob] = []
        while pending:
            descriptor = pending.pop()
            digest, size = str(descriptor["digest"]), int(descriptor["size"])
            if not DIGEST.fullmatch(digest) or size > MAX_MANIFEST_BYTES:
                return None  # never a path out of the blob dir, nor a layer read whole
            blobs.append((digest, size))
            manifest = json.loads(blob_path(cache, digest).read_bytes())
            pending += manifest.get("manifests") or []
            blobs += manifest_blobs(manifest)
        return blobs
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


_FileKey = tuple[int, int]  # (inode, mtime in ns): changes whenever a file is rewritten
RECENT_NS = 2_000_000_000  # a directory changed this recently is read again (timestamp ticks)


class Listing:
    """A directory's entries, read again only when the directory has changed (a file was
    created, renamed or removed in it): one stat per poll while nothing happens."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._mtime: int | None = None
        self._entries: list[os.DirEntry[str]] = []

    def changed(self) -> bool:
        """True (and the entries read again) when the directory may have changed."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if mtime == self._mtime and time.time_ns() - mtime > RECENT_NS:
            return False
        self._mtime = mtime
        try:
            self._entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            self._entries = []
        return True

    def entries(self) -> list[os.DirEntry[str]]:
        return self._entries


class ImageFiles:
    """The ``<id>.json`` files of the wanted images in a directory, with their keys; ``stat``
    False keys them by inode alone (files only ever renamed into place: no stat per file)."""

    def __init__(self, directory: Path, wanted: set[str], stat: bool = True) -> None:
        self.listing = Listing(directory)
        self.wanted = wanted
        self.stat = stat
        self._keys: dict[str, _FileKey] = {}

    def keys(self) -> dict[str, _FileKey]:
        if not self.listing.changed():
            return self._keys
        keys: dict[str, _FileKey] = {}
        for entry in self.listing.entries():
            image_id = entry.name.removesuffix(".json")
            if image_id == entry.name or image_id not in self.wanted:
                continue
            try:
                if self.stat:
                    stat = entry.stat()
                    keys[image_id] = (stat.st_ino, stat.st_mtime_ns)
                else:
                    keys[image_id] = (entry.inode(), 0)
            except FileNotFoundError:
                continue
        self._keys = keys
        return keys


class BlobCounter:
    """Bytes downloaded since it was made: new files of ``share/sha256`` and skopeo's
    temporary files growing in the staging layouts."""

    def __init__(self, cache: str | Path) -> None:
        self.blobs = Listing(blob_path(cache, ""))
        self.blobs.changed()
        self.before = frozenset(entry.name for entry in self.blobs.entries())
        self.staging = tmp_dir(cache)
        self._sizes: dict[str, int] = {}  # new blobs: renamed into place whole, sized once
        self._done = 0
        self._known: dict[str, int] = {}  # blobs expected, each once
        self._new_known = 0  # bytes of those not in the cache at the start

    def done(self) -> int:
        if self.blobs.changed():  # first: a blob renamed meanwhile is counted once
            names = {entry.name: entry for entry in self.blobs.entries()}
            for name in self._sizes.keys() - names.keys():
                del self._sizes[name]
            for name in names.keys() - self._sizes.keys() - self.before:
                try:
                    self._sizes[name] = names[name].stat().st_size
                except FileNotFoundError:
                    continue
            self._done = sum(self._sizes.values())
        return self._done + self.growing()

    def growing(self) -> int:
        """Bytes of the blobs skopeo is downloading now."""
        total = 0
        try:
            stagings = [entry.path for entry in os.scandir(self.staging) if entry.is_dir()]
        except FileNotFoundError:
            return 0
        for staging in stagings:
            try:
                entries = list(os.scandir(os.path.join(staging, "layout")))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.startswith(SKOPEO_TEMPORARY):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        continue
        return total

    def expect(self, blobs: Iterable[Blob]) -> None:
        """Blobs this run copies: their bytes count in ``new_bytes`` unless already cached."""
        for digest, size in blobs:
            if digest not in self._known:
                self._known[digest] = size
                if digest.split(":")[-1] not in self.before:
                    self._new_known += size

    @property
    def new_bytes(self) -> int:
        """Bytes of the expected blobs that were not in the cache at the start."""
        return self._new_known


class StatusWatcher:
    """Follows the expected and status files of the listed images while the workflow runs."""

    def __init__(self, cache: str | Path, image_ids: Iterable[str]) -> None:
        self.cache = Path(cache)
        self.directory = status_dir(cache)
        self.expected_directory = expected_dir(cache)
        self.ids = list(dict.fromkeys(image_ids))
        self._wanted = set(self.ids)
        self._status_files = ImageFiles(self.directory, self._wanted)
        self._expected_files = ImageFiles(self.expected_directory, self._wanted, stat=False)
        self._before = dict(self._status_files.keys())
        self._expected_before = dict(self._expected_files.keys())
        self.counter = BlobCounter(cache)
        self._current: dict[str, tuple[_FileKey, ImageStatus]] = {}
        self._expected: dict[str, tuple[_FileKey, Expected]] = {}
        self._saved_blobs: dict[str, tuple[_FileKey, list[Blob] | None]] = {}
        self._reported: set[str] = set()
        self._seen: tuple[object, object] = (None, None)  # the status and expected keys read
        self._generation = 0  # changes whenever a status or expected file is read
        self._known: tuple[int, Known] | None = None
        self._done = 0

    def poll(self, only: Iterable[str] | None = None) -> list[tuple[str, ImageStatus]]:
        """Re-read changed status files (all, or those of the images ``only`` names: a stat
        each instead of a listing of the directory, which would make a run's polls after each
        job grow with the square of the list); return the images this run finished, once each."""
        if only is not None:
            named = [image_id for image_id in only if image_id in self._wanted]
            keys: dict[str, _FileKey] = {}
            for image_id in named:
                try:
                    found = (self.directory / f"{image_id}.json").stat()
                except FileNotFoundError:
                    continue
                keys[image_id] = (found.st_ino, found.st_mtime_ns)
            self._read(keys)
            return self._finished(named)
        keys = self._status_files.keys()
        if keys is self._seen[0]:
            return []  # the directory has not changed
        self._seen = (keys, self._seen[1])
        for image_id in set(self._current) - set(keys):
            # A directory listing taken while files are renamed into it may miss some.
            if not (self.directory / f"{image_id}.json").exists():
                del self._current[image_id]
        self._read(keys)
        return self._finished(self.ids)

    def _read(self, keys: dict[str, _FileKey]) -> None:
        self._generation += 1
        for image_id, key in keys.items():
            known = self._current.get(image_id)
            if known is not None and known[0] == key:
                continue
            try:
                status = ImageStatus.read(self.directory / f"{image_id}.json")
            except (OSError, ValueError, TypeError):
                continue  # vanished or replaced while reading: next poll
            self._current[image_id] = (key, status)

    def _finished(self, candidates: Iterable[str]) -> list[tuple[str, ImageStatus]]:
        finished = []
        for image_id in candidates:
            if image_id in self._reported or not self.is_new(image_id):
                continue
            self._reported.add(image_id)
            finished.append((image_id, self._current[image_id][1]))
        return finished

    def is_new(self, image_id: str) -> bool:
        """True when this run wrote the image's current status."""
        known = self._current.get(image_id)
        return known is not None and known[0] != self._before.get(image_id)

    def statuses(self) -> dict[str, ImageStatus]:
        """The current status of every listed image that has one, in list order."""
        return {i: self._current[i][1] for i in self.ids if i in self._current}

    def tally(self, final: bool = False) -> Tally:
        """Counts so far. Until ``final``, an earlier run's failure counts as still to do:
        the workflow retries it."""
        tally = Tally(total=len(self.ids))
        for image_id, status in self.statuses().items():
            new = self.is_new(image_id)
            if status.state == "failed":
                if new or final:
                    tally.failed += 1
            elif status.is_saved:
                tally.saved += 1
                tally.platforms += len(status.saved)
                tally.bytes_total += status.saved_bytes
                if not new:
                    tally.resumed += 1
            else:
                tally.skipped += 1
        return tally

    # -- bytes ------------------------------------------------------------------------------

    def _poll_expected(self) -> None:
        keys = self._expected_files.keys()
        if keys is self._seen[1]:
            return
        self._seen = (self._seen[0], keys)
        self._generation += 1
        for image_id, key in keys.items():
            if key == self._expected_before.get(image_id):
                continue  # an earlier run's
            known = self._expected.get(image_id)
            if known is not None and known[0] == key:
                continue
            try:
                expected = Expected.read(self.expected_directory / f"{image_id}.json")
            except (OSError, ValueError, TypeError, KeyError):
                continue
            self._expected[image_id] = (key, expected)
            if expected.exact:
                self.counter.expect(expected.blobs)

    def _finished_blobs(self, image_id: str) -> list[Blob] | None:
        """The blobs of an image this run saved, read from its layouts once."""
        key, status = self._current[image_id]
        known = self._saved_blobs.get(image_id)
        if known is None or known[0] != key or known[1] is None:
            blobs: list[Blob] | None = []
            for folder in status.folders:
                found = layout_blobs(self.cache, folder)
                blobs = None if found is None or blobs is None else blobs + found
            known = self._saved_blobs[image_id] = (key, blobs)
            if blobs is not None:
                self.counter.expect(blobs)
        return known[1]

    def known(self) -> Known:
        """What is known of this run's images so far (call after ``poll``)."""
        self._poll_expected()
        if self._known is not None and self._known[0] == self._generation:
            return self._known[1]
        known, unread = Known(), False
        for image_id in self.ids:
            current = self._current.get(image_id)
            if current is not None and self.is_new(image_id):
                status = current[1]
                platforms = len(status.saved) + (1 if status.artifact else 0)
                if status.is_saved and self._finished_blobs(image_id) is None:
                    known.unknown_platforms += platforms
                    unread = True  # read again next time
                else:
                    known.known_platforms += platforms
            elif current is not None and current[1].state != "failed":
                continue  # saved (or skipped) by an earlier run, not saved again
            elif image_id in self._expected:
                expected = self._expected[image_id][1]
                platforms = expected.platforms
                if expected.exact:
                    known.known_platforms += platforms
                else:
                    known.unknown_platforms += platforms
            else:
                known.pending_images += 1
                continue
            known.started_images += 1
            known.started_platforms += platforms
        known.new_bytes = self.counter.new_bytes
        self._known = None if unread else (self._generation, known)
        return known

    def bytes(self) -> Bytes:
        """Bytes downloaded so far, of the total (call after ``poll``). Never fewer than last
        time: a blob renamed into place between the two scans is missed once."""
        done = self._done = max(self._done, self.counter.done())
        total, approximate = estimate_total(self.known())
        if total is not None:
            total = max(total, done)
        return Bytes(done, total, approximate)


def archive_bytes(destination: str | Path, since: float) -> int:
    """Bytes of the archive being written: its temporary files and the parts done so far."""
    destination = Path(destination)
    total = 0
    try:
        entries = list(os.scandir(destination.parent))
    except OSError:
        return 0
    name = destination.name
    for entry in entries:
        temporary = entry.name.startswith(f".{name}") and ".tmp-" in entry.name
        part = part_number(destination, entry.name) is not None
        if not (temporary or part):
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue
        if temporary or stat.st_mtime >= since:
            total += stat.st_size
    return total
