"""Platforms of an image: read them from a manifest, filter them, and name their cache folders."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
SCHEMA1_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


@dataclass(frozen=True)
class Platform:
    """One platform manifest of an image, identified by its *source* digest."""

    digest: str
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        if self.variant:
            text += f"/{self.variant}"
        if self.os_version:
            text += f" ({self.os_version})"
        return text

    def copied_tag(self, tag: str) -> str:
        """Tag hangar gives this platform: ``<tag>[-<os>]-<arch-part>[-<os.version>]``."""
        parts = [tag]
        if self.os != "linux":
            parts.append(self.os)
        if self.architecture in ("amd64", "arm64"):
            parts.append(self.architecture)
        else:
            parts.append(self.architecture + self.variant)
        if self.os_version:
            parts.append(self.os_version)
        return "-".join(parts)

    def folder(self, source: str, tag: str) -> str:
        """Cache folder: sha256 hex of ``<registry/repository>:<copied tag>``."""
        return hashlib.sha256(f"{source}:{self.copied_tag(tag)}".encode()).hexdigest()


def manifest_digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def is_index(manifest: Mapping[str, Any]) -> bool:
    media_type = manifest.get("mediaType", "")
    return media_type in INDEX_MEDIA_TYPES or (not media_type and "manifests" in manifest)


def is_schema1(manifest: Mapping[str, Any]) -> bool:
    return manifest.get("schemaVersion") == 1 or manifest.get("mediaType") in SCHEMA1_MEDIA_TYPES


def index_platforms(index: Mapping[str, Any]) -> list[Platform]:
    """Platforms of an OCI index or Docker manifest list; attestations and unknowns are skipped."""
    found = []
    for entry in index.get("manifests", []):
        platform = entry.get("platform") or {}
        os_name = platform.get("os", "")
        arch = platform.get("architecture", "")
        if not os_name or not arch or "unknown" in (os_name, arch):
            continue
        found.append(
            Platform(
                digest=entry["digest"],
                os=os_name,
                architecture=arch,
                variant=platform.get("variant", ""),
                os_version=platform.get("os.version", ""),
            )
        )
    return found


def single_platform(raw_manifest: bytes, config: Mapping[str, Any]) -> Platform:
    """The one platform of a single-manifest image, from its image config."""
    return Platform(
        digest=manifest_digest(raw_manifest),
        os=config.get("os", ""),
        architecture=config.get("architecture", ""),
        variant=config.get("variant", ""),
        os_version=config.get("os.version", ""),
    )


def schema1_platform(raw_manifest: bytes) -> Platform:
    """Docker schema 1 manifests carry the architecture themselves and are always linux."""
    manifest = json.loads(raw_manifest)
    return Platform(
        digest=manifest_digest(raw_manifest),
        os="linux",
        architecture=manifest.get("architecture", ""),
    )


def select(platforms: Iterable[Platform], arch: Iterable[str], os: Iterable[str]) -> list[Platform]:
    """Keep platforms whose architecture and os are both wanted (exact match, variant ignored)."""
    wanted_arch, wanted_os = set(arch), set(os)
    return [p for p in platforms if p.architecture in wanted_arch and p.os in wanted_os]
