"""Deleting inside a cache without ever reaching outside it.

Only names the workflow itself creates are deleted, and a symbolic link is removed as a link,
never followed: a link planted in the cache (``.hangar/tmp`` pointing at a home directory, say)
cannot turn a cleanup into the deletion of someone else's files. The cache's own directories
must be real directories (``check_own_dirs``); the cache root itself may be a link.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from hangar.layout import BLOB_DIR, SHARE_DIR, STATE_DIR

HEX64 = re.compile(r"[0-9a-f]{64}")


class UnsafeCacheError(Exception):
    """A directory of the cache is a symbolic link: the run refuses to write or delete there."""


def own_dirs(cache: Path) -> list[Path]:
    """The directories inside a cache that the workflow writes to and cleans."""
    return [cache / SHARE_DIR, cache / BLOB_DIR, cache / STATE_DIR] + (
        [path for path in (cache / STATE_DIR).iterdir() if path.name != "run.lock"]
        if (cache / STATE_DIR).is_dir() and not (cache / STATE_DIR).is_symlink()
        else []
    )


def check_own_dirs(cache: Path) -> None:
    """Refuse a cache whose own directories are symbolic links (they would lead outside it)."""
    for path in own_dirs(cache):
        if path.is_symlink():
            raise UnsafeCacheError(
                f"{path} is a symbolic link: the cache must hold its own directories (replace "
                "the link by a directory, or put the whole cache elsewhere with --cache)"
            )


def is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def remove(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a directory tree (links in it are
    removed as links: ``shutil.rmtree`` does not follow them)."""
    if is_real_dir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_matching(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    """Delete the entries of a real ``directory`` whose names match ``pattern``; returns them."""
    if not is_real_dir(directory):
        return []
    removed = []
    for path in sorted(directory.iterdir()):
        if pattern.fullmatch(path.name):
            remove(path)
            removed.append(path.name)
    return removed


def remove_blobs(blob_dir: Path, hex_digests: Iterable[str]) -> None:
    """Delete blobs ``<blob_dir>/<64 hex>`` of a real blob dir; other names are left alone."""
    if not is_real_dir(blob_dir):
        return
    for hex_digest in hex_digests:
        if HEX64.fullmatch(hex_digest):
            (blob_dir / hex_digest).unlink(missing_ok=True)
