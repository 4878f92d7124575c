"""Run the workflow's Snakefile as a child ``python -m snakemake`` and follow it.

A child process rather than Snakemake's Python API, because:

* isolation: Snakemake configures global logging, signal handlers and the working directory of
  the process it runs in; a child keeps all of that away from this command's own output;
* it is exactly the documented command (``snakemake --configfile …``), so a run started here and
  one started by hand (or on a cluster, with Snakemake options passed after ``--``) behave the
  same and share the same cache, and re-running either resumes the other;
* clean signals: Ctrl-C and SIGTERM are forwarded once to Snakemake, which stops its jobs (or
  lets them finish, for SIGTERM) and exits; if this command is killed, the child gets SIGTERM;
* Snakemake's command line is its stable, documented interface, its Python API is not.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from hangar.cli.flags import PROGRAM
from hangar.runlock import run_lock_holder
from hangar.settings import SNAKEFILE
from hangar.status import write_atomic

# Set to "full" (as `hangar save` does for its Snakemake): Snakemake's own log, unchanged.
FULL_LOG_VARIABLE = "HANGAR_SNAKEMAKE_LOG"

POLL_SECONDS = 0.5
LOG_NAME = "snakemake.log"
STALE_LOCK_MARKER = b"Directory cannot be locked"
CLUSTER_OPTIONS = ("--profile", "--executor", "-e")


def write_config_file(path: Path, config: Mapping[str, Any], command: str) -> None:
    header = (
        f"# Written by `{PROGRAM} {command}` from its flags: the workflow config of the last run.\n"
        "# Same run by hand: snakemake --snakefile <checkout>/Snakefile --configfile <this file>\n"
    )
    write_atomic(path, header + yaml.safe_dump(dict(config), sort_keys=False))


def snakemake_command(config_path: Path, jobs: int, extra: Sequence[str]) -> list[str]:
    """The Snakemake call; with a profile or executor after ``--``, its job counts apply."""
    on_cluster = any(word.split("=")[0] in CLUSTER_OPTIONS for word in extra)
    counts = [] if on_cluster else ["--cores", str(jobs), "--jobs", str(jobs)]
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(Path.cwd()),
        "--configfile",
        str(config_path),
        *counts,
        *extra,
    ]


def _die_with_parent() -> None:
    """In the child before exec: receive SIGTERM (a graceful stop) if this command dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SnakemakeRun:
    """One Snakemake child writing straight to the log file, so the log stays complete even if
    this command dies; ``follow`` reads what was added (and echoes it with ``echo``)."""

    def __init__(self, command: Sequence[str], log_path: Path, echo: bool, append: bool) -> None:
        self.command = list(command)
        self.echo = echo
        self.stale_lock = False
        self.signals: list[int] = []
        self._pending = b""
        # Snakemake's full log (not the logger plugin's summary): this command follows it and
        # shows its own progress and summary.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", FULL_LOG_VARIABLE: "full"}
        with log_path.open("ab" if append else "wb") as log:
            self._reader = log_path.open("rb")
            self._reader.seek(log.tell())
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )

    def follow(self) -> None:
        data = self._pending + self._reader.read()
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if STALE_LOCK_MARKER in line:
                self.stale_lock = True
            if self.echo:
                sys.stderr.write(line.decode(errors="replace") + "\n")
        if self.echo:
            sys.stderr.flush()

    def forward(self, signum: int) -> None:
        """Pass a signal on, as a terminal would.

        SIGINT goes to Snakemake's whole process group, jobs included (Snakemake waits for its
        jobs to die, as after Ctrl-C); SIGTERM and SIGHUP go to Snakemake alone as SIGTERM: no
        new jobs, running ones finish. A third signal kills the group.
        """
        self.signals.append(signum)
        if self.process.poll() is not None:
            return
        try:
            if len(self.signals) >= 3:
                os.killpg(self.process.pid, signal.SIGKILL)
            elif signum == signal.SIGINT:
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def wait(self, tick: Callable[[], None] | None = None) -> int:
        while True:
            try:
                returncode = self.process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                self.follow()
                if tick is not None:
                    tick()
        self._pending += b"\n"
        self.follow()
        self._reader.close()
        return returncode


@dataclass
class Outcome:
    returncode: int
    signals: list[int]


def run_snakemake(
    command: Sequence[str],
    log_path: Path,
    cache: Path,
    echo: bool,
    tick: Callable[[], None],
    message: Callable[[str], None],
) -> Outcome:
    """Run Snakemake to its end, forwarding signals; calls ``tick`` while it runs.

    Snakemake's lock files outlive a killed run; ours (an flock on the cache) does not: when a
    run fails on a Snakemake lock and no live run holds the cache, the lock is stale, so it is
    removed and the run started again.
    """
    current: list[SnakemakeRun] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if current:
            current[0].forward(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        run = SnakemakeRun(command, log_path, echo, append=False)
        current[:] = [run]
        returncode = run.wait(tick)
        stale = returncode != 0 and run.stale_lock and not run.signals
        if stale and run_lock_holder(cache) is None:
            message("removing a stale Snakemake lock left by a killed run")
            unlock = SnakemakeRun([*command, "--unlock"], log_path, echo, True)
            current[:] = [unlock]
            unlock.wait()
            run = SnakemakeRun(command, log_path, echo, append=False)
            current[:] = [run]
            returncode = run.wait(tick)
        return Outcome(returncode, run.signals)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_FAILED_RULE = re.compile(r"^Error in rule (\S+):")
_RULE_LOG = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?$")
_RAISED_IN_FILE = re.compile(r'^\w+ in file ".*", line \d+:$')
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(?:Error|Exception): \S")
_NOT_A_REASON = ("At least one job did not complete successfully.",)


def explain_failure(log_text: str, returncode: int) -> str:
    """One line saying why Snakemake failed, from its output and the failed job's log."""
    lines = log_text.splitlines()
    rule = job_log = ""
    for number, line in enumerate(lines):
        if match := _FAILED_RULE.match(line):
            rule = match.group(1)
            for detail in lines[number + 1 : number + 12]:
                if log_match := _RULE_LOG.match(detail):
                    job_log = log_match.group(1).split(",")[0].strip()
                    break
            break
    reason = (
        (job_log_reason(Path(job_log)) if job_log else "")
        or _raised_in_workflow(lines)
        or _workflow_error(lines)
        or next((line.strip() for line in reversed(lines) if _EXCEPTION_LINE.match(line)), "")
        or f"Snakemake exited with status {returncode}"
    )
    prefix = f"step {rule} failed: " if rule else ""
    suffix = f" (log: {job_log})" if job_log else ""
    return prefix + reason + suffix


def _raised_in_workflow(lines: Sequence[str]) -> str:
    """The message of ``SomeError in file "…", line N:`` (Snakemake's report of an exception
    raised by workflow code, when parsing or in a job)."""
    for number, line in enumerate(lines):
        if _RAISED_IN_FILE.match(line):
            for text in lines[number + 1 : number + 4]:
                if text.strip() and not text.startswith("  File "):
                    return text.strip()
    return ""


def _workflow_error(lines: Sequence[str]) -> str:
    for number, line in enumerate(lines):
        if line.strip() == "WorkflowError:":
            for text in lines[number + 1 : number + 3]:
                if text.strip() and text.strip() not in _NOT_A_REASON:
                    return text.strip()
    return ""


def job_log_reason(path: Path) -> str:
    """The last error line of a job's log."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        if line.startswith("ERROR") or _EXCEPTION_LINE.match(line):
            return line.strip()
    return ""
