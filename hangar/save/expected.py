"""What an image job is about to copy, for the progress line's total: written once per image
after its manifest is read, before any blob is copied.

The manifest the job has read names the blobs (digest and size) of a single-manifest image or
artifact: those are *exact*. Of an index, it names the platform manifests only; their configs and
layers are known once the copy has fetched each manifest, so such an image says how many
platforms it copies and the progress line estimates their bytes from the images seen so far
(reading each platform's manifest beforehand would fetch it twice: on Docker Hub, a second pull).

``<cache>/.hangar/expected/<image id>.json``, written atomically; a later save of the image
rewrites it, so it is left in place (one small file per image).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangar.layout import expected_dir
from hangar.platforms import Platform, is_index

if TYPE_CHECKING:  # the watcher reads these files without the resolver's imports
    from hangar.resolve import Resolved

Blob = tuple[str, int]  # (digest, size)


@dataclass(frozen=True)
class Expected:
    platforms: int  # manifests to copy (an artifact is one)
    blobs: list[Blob] = field(default_factory=list)
    exact: bool = False  # blobs lists every blob the copies will fetch

    def to_json(self) -> str:
        return json.dumps({"platforms": self.platforms, "exact": self.exact, "blobs": self.blobs})

    @classmethod
    def read(cls, path: Path) -> Expected:
        data = json.loads(path.read_text())
        blobs = [(str(digest), int(size)) for digest, size in data["blobs"]]
        return cls(int(data["platforms"]), blobs, bool(data["exact"]))


def expected_path(cache: str | Path, image_id: str) -> Path:
    return expected_dir(cache) / f"{image_id}.json"


def manifest_blobs(manifest: Mapping[str, Any]) -> list[Blob]:
    """The config and layers an image (or artifact) manifest references."""
    config = [manifest["config"]] if isinstance(manifest.get("config"), Mapping) else []
    items = [*config, *(manifest.get("layers") or [])]
    return [(str(item["digest"]), int(item["size"])) for item in items]


def expected_of(resolved: Resolved, chosen: Sequence[Platform]) -> Expected:
    """What copying ``chosen`` (or the artifact) of ``resolved`` fetches, as far as its top
    manifest tells."""
    platforms = 1 if resolved.artifact is not None else len(chosen)
    try:
        manifest = json.loads(resolved.raw)
        if is_index(manifest) or "layers" not in manifest or not platforms:
            return Expected(platforms)
        top = (resolved.digest, len(resolved.raw))
        return Expected(platforms, [top, *manifest_blobs(manifest)], exact=True)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Expected(platforms)


def write_expected(cache: str | Path, image_id: str, expected: Expected) -> None:
    """Atomically (renamed into place), without fsync: only the progress line reads it."""
    path = expected_path(cache, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(expected.to_json())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
