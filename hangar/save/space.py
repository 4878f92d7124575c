"""Will the disk hold it? Checked where the figures are known, so that a full disk is one plain
line before the copy, not ENOSPC in the middle of one.

* An image job, once it has read its image: the blobs it knows it still has to write (a
  single-manifest image's config and layers; for an index, the platform manifests, whose layers
  are known only to the copy: no manifest is fetched twice) plus a margin, against the free
  space of the cache's file system. One ``statvfs``, a ``stat`` per known blob.
* The archive step, before writing: the saved images' size (the archive of already-compressed
  layers is about that) against the free space where the archive goes.

``hangar plan`` (and ``hangar save --dry-run``) has the whole list's figures before anything is
downloaded: see ``hangar.save.plan``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hangar.layout import blob_path
from hangar.platforms import Platform
from hangar.reasons import PlainError
from hangar.resolve import Resolved
from hangar.skopeo import InfrastructureError
from hangar.units import human_size

# Staging layouts, index.json files, the file system's own blocks; and for an index, at least
# some room for layers whose sizes only the copy learns.
MARGIN_BYTES = 16 << 20
TAR_ENTRY_BYTES = 1024  # a tar header and the padding of the last block, per file


class NoSpaceError(InfrastructureError, PlainError):
    """The disk will not hold what comes next; the message is the plain reason with figures."""


def existing_dir(path: Path) -> Path:
    """``path`` or its nearest existing ancestor: where its file system can be measured."""
    path = path.absolute()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing_dir(path)).free


def known_blobs(
    resolved: Resolved, chosen: Sequence[Platform]
) -> tuple[list[tuple[str, int]], bool]:
    """The blobs (digest, size) the resolution already tells of what the copy will write, and
    whether that is all of them (a single manifest: yes; an index: its manifests only)."""
    try:
        top = json.loads(resolved.raw)
    except ValueError:
        return [], False
    if not isinstance(top, dict):
        return [], False
    blobs = [(resolved.digest, len(resolved.raw))]
    if isinstance(top.get("manifests"), list):
        wanted = {platform.digest for platform in chosen} if resolved.artifact is None else None
        for entry in top["manifests"]:
            if isinstance(entry, dict) and (wanted is None or entry.get("digest") in wanted):
                blobs.append((str(entry.get("digest", "")), _size(entry)))
        return blobs, False
    descriptors = [top.get("config"), *(top.get("layers") or [])]
    blobs += [(str(d.get("digest", "")), _size(d)) for d in descriptors if isinstance(d, dict)]
    return blobs, True


def _size(descriptor: dict[str, object]) -> int:
    size = descriptor.get("size")
    return size if isinstance(size, int) and size > 0 else 0


def bytes_to_write(cache: Path, blobs: Iterable[tuple[str, int]]) -> int:
    """What of ``blobs`` is not in the cache's shared blob dir yet (each blob once)."""
    total = 0
    for digest, size in dict(blobs).items():
        if digest.startswith("sha256:") and not blob_path(cache, digest).exists():
            total += size
    return total


def check_image_space(
    cache: Path,
    reference: str,
    resolved: Resolved,
    chosen: Sequence[Platform],
    log: Callable[[str], None],
) -> None:
    """Raise NoSpaceError (logged) when the cache's file system has less room than
    ``reference`` still needs (what is known of it, plus the margin): the run stops before
    this copy."""
    blobs, complete = known_blobs(resolved, chosen)
    need = bytes_to_write(cache, blobs) + MARGIN_BYTES
    free = free_bytes(cache)
    if free < need:
        at_least = "" if complete else "at least "
        reason = (
            f"no space left on {existing_dir(cache)}: {reference} needs {at_least}"
            f"{human_size(need)}, {human_size(free)} free"
        )
        log(f"ERROR: {reason}")
        raise NoSpaceError(reason)


def archive_need(sizes: Iterable[int], compress: str, same_file_system: bool) -> int:
    """About what the archive of files of ``sizes`` takes: their size plus tar headers (gzip
    and zstd keep compressed layers at their size); a ``dir`` archive on the cache's file
    system is hard links, and its small files."""
    files = list(sizes)
    if compress == "dir" and same_file_system:
        return 4096 * (len(files) + 4)
    return sum(files) + TAR_ENTRY_BYTES * (len(files) + 4)


def check_archive_space(
    cache: Path, destination: Path, sizes: Iterable[int], compress: str
) -> None:
    """Raise NoSpaceError when the archive's file system has less room than the archive will
    take (about the size of the saved images)."""
    where = existing_dir(destination.parent if compress != "dir" else destination)
    same = where.stat().st_dev == existing_dir(cache).stat().st_dev
    need = archive_need(sizes, compress, same)
    free = free_bytes(where)
    if free < need:
        raise NoSpaceError(
            f"no space left on {where} for the archive: it needs about {human_size(need)} (the "
            f"saved images), {human_size(free)} free; free some space or choose another "
            "destination (ignore_free_space: true, or --ignore-free-space, writes it anyway)"
        )
