"""The status file each image job writes: what was saved, or why not.

Status files live in ``<cache>/.hangar/status/<image id>.json`` and are written atomically, so a
killed job never leaves one that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

State = Literal["ok", "failed", "skipped"]
STATE_DIR = ".hangar"


def status_dir(cache: str | Path) -> Path:
    return Path(cache) / STATE_DIR / "status"


def tmp_dir(cache: str | Path) -> Path:
    return Path(cache) / STATE_DIR / "tmp"


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


@dataclass
class ImageStatus:
    reference: str
    source: str
    tag: str
    state: State
    reason: str = ""
    saved: list[SavedPlatform] = field(default_factory=list)
    available: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageStatus:
        data: dict[str, Any] = json.loads(text)
        data["saved"] = [SavedPlatform(**item) for item in data.get("saved", [])]
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> ImageStatus:
        return cls.from_json(Path(path).read_text())


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
