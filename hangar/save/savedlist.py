"""Gather the image statuses into saved-images-list.json and the failed list."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hangar.imagelist import ListEntry
from hangar.layout import LIST_VERSION
from hangar.status import ImageStatus, write_atomic


@dataclass(frozen=True)
class Summary:
    saved_images: int
    saved_platforms: int
    failed: int
    skipped: int


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


def render_saved_list(entries: Sequence[dict[str, Any]], saved_time: str) -> str:
    document = {"List": list(entries), "Version": LIST_VERSION, "SavedTime": saved_time}
    return json.dumps(document, indent=2) + "\n"


def now_rfc3339() -> str:
    return datetime.now().astimezone().replace(microsecond=0).isoformat()


def write_saved_list(path: Path, entries: Sequence[dict[str, Any]]) -> bool:
    """Write the JSON unless only ``SavedTime`` would change; then just touch it.

    Keeping the earlier file keeps the archive byte-identical when nothing new was saved.
    Returns True when the content changed.
    """
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    if previous is not None and previous.get("List") == json.loads(json.dumps(list(entries))):
        os.utime(path)
        return False
    write_atomic(path, render_saved_list(entries, now_rfc3339()))
    return True


def write_failed_list(path: Path, lines: Iterable[str]) -> None:
    """hangar's failed list: original lines, sorted, one per line; removed when empty."""
    unique = sorted(set(lines))
    if unique:
        write_atomic(path, "".join(f"{line}\n" for line in unique))
    else:
        path.unlink(missing_ok=True)


def gather(
    entries: Sequence[ListEntry], statuses: dict[str, ImageStatus]
) -> tuple[list[dict[str, Any]], list[str], Summary]:
    """JSON list entries (in list order) and failed lines, from the statuses by image id."""
    saved: list[dict[str, Any]] = []
    failed_lines: list[str] = []
    failed = skipped = platforms = 0
    for entry in entries:
        status = statuses[entry.ref.image_id]
        if status.state == "failed":
            failed += 1
            failed_lines.extend(entry.lines)
        elif status.saved:
            saved.append(list_entry(status))
            platforms += len(status.saved)
        else:
            skipped += 1
    return saved, failed_lines, Summary(len(saved), platforms, failed, skipped)


def update_outputs(
    entries: Sequence[ListEntry], status_files: Iterable[Path], saved_list: Path, failed: Path
) -> Summary:
    """Rewrite saved-images-list.json and the failed list from the image statuses."""
    statuses = {Path(path).stem: ImageStatus.read(path) for path in status_files}
    saved, failed_lines, summary = gather(entries, statuses)
    write_saved_list(saved_list, saved)
    write_failed_list(failed, failed_lines)
    return summary


class NothingSavedError(RuntimeError):
    """No image of the list was saved: like hangar, the save fails."""


def run_job(
    entries: Sequence[ListEntry],
    status_files: Iterable[str],
    saved_list: str | Path,
    failed: str | Path,
    log_path: str | Path,
) -> Summary:
    """The saved-list job: write both lists, log a summary, fail when nothing was saved."""
    failed = Path(failed)
    summary = update_outputs(
        entries,
        [Path(path) for path in status_files],
        Path(saved_list),
        failed,
    )
    text = (
        f"saved {summary.saved_images} image(s), {summary.saved_platforms} platform(s); "
        f"{summary.failed} failed (listed in {failed}); "
        f"{summary.skipped} without a platform matching arch/os"
    )
    Path(log_path).write_text(text + "\n")
    if summary.saved_images == 0:
        raise NothingSavedError(f"nothing was saved: {text}")
    return summary
