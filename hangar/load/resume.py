"""At the start of a load run: decide what must be pushed again.

A run that finished (its summary exists) is over: the next run is a new load and pushes
everything again (blobs the destination has are not uploaded). A run that was killed or failed
resumes: the images it loaded are kept, failed ones are pushed again. An archive that changed
is extracted again, which re-runs every job.
"""

from __future__ import annotations

from pathlib import Path

from hangar.layout import state_path, status_dir
from hangar.load.extract import is_extracted, marker_path
from hangar.load.push import LoadStatus
from hangar.load.source import LoadInput

SUMMARY_NAME = "load-summary.json"


def summary_path(cache: Path) -> Path:
    return state_path(cache) / SUMMARY_NAME


def prepare_run(source: LoadInput, cache: Path) -> int:
    """Drop the statuses not to trust; returns how many loaded images are kept."""
    statuses = status_dir(cache)
    summary = summary_path(cache)
    if source.format != "dir" and not is_extracted(source, cache):
        marker_path(cache).unlink(missing_ok=True)
    finished = summary.exists()
    summary.unlink(missing_ok=True)
    kept = 0
    for path in sorted(statuses.glob("*.json")) if statuses.is_dir() else []:
        try:
            keep = not finished and LoadStatus.read(path).state == "ok"
        except (OSError, ValueError, TypeError):
            keep = False
        if keep:
            kept += 1
        else:
            path.unlink()
    return kept
