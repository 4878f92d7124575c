"""What a person sees of a plain ``snakemake`` run of the save: what ``hangar save`` prints.

Snakemake's own log (24-33 lines of scheduler output per image) stays complete in
``.snakemake/log/``; the terminal gets one line per failed or skipped image with its reason in
plain words, a live progress line (one line redrawn on a terminal, a plain line now and then in
a pipe), the real cause of a failed step, and the closing summary. The logger plugin
``snakemake_logger_plugin_hangar`` feeds Snakemake's log records to ``SaveLogView``; the
workflow tells it what the run is about with one record (``announce_run``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hangar.imagelist import ImageList
from hangar.layout import checksum_path
from hangar.settings import Settings
from hangar.status import unoffered_warning

RUN_ATTRIBUTE = "hangar_run"
# Rules whose jobs the summary covers; others (verify, plan) get a line each when they finish.
SAVE_RULES = frozenset({"save_image", "saved_list", "archive", "report"})
TICK_SECONDS = 0.5
# Snakemake's lines about a failed job that the failed step's own line already says.
_NOISE = (
    "Restored previous version of",
    "Exiting because a job execution failed",
    "At least one job did not complete successfully",
    "Removing output files of failed job",
    "Shutting down, this might take some time",
    "returned non-zero exit status",
)
_EXCEPTION_LINE = re.compile(r"^\s*[A-Za-z_.]*(?:Error|Exception): \S")
# The saved-list step fails a run that saved nothing: the summary says so, with the reasons.
_NOTHING_SAVED = "nothing was saved"


@dataclass(frozen=True)
class RunInfo:
    """What the workflow's main process tells the log view about the run."""

    settings: Settings
    image_list: ImageList
    started: float = field(default_factory=time.time)


def announce_run(logger: logging.Logger, settings: Settings, image_list: ImageList) -> None:
    """Tell the log view (if it is the logger in use) which cache and images this run saves."""
    logger.info(
        "saving %s image(s) into %s",
        len(image_list.entries),
        settings.cache,
        extra={RUN_ATTRIBUTE: RunInfo(settings, image_list)},
    )


@dataclass
class _Job:
    rule: str
    log: list[str]
    output: list[str]


def _event(record: logging.LogRecord) -> str:
    return str(getattr(record, "event", "") or "")


class SaveLogView:
    """Turns Snakemake's log records into the save's own output (thread-safe)."""

    def __init__(self, stream: TextIO, live: bool | None = None) -> None:
        from hangar.cli.progress import make_display

        self.stream = stream
        self.live = stream.isatty() and os.environ.get("TERM") != "dumb" if live is None else live
        self._make_display = make_display
        self._lock = threading.Lock()
        self._run: RunInfo | None = None
        self._watcher: Any = None
        self._display: Any = None
        self._jobs: dict[int, _Job] = {}
        self._errors: list[str] = []
        self._extra_lines: list[str] = []
        self._full_log = ""
        self._nothing_saved = False
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- records ---------------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._handle(record)

    def _handle(self, record: logging.LogRecord) -> None:
        run = getattr(record, RUN_ATTRIBUTE, None)
        if isinstance(run, RunInfo):
            self._start(run)
            return
        event = _event(record)
        message = record.getMessage() if record.msg is not None else ""
        if event == "job_info":
            self._jobs[int(getattr(record, "jobid", -1))] = _Job(
                str(getattr(record, "rule_name", "")),
                [str(path) for path in getattr(record, "log", []) or []],
                [str(path) for path in getattr(record, "output", []) or []],
            )
        elif event == "job_finished":
            self._job_finished(int(getattr(record, "job_id", -1)))
        elif event == "job_error":
            self._job_error(record)
        elif any(noise in message for noise in _NOISE):
            return
        elif _NOTHING_SAVED in message:
            self._nothing_saved = True
        elif event == "error":
            self._print_error(message)
        elif message.startswith("Complete log(s): "):
            self._full_log = message.removeprefix("Complete log(s): ").strip()
        elif record.levelno >= logging.WARNING and event == "":
            self._warning(message)

    def _start(self, run: RunInfo) -> None:
        from hangar.save.watch import StatusWatcher

        self._run = run
        ids = [entry.ref.image_id for entry in run.image_list.entries]
        self._watcher = StatusWatcher(run.settings.cache, ids)
        self._display = self._make_display(self.stream, str(run.settings.destination), self.live)
        self._started = time.monotonic()
        self._ticker = threading.Thread(target=self._tick_loop, name="hangar-progress", daemon=True)
        self._ticker.start()

    def _say(self, text: str) -> None:
        if self._display is not None:
            self._display.message(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _warning(self, message: str) -> None:
        for line in message.strip().splitlines():
            if line.strip():
                self._say(line.rstrip())

    def _print_error(self, message: str) -> None:
        """Snakemake's report of an exception: its message, without the traceback frame."""
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
        kept = [line for line in lines if not line.startswith("File ") and line[-1:] != ":"]
        for text in raised[-1:] or kept or ["failed"]:
            self._errors.append(text)
            self._say(f"ERROR: {text}")

    def _job_finished(self, jobid: int) -> None:
        job = self._jobs.get(jobid)
        if job is None:
            return
        if job.rule == "save_image":
            # the job's status file only: a listing of the whole status directory per job
            # grows with the list (quadratic in all); the ticker still lists it now and then
            self._poll([Path(path).stem for path in job.output])
        elif job.rule not in SAVE_RULES and job.output:
            self._extra_lines.append(f"{job.rule}: done ({', '.join(job.output)})")

    def _job_error(self, record: logging.LogRecord) -> None:
        from hangar.cli.snakemake import job_log_reason

        rule = str(getattr(record, "rule_name", "")) or "a step"
        logs = [str(path) for path in getattr(record, "log", []) or []]
        reason = job_log_reason(Path(logs[0])) if logs else ""
        if rule == "saved_list" and (self._nothing_saved or _NOTHING_SAVED in reason):
            return
        where = f" (log: {logs[0]})" if logs else ""
        reason = reason.removeprefix("ERROR: ").removeprefix("ERROR ") or "see its log"
        if reason in self._errors:
            return  # the job's exception, already shown as it is: one line is enough
        text = f"step {rule} failed: {reason}{where}"
        self._errors.append(text)
        self._say(f"ERROR: {text}")

    # -- progress ---------------------------------------------------------------------------

    def _poll(self, only: list[str] | None = None) -> None:
        if self._watcher is None or self._display is None:
            return
        for _image_id, status in self._watcher.poll(only):
            self._display.image_done(status)

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                self._tick()

    def _tick(self) -> None:
        from hangar.save.watch import archive_bytes

        if self._run is None or self._watcher is None or self._display is None:
            return
        self._poll()
        tally = self._watcher.tally()
        archiving = tally.done == tally.total
        destination = self._run.settings.destination
        archived = archive_bytes(destination, self._run.started) if archiving else 0
        self._display.update(tally, self._watcher.bytes(), archived)

    # -- the end ----------------------------------------------------------------------------

    def close(self, say: Callable[[str], None] | None = None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._run is None or self._watcher is None or self._display is None:
            return
        from hangar.cli.progress import archive_description, summary_lines

        self._poll()
        self._display.close()
        settings = self._run.settings
        tally = self._watcher.tally(final=True)
        if self._errors and not any(map(self._watcher.is_new, self._watcher.ids)):
            return  # stopped before any image (config, preflight): the error says it all
        lines = summary_lines(
            tally,
            self._watcher.statuses(),
            time.monotonic() - self._started,
            str(settings.failed),
            invalid=self._run.image_list.skipped,
        )
        statuses = self._watcher.statuses().values()
        if unoffered := unoffered_warning(statuses, settings.arch, settings.os):
            lines.append(unoffered)
        lines += self._extra_lines
        log_hint = f" (Snakemake's full log: {self._full_log})" if self._full_log else ""
        if tally.saved == 0 and tally.done == tally.total:
            lines.append(f"ERROR: no image was saved (see the reasons above){log_hint}")
        elif self._errors:
            lines.append(f"ERROR: the save did not finish{log_hint}")
        elif checksum_path(settings.destination).exists():
            lines.append(archive_description(settings))
        for line in lines:
            self.stream.write(line + "\n")
        self.stream.flush()
