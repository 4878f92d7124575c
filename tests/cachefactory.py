"""Build a synthetic, valid saved-image cache without a registry.

Layout (see hangar.save.archive): one OCI layout per saved platform in `<cache>/<folder>/`, every
blob in `<cache>/share/sha256/`, `saved-images-list.json` naming the folders. Layers are random
(incompressible, like real layers): gzip or zstd data wrapping random bytes, or the random bytes as
they are (`layer_format`); one base layer is shared by every image. Optional
extras: a folder whose index.json points at an image index, stale folders/blobs not in the list, and
workflow state under `.hangar/`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import zstandard
from isal import igzip

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SAVED_TIME = "2024-01-29T12:37:26+08:00"


@dataclass
class SyntheticCache:
    root: Path
    folders: list[str] = field(default_factory=list)
    blobs: set[str] = field(default_factory=set)  # hex digests referenced by the list
    stale: list[str] = field(default_factory=list)  # paths (relative) that must not be archived
    layer_bytes: int = 0

    def selected_files(self) -> list[str]:
        """Relative paths of every file the archive must hold."""
        files = ["saved-images-list.json"]
        for folder in self.folders:
            files += [f"{folder}/index.json", f"{folder}/oci-layout"]
        files += [f"share/sha256/{digest}" for digest in self.blobs]
        return sorted(files)

    def selected_dirs(self) -> list[str]:
        dirs = ["share", "share/sha256"]
        for folder in self.folders:
            dirs += [folder, f"{folder}/blobs"]
        return sorted(dirs)


def _put_blob(root: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "share" / "sha256" / digest
    if not path.exists():
        path.write_bytes(data)
    return digest, len(data)


LayerFormat = Literal["gzip", "raw", "mixed"]


def _layer(rng: random.Random, size: int, layer_format: LayerFormat, number: int) -> bytes:
    """`size` random bytes, as gzip data (a real layer's format), raw, or (mixed) by turns gzip,
    raw and zstd."""
    payload = rng.randbytes(size)
    kind = ("gzip", "raw", "zstd")[number % 3] if layer_format == "mixed" else layer_format
    if kind == "gzip":
        return igzip.compress(payload, 1, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(payload)
    return payload


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": size}


def _json(document: object) -> bytes:
    return json.dumps(document, indent=1).encode()


def _write_layout(root: Path, folder: str, top: dict[str, object]) -> None:
    (root / folder / "blobs").mkdir(parents=True)
    index = {"schemaVersion": 2, "manifests": [top]}
    (root / folder / "index.json").write_bytes(_json(index))
    (root / folder / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))


def make_cache(
    root: Path,
    *,
    images: int = 3,
    arches: tuple[str, ...] = ("amd64", "arm64"),
    layers: int = 2,
    layer_size: int = 64 * 1024,
    seed: int = 0,
    nested_index: bool = True,
    stale: bool = True,
    layer_format: LayerFormat = "mixed",
) -> SyntheticCache:
    """Create the cache in `root` (created if missing); returns what the archive must contain."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "share" / "sha256").mkdir(parents=True, exist_ok=True)
    cache = SyntheticCache(root)
    shared, shared_size = _put_blob(root, _layer(rng, layer_size, layer_format, 0))
    made = 1
    listing: list[dict[str, object]] = []
    for number in range(images):
        source, tag = f"registry.example/library/app{number}", f"v{number}.0"
        entries: list[dict[str, str]] = []
        for arch in arches:
            blobs = [shared]
            descriptors = [_descriptor(LAYER, shared, shared_size)]
            for _ in range(layers):
                payload = _layer(rng, rng.randint(1, layer_size), layer_format, made)
                made += 1
                digest, size = _put_blob(root, payload)
                blobs.append(digest)
                descriptors.append(_descriptor(LAYER, digest, size))
            config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}
            config_digest, config_size = _put_blob(root, _json(config))
            manifest = {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": _descriptor(CONFIG, config_digest, config_size),
                "layers": descriptors,
            }
            digest, size = _put_blob(root, _json(manifest))
            blobs += [config_digest, digest]
            top = _descriptor(MANIFEST, digest, size)
            if nested_index and number == 0 and arch == arches[0]:
                index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [top]}
                index_digest, index_size = _put_blob(root, _json(index))
                blobs.append(index_digest)
                top = _descriptor(INDEX, index_digest, index_size)
            folder = hashlib.sha256(f"{source}:{tag}/linux/{arch}".encode()).hexdigest()
            _write_layout(root, folder, top)
            cache.folders.append(folder)
            cache.blobs.update(blobs)
            image = {"Digest": f"sha256:{digest}", "Arch": arch, "OS": "linux", "Folder": folder}
            entries.append(image)
        listing.append(
            {
                "Source": source,
                "Tag": tag,
                "ArchList": list(arches),
                "OsList": ["linux"],
                "Images": entries,
            }
        )
    document = {"List": listing, "Version": "v1.1.0", "SavedTime": SAVED_TIME}
    (root / "saved-images-list.json").write_bytes(_json(document))
    if stale:
        _add_stale(root, cache, rng)
    for digest in cache.blobs:
        if digest != shared:
            cache.layer_bytes += (root / "share" / "sha256" / digest).stat().st_size
    cache.layer_bytes += shared_size
    return cache


def _add_stale(root: Path, cache: SyntheticCache, rng: random.Random) -> None:
    """Content a resumed or failed save leaves behind: must stay out of the archive."""
    digest, size = _put_blob(root, rng.randbytes(1000))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": _descriptor(CONFIG, digest, size),
        "layers": [],
    }
    manifest_digest, manifest_size = _put_blob(root, _json(manifest))
    folder = hashlib.sha256(b"stale").hexdigest()
    _write_layout(root, folder, _descriptor(MANIFEST, manifest_digest, manifest_size))
    (root / ".hangar" / "status").mkdir(parents=True, exist_ok=True)
    (root / ".hangar" / "status" / "img.json").write_text('{"status": "ok"}')
    cache.stale += [
        folder,
        f"share/sha256/{digest}",
        f"share/sha256/{manifest_digest}",
        ".hangar",
    ]
