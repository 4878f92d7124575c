"""After the load jobs: the failed list (hangar's load-failed.txt) and the run's summary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from hangar.load.push import LoadStatus
from hangar.status import write_atomic


class NothingLoadedError(RuntimeError):
    """No image was loaded: the run fails (exit 1)."""


def write_summary(statuses: Iterable[str | Path], summary: str | Path, failed: Path) -> None:
    loaded = read = 0
    failed_lines = []
    for path in statuses:
        status = LoadStatus.read(path)
        read += 1
        if status.state == "ok":
            loaded += 1
        else:
            failed_lines.append(status.line)
    if failed_lines:
        write_atomic(failed, "".join(f"{line}\n" for line in failed_lines))
    else:
        failed.unlink(missing_ok=True)  # from an earlier run
    if loaded == 0:
        raise NothingLoadedError(f"nothing was loaded ({len(failed_lines)} failed, see {failed})")
    document = {"images": read, "loaded": loaded, "failed": len(failed_lines)}
    write_atomic(summary, json.dumps(document) + "\n")
