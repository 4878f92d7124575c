"""Gather the image statuses into saved-images-list.json and the failed list."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from hangar.imagelist import ImageList, ListEntry
from hangar.layout import LIST_VERSION
from hangar.status import ImageStatus, write_atomic


@dataclass(frozen=True)
class Summary:
    saved_images: int
    saved_platforms: int
    failed: int
    skipped: int
    saved_artifacts: int = 0
    invalid_lines: int = 0


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def list_entry(status: ImageStatus) -> dict[str, Any]:
    """One ``List`` element, keys in hangar's order, empty values omitted."""
    images = []
    for platform in status.saved:
        image = {
            "Digest": platform.Digest,
            "Arch": platform.Arch,
            "OS": platform.OS,
            "Variant": platform.Variant,
            "OsVersion": platform.OsVersion,
            "Folder": platform.Folder,
        }
        images.append({key: value for key, value in image.items() if value})
    return {
        "Source": status.source,
        "Tag": status.tag,
        "ArchList": _distinct(p.Arch for p in status.saved),
        "OsList": _distinct(p.OS for p in status.saved),
        "Images": images,
    }


def artifact_entry(status: ImageStatus) -> dict[str, Any]:
    """One ``Artifacts`` element: an OCI artifact (Helm chart, …), saved whole by digest."""
    assert status.artifact is not None
    artifact = status.artifact
    entry = {
        "Source": status.source,
        "Tag": status.tag,
        "Digest": artifact.Digest,
        "MediaType": artifact.MediaType,
        "ArtifactType": artifact.ArtifactType,
        "Folder": artifact.Folder,
    }
    return {key: value for key, value in entry.items() if value}


def render_saved_list(
    entries: Sequence[dict[str, Any]],
    saved_time: str,
    artifacts: Sequence[dict[str, Any]] = (),
) -> str:
    """hangar's document; artifacts, which hangar v1.6 knows nothing of, under their own key
    (its load ignores keys it does not know)."""
    document: dict[str, Any] = {"List": list(entries)}
    if artifacts:
        document["Artifacts"] = list(artifacts)
    document |= {"Version": LIST_VERSION, "SavedTime": saved_time}
    return json.dumps(document, indent=2) + "\n"


def now_rfc3339() -> str:
    return datetime.now().astimezone().replace(microsecond=0).isoformat()


def write_saved_list(
    path: Path, entries: Sequence[dict[str, Any]], artifacts: Sequence[dict[str, Any]] = ()
) -> bool:
    """Write the JSON unless only ``SavedTime`` would change; then just touch it.

    Keeping the earlier file keeps the archive byte-identical when nothing new was saved.
    Returns True when the content changed.
    """
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    same = previous is not None and (
        previous.get("List") == json.loads(json.dumps(list(entries)))
        and previous.get("Artifacts", []) == json.loads(json.dumps(list(artifacts)))
    )
    if same:
        os.utime(path)
        return False
    write_atomic(path, render_saved_list(entries, now_rfc3339(), artifacts))
    return True


def write_failed_list(path: Path, lines: Iterable[str]) -> None:
    """hangar's failed list: original lines, sorted, one per line; removed when empty."""
    unique = sorted(set(lines))
    if unique:
        write_atomic(path, "".join(f"{line}\n" for line in unique))
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Gathered:
    """What the statuses of a list's images add up to."""

    saved: list[dict[str, Any]]  # List entries, in list order
    artifacts: list[dict[str, Any]]  # Artifacts entries, in list order
    failed_lines: list[str]
    summary: Summary


def gather(entries: Sequence[ListEntry], statuses: dict[str, ImageStatus]) -> Gathered:
    """JSON entries (in list order) and failed lines, from the statuses by image id."""
    saved: list[dict[str, Any]] = []
    artifacts: list[dict[str, Any]] = []
    failed_lines: list[str] = []
    failed = skipped = platforms = 0
    for entry in entries:
        status = statuses[entry.ref.image_id]
        if status.state == "failed":
            failed += 1
            failed_lines.extend(entry.lines)
        elif status.artifact is not None:
            artifacts.append(artifact_entry(status))
        elif status.saved:
            saved.append(list_entry(status))
            platforms += len(status.saved)
        else:
            skipped += 1
    summary = Summary(len(saved), platforms, failed, skipped, len(artifacts))
    return Gathered(saved, artifacts, failed_lines, summary)


def update_outputs(
    image_list: ImageList, status_files: Iterable[Path], saved_list: Path, failed: Path
) -> Summary:
    """Rewrite saved-images-list.json and the failed list from the image statuses.

    Invalid lines of the list (skipped, never saved) are not failures: not in the failed list.
    """
    statuses = {Path(path).stem: ImageStatus.read(path) for path in status_files}
    gathered = gather(image_list.entries, statuses)
    write_saved_list(saved_list, gathered.saved, gathered.artifacts)
    write_failed_list(failed, gathered.failed_lines)
    return replace(gathered.summary, invalid_lines=len(image_list.skipped))


class NothingSavedError(RuntimeError):
    """No image of the list was saved: like hangar, the save fails."""


def run_job(
    image_list: ImageList,
    status_files: Iterable[str],
    saved_list: str | Path,
    failed: str | Path,
    log_path: str | Path,
) -> Summary:
    """The saved-list job: write both lists, log a summary, fail when nothing was saved."""
    failed = Path(failed)
    summary = update_outputs(
        image_list,
        [Path(path) for path in status_files],
        Path(saved_list),
        failed,
    )
    text = (
        f"saved {summary.saved_images} image(s), {summary.saved_platforms} platform(s), "
        f"{summary.saved_artifacts} artifact(s); "
        f"{summary.failed} failed (listed in {failed}); "
        f"{summary.skipped} without a platform matching arch/os; "
        f"{summary.invalid_lines} invalid line(s) skipped"
    )
    Path(log_path).write_text(text + "\n")
    if summary.saved_images == 0 and summary.saved_artifacts == 0:
        raise NothingSavedError(f"nothing was saved: {text}")
    return summary
