"""Resolve one line of the list: what its manifest is and which platforms it offers.

The one resolver of the project: the image job, the planner (``hangar plan``) and the dry run
of ``hangar save`` all read an image through ``resolve``. It reads manifests only (``skopeo
inspect --raw``, and the image config of a single-manifest image); no layer is downloaded.

An *artifact* (a Helm chart, a signature, an SBOM: a manifest whose config is not an image
config, or that carries ``artifactType``; or an index none of whose entries is a platform) has
no platforms: it is saved whole, by digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hangar.layout import blob_path
from hangar.platforms import (
    Platform,
    index_platforms,
    is_index,
    is_schema1,
    manifest_digest,
    schema1_platform,
    single_platform,
)
from hangar.skopeo import ImageError, Skopeo

IMAGE_CONFIG_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Artifact:
    """An OCI artifact: saved as it is in the source registry, by its manifest digest."""

    digest: str
    media_type: str  # of the manifest (or index)
    artifact_type: str  # the manifest's artifactType, else its config media type
    is_index: bool = False


def artifact_folder(source: str, tag: str) -> str:
    """An artifact's cache folder: sha256 hex of ``<source>:<tag>`` (an image platform's is
    that of ``<source>:<copied tag>``)."""
    return hashlib.sha256(f"{source}:{tag}".encode()).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """What a reference names: its top manifest, and either platforms or one artifact."""

    digest: str  # of the top manifest (index or single manifest)
    raw: bytes  # the top manifest
    platforms: list[Platform] = field(default_factory=list)
    artifact: Artifact | None = None

    @property
    def single(self) -> bool:
        """The top manifest is the only platform's manifest (no index)."""
        return (
            self.artifact is None
            and len(self.platforms) == 1
            and (self.platforms[0].digest == self.digest)
        )


def artifact_of(manifest: Mapping[str, Any], raw: bytes) -> Artifact | None:
    """The artifact a single manifest is, or None for an image manifest."""
    config = manifest.get("config")
    config_type = config.get("mediaType", "") if isinstance(config, Mapping) else ""
    artifact_type = manifest.get("artifactType") or ""
    if not artifact_type and config_type in IMAGE_CONFIG_MEDIA_TYPES:
        return None
    return Artifact(
        digest=manifest_digest(raw),
        media_type=str(manifest.get("mediaType") or OCI_MANIFEST),
        artifact_type=str(artifact_type or config_type),
    )


def index_artifact(index: Mapping[str, Any], raw: bytes) -> Artifact | None:
    """An index with entries of which none is a platform (charts, signatures) is an artifact."""
    entries = index.get("manifests") or []
    if not entries or index_platforms(index):
        return None
    return Artifact(
        digest=manifest_digest(raw),
        media_type=str(index.get("mediaType") or "application/vnd.oci.image.index.v1+json"),
        artifact_type=str(index.get("artifactType") or ""),
        is_index=True,
    )


def cached_config(manifest: Mapping[str, Any], cache: Path | None) -> bytes | None:
    """The image config a single manifest names, from the cache's blobs where an earlier copy
    put it and its content still matches its digest; else None."""
    config = manifest.get("config")
    digest = config.get("digest") if isinstance(config, Mapping) else None
    if cache is None or not isinstance(digest, str):
        return None
    try:
        data = blob_path(cache, digest).read_bytes()
    except OSError:
        return None
    return data if manifest_digest(data) == digest else None


def resolve(skopeo: Skopeo, reference: str, cache: Path | None = None) -> Resolved:
    """Read ``docker://reference``: its platforms (source digests), or the artifact it is.

    A single manifest's platform is in its image config: read from the ``cache`` when a copy
    already put it there, else fetched (one more request, a manifest's among them)."""
    raw = skopeo.inspect_raw(reference)
    digest = manifest_digest(raw)
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        if is_index(manifest):
            artifact = index_artifact(manifest, raw)
            if artifact is not None:
                return Resolved(digest, raw, artifact=artifact)
            return Resolved(digest, raw, platforms=index_platforms(manifest))
        if is_schema1(manifest):
            return Resolved(digest, raw, platforms=[schema1_platform(raw)])
        artifact = artifact_of(manifest, raw)
        if artifact is not None:
            return Resolved(digest, raw, artifact=artifact)
        config = json.loads(
            cached_config(manifest, cache) or skopeo.inspect_raw(reference, config=True)
        )
        return Resolved(digest, raw, platforms=[single_platform(raw, config)])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ImageError(
            f"the registry returned a malformed manifest or config ({error!r})"
        ) from None
