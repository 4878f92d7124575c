"""What a person sees of a running save, in ``hangar save`` and in a plain ``snakemake`` run:
``images 120/480 · 14.2 of 38.9 GiB · 52.0 MiB/s · ETA 8:10``, then the summary.

On a terminal the progress line is one line redrawn in place (rich's ``Live``), with failed and
skipped images printed above it; in a pipe or a CI log, a plain progress line every
PLAIN_PROGRESS_SECONDS (``HANGAR_PROGRESS_SECONDS`` overrides it) and one line per failed or
skipped image (``hangar save``: per image). The figures come from ``hangar.save.watch``; a total
partly estimated from the images seen so far is shown with ``≈``.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hangar.imagelist import SkippedLine
from hangar.layout import checksum_path, part_path
from hangar.ratelimit import LOGIN_HINT
from hangar.reasons import Failure, grouped_lines, plain
from hangar.save.watch import Bytes, Tally
from hangar.settings import Settings
from hangar.status import ImageStatus
from hangar.units import human_size

PLAIN_PROGRESS_SECONDS = 30.0
RATE_WINDOW_SECONDS = 20.0  # the rate is measured over this last stretch
ABOUT = "≈"


def human_duration(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def platform_names(status: ImageStatus) -> list[str]:
    """Saved platforms as ``os/arch[/variant]``."""
    return ["/".join(part for part in (p.OS, p.Arch, p.Variant) if part) for p in status.saved]


def image_line(status: ImageStatus) -> str:
    """The log line of one finished image."""
    if status.state == "failed":
        return f"FAILED {status.reference}: {plain(status.reason, status.reference).text}"
    if not status.is_saved:
        return f"SKIPPED {status.reference}: {status.reason}"
    platforms = ", ".join(platform_names(status)) or f"artifact {status.available[0]}"
    return f"OK {status.reference} ({platforms}; {human_size(status.saved_bytes)})"


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


class Rate:
    """Bytes per second over the last RATE_WINDOW_SECONDS, from the last moment before the
    first byte (not from the start: Snakemake takes a while to start the first copies)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self._samples.append((now, done))
        while len(self._samples) > 1 and self._samples[1][1] == 0:
            self._samples.popleft()
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        elapsed = now - first_time
        return max(done - first_done, 0) / elapsed if elapsed > 0.5 else 0.0


def size_of(copied: Bytes) -> str:
    """``14.2 of 38.9 GiB``, ``512.0 MiB of ≈38.9 GiB``, or ``14.2 GiB`` without a total."""
    done = human_size(copied.done)
    if not copied.total:
        return done
    about = ABOUT if copied.approximate else ""
    total = human_size(copied.total)
    number, _, unit = done.partition(" ")
    if total.endswith(f" {unit}") and not about:
        return f"{number} of {total}"
    return f"{done} of {about}{total}"


def eta(copied: Bytes, rate: float) -> float | None:
    """Seconds left at ``rate``, when the total is known."""
    if rate <= 0 or not copied.total:
        return None
    return max(copied.total - copied.done, 0) / rate


def progress_text(tally: Tally, copied: Bytes, rate: float, elapsed: float) -> str:
    """``images 120/480 · 14.2 of 38.9 GiB · 52.0 MiB/s · ETA 8:10`` (the time so far instead
    of the ETA while none can be told)."""
    text = f"{', '.join(tally_parts(tally))} · {size_of(copied)}"
    if rate > 0:
        text += f" · {human_size(rate)}/s"
    left = eta(copied, rate)
    if left is None:
        return f"{text} · {human_duration(elapsed)}"
    return f"{text} · ETA {ABOUT if copied.approximate else ''}{human_duration(left)}"


def archive_text(tally: Tally, destination: str, archived: int, elapsed: float) -> str:
    written = f": {human_size(archived)} written" if archived else ""
    done = f"{tally.done}/{tally.total} images done: archiving {destination}"
    return f"{done}{written} · {human_duration(elapsed)}"


class _Display(ABC):
    def __init__(self, stream: TextIO, destination: str) -> None:
        self.stream = stream
        self.destination = destination
        self.started = time.monotonic()
        self.rate = Rate()

    def archiving(self, tally: Tally) -> bool:
        return bool(tally.total) and tally.done == tally.total

    def text(self, tally: Tally, copied: Bytes, archived: int = 0) -> str:
        now = time.monotonic()
        rate = self.rate.add(now, copied.done)
        if self.archiving(tally):
            return archive_text(tally, self.destination, archived, now - self.started)
        return progress_text(tally, copied, rate, now - self.started)

    def image_done(self, status: ImageStatus, job_log: str = "") -> None:
        if status.state == "failed" or not status.is_saved:
            self.message(image_line(status))

    @abstractmethod
    def message(self, text: str) -> None:
        """Show one line above the progress line (each display its own way)."""

    @abstractmethod
    def update(self, tally: Tally, copied: Bytes, archived: int = 0) -> None:
        """Show the progress so far."""

    @abstractmethod
    def close(self) -> None: ...


class PlainProgress(_Display):
    """For pipes and CI logs: failures as they come (``every_image``: every image, with its
    job's log when given), a progress line now and then, one line when archiving starts."""

    def __init__(self, stream: TextIO, destination: str, every_image: bool = False) -> None:
        super().__init__(stream, destination)
        every = os.environ.get("HANGAR_PROGRESS_SECONDS", "")
        self.every = float(every) if every else PLAIN_PROGRESS_SECONDS
        self.every_image = every_image
        self._last = time.monotonic()
        self._archiving = False

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def image_done(self, status: ImageStatus, job_log: str = "") -> None:
        if not self.every_image:
            super().image_done(status)
            return
        self.message(image_line(status))
        for line in job_log.splitlines():
            self.message(f"  | {line}")

    def update(self, tally: Tally, copied: Bytes, archived: int = 0) -> None:
        text = self.text(tally, copied, archived)  # every call: the rate needs its samples
        now = time.monotonic()
        if self.archiving(tally):
            if not self._archiving:
                self._archiving = True
                self.message(
                    f"{tally.done}/{tally.total} images done: archiving {self.destination}"
                )
            return
        if now - self._last >= self.every:
            self._last = now
            self.message(text)

    def close(self) -> None:
        pass


class LiveProgress(_Display):
    """One line redrawn in place by rich; messages scroll above it."""

    def __init__(self, stream: TextIO, destination: str) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        super().__init__(stream, destination)
        self._text = Text
        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self.live = Live(
            Text(""),
            console=self.console,
            transient=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def message(self, text: str) -> None:
        self.console.print(self._text(text), soft_wrap=True)

    def update(self, tally: Tally, copied: Bytes, archived: int = 0) -> None:
        line = self._text(self.text(tally, copied, archived), no_wrap=True, overflow="ellipsis")
        self.live.update(line, refresh=True)

    def close(self) -> None:
        self.live.stop()


Display = PlainProgress | LiveProgress


def make_display(
    stream: TextIO, destination: str, live: bool, every_image: bool = False
) -> Display:
    if live:
        return LiveProgress(stream, destination)
    return PlainProgress(stream, destination, every_image)


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


def missing_archive(settings: Settings) -> str:
    """What is missing of the archive a finished run should have written ("" when whole)."""
    destination = settings.destination
    checksums = checksum_path(destination)
    if not checksums.exists():
        return f"{checksums} is missing"
    if settings.compress == "dir":
        return "" if destination.is_dir() else f"the directory {destination} is missing"
    names = [line.split("  ", 1)[-1] for line in checksums.read_text().splitlines() if line]
    parts = [name for name in names if name != destination.name] or [destination.name]
    for name in parts:
        if not (destination.parent / name).is_file():
            return f"{destination.parent / name} is missing"
    return ""


def archive_description(settings: Settings) -> str:
    destination = settings.destination
    checksums = checksum_path(destination)
    if settings.compress == "dir":
        return f"archive: directory {destination}"
    if settings.part_size is None:
        size = destination.stat().st_size if destination.exists() else 0
        return f"archive: {destination} ({human_size(size)}), checksum in {checksums}"
    parts: list[Path] = []
    while (part := part_path(destination, len(parts))).exists():
        parts.append(part)
    size = sum(part.stat().st_size for part in parts)
    last = part_path(destination, max(len(parts) - 1, 0))
    return (
        f"archive: {part_path(destination, 0)} … {last.suffix} ({len(parts)} parts, "
        f"{human_size(size)}), checksums in {checksums}"
    )
