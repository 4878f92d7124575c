"""The status file each image job writes: what was saved, or why not.

Status files live in ``<cache>/.hangar/status/<image id>.json`` and are written atomically, so a
killed job never leaves one that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hangar.settings import schema_defaults

State = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class SavedPlatform:
    """One saved platform, in the field names of saved-images-list.json (plus its size)."""

    Digest: str
    Arch: str
    OS: str
    Folder: str
    Variant: str = ""
    OsVersion: str = ""
    Size: int = 0
    Layout: str = ""  # digest of the manifest in the folder's index.json (not in the saved list)


@dataclass(frozen=True)
class SavedArtifact:
    """A saved OCI artifact, in the field names of saved-images-list.json's ``Artifacts``."""

    Digest: str  # the manifest digest in the source registry
    MediaType: str
    ArtifactType: str
    Folder: str
    Size: int = 0


@dataclass
class ImageStatus:
    reference: str
    source: str
    tag: str
    state: State
    reason: str = ""
    saved: list[SavedPlatform] = field(default_factory=list)
    artifact: SavedArtifact | None = None
    available: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0

    @property
    def kind(self) -> str:
        return "artifact" if self.artifact is not None else "image"

    @property
    def is_saved(self) -> bool:
        """Something of it is in the cache: platforms, or the artifact."""
        return bool(self.saved) or self.artifact is not None

    @property
    def saved_bytes(self) -> int:
        return sum(p.Size for p in self.saved) + (self.artifact.Size if self.artifact else 0)

    @property
    def folders(self) -> list[str]:
        """The cache folders it was saved into."""
        artifact = [self.artifact.Folder] if self.artifact else []
        return [p.Folder for p in self.saved] + artifact

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageStatus:
        data: dict[str, Any] = json.loads(text)
        data["saved"] = [SavedPlatform(**item) for item in data.get("saved", [])]
        if data.get("artifact"):
            data["artifact"] = SavedArtifact(**data["artifact"])
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> ImageStatus:
        return cls.from_json(Path(path).read_text())


def unoffered_warning(
    statuses: Iterable[ImageStatus], arch: Sequence[str], os_names: Sequence[str]
) -> str:
    """``WARNING: no image offers arch s390x: …`` for each requested arch or os that no image
    of the run had (from the platforms the statuses record as available), or "".

    A key left at the schema's default is not the user's request (``os`` defaults to linux and
    windows, and most lists have no windows image): only a chosen value is named."""
    offered: dict[str, set[str]] = {"arch": set(), "os": set()}
    for status in statuses:
        for platform in status.available:
            parts = platform.split(" ", 1)[0].split("/")
            if not platform.startswith("artifact ") and len(parts) >= 2:
                offered["os"].add(parts[0])
                offered["arch"].add(parts[1])
    if not offered["arch"]:
        return ""  # no image was read: nothing is known of what they offer
    defaults = schema_defaults()
    names = []
    for key, wanted in (("arch", arch), ("os", os_names)):
        if list(wanted) == list(defaults[key]):
            continue
        names += [f"{key} {name}" for name in wanted if name not in offered[key]]
    if not names:
        return ""
    them = "it" if len(names) == 1 else "them"
    return f"WARNING: no image offers {', '.join(names)}: nothing was saved for {them}"


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp makes it private
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
