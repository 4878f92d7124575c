"""Which image owns each cache folder.

A folder is named after ``<source>:<copied tag>``, so two images of one list can need the same
one: ``coll:1`` windows/amd64 and ``coll:1-windows`` linux/amd64 are both ``1-windows-amd64``.
The later copy would overwrite the earlier, and saved-images-list.json would point the first
image at the second one's manifest.

Platforms are known only once an image is inspected, so the check is made there, before any
layer is downloaded: the image job claims each folder it is about to fill by creating
``<cache>/.hangar/claims/<folder>`` (``O_EXCL``: one creator wins, on a cluster file system as
well), holding the claimant's id, reference and list lines. An image whose folder is claimed by
another image fails, and its reason names both images and their lines. The tie-break: the
image already saved in the cache keeps the folder; between two new ones, the first to claim.
At the start of each run, claims of images no longer in the list, or whose save is redone, are
released (``release_stale``), and every trusted save holds its claims.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.layout import claims_dir


@dataclass(frozen=True)
class Claim:
    image_id: str
    reference: str
    lines: tuple[int, ...] = ()

    def describe(self) -> str:
        where = f" (line {', '.join(map(str, self.lines))})" if self.lines else ""
        return f"{self.reference}{where}"


def _path(cache: Path, folder: str) -> Path:
    return claims_dir(cache) / folder


def read_claim(cache: Path, folder: str) -> Claim | None:
    try:
        data = json.loads(_path(cache, folder).read_text())
        return Claim(str(data["image_id"]), str(data["reference"]), tuple(data.get("lines", ())))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Claim("", "an unreadable claim")


def claim(cache: Path, folder: str, claimant: Claim) -> tuple[Claim | None, bool]:
    """Claim ``folder`` for ``claimant``: (the other image holding it or None, whether this
    call created the claim)."""
    directory = claims_dir(cache)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(
        {"image_id": claimant.image_id, "reference": claimant.reference, "lines": claimant.lines}
    )
    for _ in range(3):
        try:
            fd = os.open(_path(cache, folder), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_claim(cache, folder)
            if holder is None:
                continue  # released meanwhile: try again
            return (None if holder.image_id == claimant.image_id else holder), False
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return None, True
    return read_claim(cache, folder), False


def claim_all(cache: Path, folders: Sequence[str], claimant: Claim) -> tuple[str, Claim] | None:
    """Claim every folder, or none: the first (folder, other image) in the way, or None."""
    created: list[str] = []
    for folder in folders:
        holder, new = claim(cache, folder, claimant)
        if holder is not None:
            for mine in created:
                release(cache, mine, claimant.image_id)
            return folder, holder
        if new:
            created.append(folder)
    return None


def release(cache: Path, folder: str, image_id: str) -> None:
    holder = read_claim(cache, folder)
    if holder is not None and holder.image_id == image_id:
        _path(cache, folder).unlink(missing_ok=True)


def read_claims(cache: Path) -> dict[str, Claim]:
    """Every claim of the cache, by folder (one read each)."""
    directory = claims_dir(cache)
    if not directory.is_dir() or directory.is_symlink():
        return {}
    held = {}
    for path in directory.iterdir():
        holder = read_claim(cache, path.name)
        if holder is not None:
            held[path.name] = holder
    return held


def release_stale(
    cache: Path, keep: Collection[str], held: dict[str, Claim] | None = None
) -> dict[str, Claim]:
    """Drop every claim whose image is not in ``keep`` (the ids with a trusted save); return
    the claims left, by folder. ``held``: the claims as read before (``read_claims``, or this
    function's result), when nothing else has changed them since."""
    kept = {}
    for folder, holder in (read_claims(cache) if held is None else held).items():
        if holder.image_id in keep:
            kept[folder] = holder
        else:
            _path(cache, folder).unlink(missing_ok=True)
    return kept
