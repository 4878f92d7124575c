"""The tag of a loaded image: an index of the pushed platforms merged with the destination's.

Platforms the destination tag already lists and the load does not bring are kept (hangar #22:
amd64 loaded after arm64 gives both); a platform in both takes the new digest. The result is a
Docker manifest list when every entry is a Docker v2s2 manifest, else an OCI index (which may
reference Docker manifests; registries accept that).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hangar.layout import INDEX_NAME, OCI_LAYOUT_NAME
from hangar.platforms import is_index, manifest_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
PLATFORM_KEYS = ("architecture", "os", "variant", "os.version")


def platform_key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    platform = entry.get("platform") or {}
    return tuple(str(platform.get(key, "")) for key in PLATFORM_KEYS)


def existing_entries(raw: bytes | None) -> list[dict[str, Any]]:
    """The platform entries of the destination tag, when it is a list or an index."""
    if not raw:
        return []
    try:
        document = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(document, dict) or not is_index(document):
        return []  # a single manifest: overwritten, as hangar does
    return [entry for entry in document.get("manifests", []) if isinstance(entry, dict)]


def merged_index(pushed: Sequence[dict[str, Any]], existing: Sequence[dict[str, Any]]) -> bytes:
    """The index bytes: ``pushed`` entries first, then the kept ``existing`` ones."""
    brought = {platform_key(entry) for entry in pushed}
    kept = [entry for entry in existing if platform_key(entry) not in brought]
    entries = [*pushed, *kept]
    docker = all(entry.get("mediaType") == DOCKER_MANIFEST for entry in entries)
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": entries,
    }
    return json.dumps(document, indent=3).encode()


def index_entry(descriptor: Mapping[str, Any], platform: Mapping[str, str]) -> dict[str, Any]:
    return {
        "mediaType": descriptor["mediaType"],
        "digest": descriptor["digest"],
        "size": descriptor["size"],
        "platform": {key: value for key, value in platform.items() if value},
    }


def write_index_layout(layout: Path, index: bytes) -> str:
    """A one-blob OCI layout holding ``index``, for ``skopeo copy --multi-arch=index-only``."""
    digest = manifest_digest(index)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest.removeprefix("sha256:")).write_bytes(index)
    media_type = json.loads(index)["mediaType"]
    top = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": len(index)}],
    }
    (layout / INDEX_NAME).write_text(json.dumps(top))
    (layout / OCI_LAYOUT_NAME).write_text('{"imageLayoutVersion":"1.0.0"}')
    return digest
