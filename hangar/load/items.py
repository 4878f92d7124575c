"""What a load pushes: the images (and OCI artifacts) of saved-images-list.json, one job each."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hangar.layout import INDEX_NAME, LIST_NAME, LIST_VERSION, saved_list_path
from hangar.platforms import Platform

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
Kind = Literal["image", "artifact"]


class SavedListError(ValueError):
    """saved-images-list.json is unusable; the message names the entry at fault."""


@dataclass(frozen=True)
class SavedPlatform:
    platform: Platform  # digest: the digest recorded in the list (the source's)
    folder: str


@dataclass(frozen=True)
class LoadItem:
    """One image (all its saved platforms) or one OCI artifact of the list."""

    kind: Kind
    source: str
    tag: str
    platforms: tuple[SavedPlatform, ...] = field(default=())
    folder: str = ""  # an artifact's layout
    digest: str = ""  # an artifact's manifest digest

    @property
    def line(self) -> str:
        """How the load-failed list names it (hangar: ``Source:Tag``)."""
        return f"{self.source}:{self.tag}"

    @property
    def item_id(self) -> str:
        digest = hashlib.sha256(f"{self.kind}:{self.line}".encode()).hexdigest()[:12]
        readable = _ID_UNSAFE.sub("_", self.line.split("/", 1)[-1]).strip("._-")[:48]
        return f"{readable}-{digest}"


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or not value:
        raise SavedListError(f"{where}: {key} is missing or not a string")
    return value


def parse_saved_list(data: bytes, where: str = LIST_NAME) -> list[LoadItem]:
    try:
        document = json.loads(data)
    except ValueError as problem:
        raise SavedListError(f"{where}: not JSON ({problem})") from None
    if not isinstance(document, dict):
        raise SavedListError(f"{where}: not a JSON object")
    if document.get("Version") != LIST_VERSION:
        raise SavedListError(
            f"{where}: Version {document.get('Version')!r}, expected {LIST_VERSION}"
        )
    items: list[LoadItem] = []
    for number, entry in enumerate(document.get("List") or []):
        at = f"{where}: List[{number}]"
        platforms = []
        for index, image in enumerate(entry.get("Images") or []):
            image_at = f"{at}.Images[{index}]"
            platform = Platform(
                digest=_text(image, "Digest", image_at),
                os=_text(image, "OS", image_at),
                architecture=_text(image, "Arch", image_at),
                variant=image.get("Variant", ""),
                os_version=image.get("OsVersion", ""),
            )
            platforms.append(SavedPlatform(platform, _text(image, "Folder", image_at)))
        items.append(
            LoadItem("image", _text(entry, "Source", at), _text(entry, "Tag", at), tuple(platforms))
        )
    for number, entry in enumerate(document.get("Artifacts") or []):
        at = f"{where}: Artifacts[{number}]"
        items.append(
            LoadItem(
                "artifact",
                _text(entry, "Source", at),
                _text(entry, "Tag", at),
                folder=_text(entry, "Folder", at),
                digest=_text(entry, "Digest", at),
            )
        )
    return items


def read_saved_list(root: Path) -> list[LoadItem]:
    path = saved_list_path(root)
    return parse_saved_list(path.read_bytes(), str(path))


def folder_manifest(root: Path, folder: str) -> dict[str, Any]:
    """The descriptor of the one manifest of a saved layout (mediaType, digest, size)."""
    path = root / folder / INDEX_NAME
    index = json.loads(path.read_text())
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise SavedListError(f"{path}: {len(manifests)} manifests, expected 1")
    descriptor: dict[str, Any] = manifests[0]
    return descriptor
