"""Rate limits (HTTP 429): read the registry's Retry-After, and pause every job to that registry.

When a registry answers 429, the job that met it records an end time in a per-registry gate
file, ``<cache>/.hangar/ratelimit/<registry>``; every job about to call that registry waits
there first (cluster jobs included: the gate is a file in the shared cache), so one registry's
limit does not turn into a burst of refused requests from all the others. A Retry-After longer
than the run's timeout is not waited for: the images fail at once, saying how long to wait.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

from hangar.status import write_atomic

# skopeo --debug: `Detected 'Retry-After' header "120"` (the registry's value, before skopeo
# caps it at 60 s), or without the header `Too many requests to URL: sleeping for 2.000000 …`.
_RETRY_AFTER = re.compile(r"Detected 'Retry-After' header \\?\"([^\"\\]*)\\?\"")
_TOO_MANY = re.compile(r"Too many requests to \S+: sleeping for ([0-9.]+) seconds")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

LOGIN_HINT = (
    "log in for a higher limit (SOURCE_USERNAME/SOURCE_PASSWORD or REGISTRY_AUTH_FILE); "
    "Docker Hub allows 10 anonymous pulls an hour, 100 with a free account"
)


def retry_after_seconds(line: str, now: float | None = None) -> float | None:
    """The wait a skopeo debug line reports for a 429, in seconds; None for other lines."""
    match = _RETRY_AFTER.search(line)
    if match:
        value = match.group(1).strip()
        if value.isdigit():
            return float(value)
        try:  # an HTTP date
            moment = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, moment - (time.time() if now is None else now))
    match = _TOO_MANY.search(line)
    return float(match.group(1)) if match else None


def rate_limited_reason(registry: str, seconds: float) -> str:
    return f"rate limited by {registry} (429), retry after {seconds:.0f} s"


class RateGate:
    """Per-registry pause shared by the jobs of a run (threads and, through files, processes)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def _file(self, registry: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / (_SAFE_NAME.sub("_", registry) or "_")

    def until(self, registry: str) -> float:
        """Wall-clock time until which ``registry`` asked not to be called (0: no pause)."""
        with self._lock:
            until = self._until.get(registry, 0.0)
        path = self._file(registry)
        if path is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                until = max(until, float(path.read_text().split()[0]))
        return until

    def block(self, registry: str, seconds: float) -> None:
        until = time.time() + seconds
        with self._lock:
            if until <= self._until.get(registry, 0.0):
                return
            self._until[registry] = until
        path = self._file(registry)
        if path is not None:
            # the gate is a courtesy to the registry; the copy does not depend on it
            with contextlib.suppress(OSError):
                write_atomic(path, f"{until:.3f}\n")

    def wait(
        self,
        registry: str,
        longest: float,
        log: Callable[[str], None],
        stopped: Callable[[], bool] = lambda: False,
    ) -> float:
        """Wait out ``registry``'s pause; returns the remaining seconds when they exceed
        ``longest`` (without waiting), else 0 once the pause is over."""
        remaining = self.until(registry) - time.time()
        if remaining <= 0:
            return 0.0
        if remaining > longest:
            return remaining
        log(f"waiting {remaining:.0f}s: {registry} is rate limiting (429)")
        deadline = time.monotonic() + remaining
        while not stopped() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))
        return 0.0
