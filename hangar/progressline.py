"""The progress line of a save: ``images 120/480 · 14.2 of 38.9 GiB · 52 MiB/s · ETA 8:10``.

On a terminal it is one line redrawn in place (rich's ``Live``), with failed and skipped images
printed above it; in a pipe or a CI log, a plain progress line every PLAIN_PROGRESS_SECONDS
(``HANGAR_PROGRESS_SECONDS`` overrides it) and one line per failed or skipped image.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TextIO

from hangar.cli.progress import Tally, human_duration, image_line, tally_parts
from hangar.settings import Settings
from hangar.status import ImageStatus
from hangar.units import human_size

PLAIN_PROGRESS_SECONDS = 30.0
RATE_WINDOW_SECONDS = 20.0  # the rate is measured over this last stretch


@dataclass
class Bytes:
    """Bytes of this run so far (finished images plus blobs being copied) and, when the
    manifests told, the bytes the whole run will copy."""

    done: int = 0
    total: int | None = None


class Rate:
    """Bytes per second over the last RATE_WINDOW_SECONDS."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        elapsed = now - first_time
        return max(done - first_done, 0) / elapsed if elapsed > 0.5 else 0.0


def progress_text(tally: Tally, copied: Bytes, rate: float, elapsed: float) -> str:
    text = ", ".join(tally_parts(tally))
    if copied.total:
        text += f" · {human_size(copied.done)} of {human_size(copied.total)}"
    else:
        text += f" · {human_size(copied.done)}"
    if rate > 0:
        text += f" · {human_size(rate)}/s"
        if copied.total and copied.total > copied.done:
            text += f" · ETA {human_duration((copied.total - copied.done) / rate)}"
    return f"{text} · {human_duration(elapsed)}"


class _Base(ABC):
    def __init__(self, stream: TextIO, settings: Settings) -> None:
        self.stream = stream
        self.destination = str(settings.destination)
        self.started = time.monotonic()
        self.rate = Rate()

    def text(self, tally: Tally, copied: Bytes | None) -> str:
        now = time.monotonic()
        copied = copied or Bytes(done=tally.bytes_new)
        rate = self.rate.add(now, copied.done)
        if tally.total and tally.done == tally.total:
            return f"{tally.done}/{tally.total} images done: archiving {self.destination}"
        return progress_text(tally, copied, rate, now - self.started)

    def image_done(self, status: ImageStatus) -> None:
        if status.state == "failed" or not status.is_saved:
            self.message(image_line(status))

    @abstractmethod
    def message(self, text: str) -> None:
        """Show one line above the progress line (each display its own way)."""


class PlainProgress(_Base):
    """For pipes and CI logs: failures as they come, a progress line now and then."""

    def __init__(self, stream: TextIO, settings: Settings) -> None:
        super().__init__(stream, settings)
        every = os.environ.get("HANGAR_PROGRESS_SECONDS", "")
        self.every = float(every) if every else PLAIN_PROGRESS_SECONDS
        self._last = time.monotonic()
        self._last_text = ""

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, tally: Tally, copied: Bytes | None = None) -> None:
        text = self.text(tally, copied)
        now = time.monotonic()
        archiving = text.endswith(f"archiving {self.destination}")
        due = now - self._last >= self.every and not archiving
        if (due or (archiving and not self._last_text.endswith(self.destination))) and (
            text != self._last_text
        ):
            self._last, self._last_text = now, text
            self.message(text)

    def close(self) -> None:
        pass


class LiveProgress(_Base):
    """One line redrawn in place by rich; messages scroll above it."""

    def __init__(self, stream: TextIO, settings: Settings) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        super().__init__(stream, settings)
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

    def update(self, tally: Tally, copied: Bytes | None = None) -> None:
        line = self._text(self.text(tally, copied), no_wrap=True, overflow="ellipsis")
        self.live.update(line, refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_display(stream: TextIO, settings: Settings, live: bool) -> PlainProgress | LiveProgress:
    return LiveProgress(stream, settings) if live else PlainProgress(stream, settings)
