"""Progress of a running save, read from the status files the image jobs write.

The image jobs know nothing about the display: each writes ``<cache>/.hangar/status/<id>.json``
atomically when its image is done. ``StatusWatcher`` polls that directory (a directory scan plus
one small read per new file, cheap enough twice a second for thousands of images) and tells new
results from the ones an earlier run left behind, so a resumed run counts them apart.

Two displays: ``LiveDisplay`` redraws one line on a terminal; ``PlainDisplay`` writes one log line
per finished image, for pipes, files and CI logs.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TextIO

from hangar.imagelist import SkippedLine
from hangar.layout import part_number, status_dir
from hangar.ratelimit import LOGIN_HINT
from hangar.reasons import Failure, grouped_lines, plain
from hangar.status import ImageStatus
from hangar.units import human_size

POLL_SECONDS = 0.5
Phase = Literal["save", "archive"]


def human_duration(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def platform_names(status: ImageStatus) -> list[str]:
    """Saved platforms as ``os/arch[/variant]``."""
    return ["/".join(part for part in (p.OS, p.Arch, p.Variant) if part) for p in status.saved]


def saved_bytes(status: ImageStatus) -> int:
    return status.saved_bytes


def image_line(status: ImageStatus) -> str:
    """The log line of one finished image."""
    if status.state == "failed":
        return f"FAILED {status.reference}: {plain(status.reason, status.reference).text}"
    if not status.is_saved:
        return f"SKIPPED {status.reference}: {status.reason}"
    platforms = ", ".join(platform_names(status)) or f"artifact {status.available[0]}"
    return f"OK {status.reference} ({platforms}; {human_size(saved_bytes(status))})"


@dataclass
class Tally:
    """Counts over the images of the list; ``resumed`` images are part of ``saved``."""

    total: int
    saved: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    platforms: int = 0
    bytes_total: int = 0
    bytes_new: int = 0

    @property
    def done(self) -> int:
        return self.saved + self.failed + self.skipped


_FileKey = tuple[int, int]  # (inode, mtime in ns): changes whenever a status is rewritten


def tally_parts(tally: Tally) -> list[str]:
    """``images 3/9``, then the failed, skipped and resumed counts that are not zero."""
    parts = [f"images {tally.done}/{tally.total}"]
    if tally.failed:
        parts.append(f"{tally.failed} failed")
    if tally.skipped:
        parts.append(f"{tally.skipped} skipped")
    if tally.resumed:
        parts.append(f"{tally.resumed} from an earlier run")
    return parts


class StatusWatcher:
    """Follows the status files of the listed images while the workflow runs."""

    def __init__(self, cache: str | Path, image_ids: Iterable[str]) -> None:
        self.directory = status_dir(cache)
        self.ids = list(dict.fromkeys(image_ids))
        self._wanted = set(self.ids)
        self._before = self._scan()
        self._current: dict[str, tuple[_FileKey, ImageStatus]] = {}
        self._reported: set[str] = set()

    def _scan(self) -> dict[str, _FileKey]:
        keys: dict[str, _FileKey] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return keys
        for entry in entries:
            image_id = entry.name.removesuffix(".json")
            if image_id == entry.name or image_id not in self._wanted:
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            keys[image_id] = (stat.st_ino, stat.st_mtime_ns)
        return keys

    def _stat(self, image_ids: Iterable[str]) -> dict[str, _FileKey]:
        keys: dict[str, _FileKey] = {}
        for image_id in image_ids:
            if image_id not in self._wanted:
                continue
            try:
                stat = (self.directory / f"{image_id}.json").stat()
            except FileNotFoundError:
                self._current.pop(image_id, None)
                continue
            keys[image_id] = (stat.st_ino, stat.st_mtime_ns)
        return keys

    def poll(self, only: Iterable[str] | None = None) -> list[tuple[str, ImageStatus]]:
        """Re-read changed status files (all, or those of the images ``only`` names: one
        stat each instead of a listing of the whole directory); return the images this run
        finished, once each."""
        if only is not None:
            named = list(only)
            return self._read(self._stat(named), named)
        keys = self._scan()
        for image_id in set(self._current) - set(keys):
            # A directory listing taken while files are renamed into it may miss some.
            if not (self.directory / f"{image_id}.json").exists():
                del self._current[image_id]
        return self._read(keys, self.ids)

    def _read(
        self, keys: dict[str, _FileKey], candidates: Iterable[str]
    ) -> list[tuple[str, ImageStatus]]:
        for image_id, key in keys.items():
            known = self._current.get(image_id)
            if known is not None and known[0] == key:
                continue
            try:
                status = ImageStatus.read(self.directory / f"{image_id}.json")
            except (OSError, ValueError, TypeError):
                continue  # vanished or replaced while reading: next poll
            self._current[image_id] = (key, status)
        finished = []
        for image_id in candidates:
            if image_id in self._reported or not self.is_new(image_id):
                continue
            self._reported.add(image_id)
            finished.append((image_id, self._current[image_id][1]))
        return finished

    def is_new(self, image_id: str) -> bool:
        """True when this run wrote the image's current status."""
        known = self._current.get(image_id)
        return known is not None and known[0] != self._before.get(image_id)

    def statuses(self) -> dict[str, ImageStatus]:
        """The current status of every listed image that has one, in list order."""
        return {i: self._current[i][1] for i in self.ids if i in self._current}

    def tally(self, final: bool = False) -> Tally:
        """Counts so far. Until ``final``, an earlier run's failure counts as still to do:
        the workflow retries it."""
        tally = Tally(total=len(self.ids))
        for image_id, status in self.statuses().items():
            new = self.is_new(image_id)
            if status.state == "failed":
                if new or final:
                    tally.failed += 1
            elif status.is_saved:
                tally.saved += 1
                tally.platforms += len(status.saved)
                tally.bytes_total += saved_bytes(status)
                if new:
                    tally.bytes_new += saved_bytes(status)
                else:
                    tally.resumed += 1
            else:
                tally.skipped += 1
        return tally


def archive_bytes(destination: str | Path, since: float) -> int:
    """Bytes of the archive being written: its temporary files and the parts done so far."""
    destination = Path(destination)
    total = 0
    try:
        entries = list(os.scandir(destination.parent))
    except OSError:
        return 0
    name = destination.name
    for entry in entries:
        temporary = entry.name.startswith(f".{name}") and ".tmp-" in entry.name
        part = part_number(destination, entry.name) is not None
        if not (temporary or part):
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue
        if temporary or stat.st_mtime >= since:
            total += stat.st_size
    return total


class Display(Protocol):
    def image_done(self, status: ImageStatus, job_log: str = "") -> None: ...

    def update(self, tally: Tally, phase: Phase, archived: int) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainDisplay:
    """One line per finished image (and per phase), for logs and pipes."""

    def __init__(self, stream: TextIO, destination: str, show_job_logs: bool = False) -> None:
        self.stream = stream
        self.destination = destination
        self.show_job_logs = show_job_logs
        self._phase: Phase = "save"

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def image_done(self, status: ImageStatus, job_log: str = "") -> None:
        self._write(image_line(status))
        if self.show_job_logs:
            for line in job_log.splitlines():
                self._write(f"  | {line}")

    def update(self, tally: Tally, phase: Phase, archived: int) -> None:
        if phase != self._phase:
            self._phase = phase
            if phase == "archive":
                self._write(f"{tally.done}/{tally.total} images done: archiving {self.destination}")

    def message(self, text: str) -> None:
        self._write(text)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A single status line redrawn in place; failures are printed above it and stay."""

    def __init__(self, stream: TextIO, destination: str, started: float | None = None) -> None:
        self.stream = stream
        self.destination = destination
        self.started = time.monotonic() if started is None else started
        self._line = ""

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((100, 24)).columns - 1)

    def _draw(self, text: str) -> None:
        text = text[: self._width()]
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._line = text

    def _clear(self) -> None:
        if self._line:
            self.stream.write("\r\x1b[K")
            self._line = ""

    def message(self, text: str) -> None:
        line = self._line
        self._clear()
        self.stream.write(text + "\n")
        if line:
            self._draw(line)
        else:
            self.stream.flush()

    def image_done(self, status: ImageStatus, job_log: str = "") -> None:
        if status.state == "failed" or not status.is_saved:
            self.message(image_line(status))

    def render(self, tally: Tally, phase: Phase, archived: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        clock = human_duration(elapsed)
        if phase == "archive":
            written = f": {human_size(archived)} written" if archived else ""
            return f"archiving {self.destination}{written} · {clock}"
        parts = tally_parts(tally)
        rate = tally.bytes_new / elapsed
        size = f"{human_size(tally.bytes_total)} saved"
        if tally.bytes_new:
            size += f" at {human_size(int(rate))}/s"
        return f"{', '.join(parts)} · {size} · {clock}"

    def update(self, tally: Tally, phase: Phase, archived: int) -> None:
        self._draw(self.render(tally, phase, archived, time.monotonic()))

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def summary_lines(
    tally: Tally,
    statuses: dict[str, ImageStatus],
    seconds: float,
    failed_file: str,
    limit: int = 10,
    invalid: Sequence[SkippedLine] = (),
) -> list[str]:
    """The end-of-run summary: what was saved, then failures, skipped images and invalid lines
    by name."""
    lines = []
    earlier = f", {tally.resumed} from an earlier run" if tally.resumed else ""
    lines.append(
        f"saved {tally.saved} of {tally.total} images ({tally.platforms} platforms, "
        f"{human_size(tally.bytes_total)}{earlier}) in {human_duration(seconds)}"
    )
    if tally.done < tally.total:
        lines.append(f"{tally.total - tally.done} image(s) have no result from this run")
    failed = [s for s in statuses.values() if s.state == "failed"]
    skipped = [s for s in statuses.values() if s.state != "failed" and not s.is_saved]
    if failed:
        lines.append(f"{len(failed)} image(s) failed, listed in {failed_file}:")
        lines += grouped_lines([Failure(s.reference, s.reason) for s in failed], limit)
    if any("rate limited by" in s.reason for s in failed):
        lines.append(f"rate limits: {LOGIN_HINT}")
    if skipped:
        lines.append(f"{len(skipped)} image(s) skipped, no platform matches --arch/--os:")
        lines += [f"  {s.reference}: {s.reason}" for s in skipped[:limit]]
        if len(skipped) > limit:
            lines.append(f"  … and {len(skipped) - limit} more")
    if invalid:
        lines.append(f"{len(invalid)} invalid line(s) of the list ignored (not saved):")
        lines += [f"  {line.where}: {line.line}: {line.reason}" for line in invalid[:limit]]
        if len(invalid) > limit:
            lines.append(f"  … and {len(invalid) - limit} more")
    return lines
