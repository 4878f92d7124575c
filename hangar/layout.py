"""Where things live in a cache, an archive and a split archive: the one place that names them.

A cache (and the top directory of every archive) is hangar v1.6's ``saved-image-cache`` layout::

    saved-image-cache/
    ├── <folder>/               one OCI layout per saved platform (index.json, oci-layout, blobs/)
    ├── saved-images-list.json  what was saved (hangar's v1.1.0 format)
    ├── share/sha256/<hex>      every blob, once
    └── .hangar/                this tool's state, never archived (status files, staging, locks,
                                what each image job expects to copy)

An archive ``DEST`` is one file, or the parts ``DEST.part0``, ``DEST.part1``, … of its stream,
with ``DEST.sha256`` beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

TOP_DIR = "saved-image-cache"  # the archive's top directory, and the default cache
LIST_NAME = "saved-images-list.json"
LIST_VERSION = "v1.1.0"  # hangar v1.6 load refuses any other
SHARE_DIR = "share"
BLOB_DIR = f"{SHARE_DIR}/sha256"
INDEX_NAME = "index.json"
OCI_LAYOUT_NAME = "oci-layout"
STATE_DIR = ".hangar"

_PART_SUFFIX = re.compile(r"\.part(0|[1-9][0-9]*)")
_CHECKSUM_SUFFIX = ".sha256"


def saved_list_path(root: str | Path) -> Path:
    return Path(root) / LIST_NAME


def share_path(root: str | Path) -> Path:
    """The shared blob dir, as skopeo's ``--dest-shared-blob-dir`` / ``--src-shared-blob-dir``."""
    return Path(root) / SHARE_DIR


def blob_path(root: str | Path, digest: str) -> Path:
    """``<root>/share/sha256/<hex>`` for ``sha256:<hex>``."""
    return Path(root) / BLOB_DIR / digest.removeprefix("sha256:")


def state_path(root: str | Path) -> Path:
    return Path(root) / STATE_DIR


def status_dir(root: str | Path) -> Path:
    """Where the save jobs' status files are written."""
    return state_path(root) / "status"


def expected_dir(root: str | Path) -> Path:
    """What each image job is about to copy (``hangar.save.expected``), for the progress line;
    one small file per image, rewritten by each save of it."""
    return state_path(root) / "expected"


def tmp_dir(root: str | Path) -> Path:
    """Staging layouts of copies under way; their leftovers are removed at the next run."""
    return state_path(root) / "tmp"


def run_lock_path(root: str | Path) -> Path:
    return state_path(root) / "run.lock"


def ratelimit_dir(root: str | Path) -> Path:
    """Per-registry pause files after a 429 (``hangar.ratelimit``)."""
    return state_path(root) / "ratelimit"


def claims_dir(root: str | Path) -> Path:
    """``<folder>`` files naming the image that owns each cache folder (``hangar.save.claims``)."""
    return state_path(root) / "claims"


def destination_lock_path(destination: str | Path) -> Path:
    """``.DEST.lock`` beside the archive: one run at a time writes a destination."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.lock")


def part_path(destination: str | Path, number: int) -> Path:
    """The ``number``-th part of a split archive: ``DEST.partN`` (zero-based, decimal)."""
    destination = Path(destination)
    return destination.with_name(f"{destination.name}.part{number}")


def part_number(destination: str | Path, name: str) -> int | None:
    """N when ``name`` is ``DEST.partN`` (no leading zeros), else None."""
    prefix = Path(destination).name
    if not name.startswith(prefix):
        return None
    match = _PART_SUFFIX.fullmatch(name[len(prefix) :])
    return int(match.group(1)) if match else None


def split_part(path: str | Path) -> tuple[Path, int] | None:
    """``(DEST, N)`` for a path named ``DEST.partN``, else None."""
    path = Path(path)
    match = _PART_SUFFIX.search(path.name)
    if match is None or match.end() != len(path.name) or match.start() == 0:
        return None
    return path.with_name(path.name[: match.start()]), int(match.group(1))


def parts_on_disk(destination: str | Path) -> dict[int, Path]:
    """Every ``DEST.partN`` beside ``DEST``, by number (gaps included: the caller judges them)."""
    destination = Path(destination)
    parent = destination.parent
    if not parent.is_dir():
        return {}
    found: dict[int, Path] = {}
    for entry in parent.iterdir():
        number = part_number(destination, entry.name)
        if number is not None:
            found[number] = entry
    return dict(sorted(found.items()))


def checksum_path(destination: str | Path) -> Path:
    """``DEST.sha256``: sha256sum lines for the archive's files (and the whole split stream)."""
    destination = Path(destination)
    return destination.with_name(destination.name + _CHECKSUM_SUFFIX)


def split_checksum(path: str | Path) -> Path | None:
    """``DEST`` for a path named ``DEST.sha256``, else None."""
    path = Path(path)
    if not path.name.endswith(_CHECKSUM_SUFFIX) or path.name == _CHECKSUM_SUFFIX:
        return None
    return path.with_name(path.name.removesuffix(_CHECKSUM_SUFFIX))
