"""One run at a time per cache, with a lock the kernel releases even when the run is killed."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from hangar.layout import run_lock_path


class RunLockError(RuntimeError):
    """Another live run holds the cache."""


def hold_run_lock(cache: str | Path) -> IO[str]:
    """Lock ``<cache>/.hangar/run.lock`` for the life of this process (keep the handle open).

    An flock dies with its process, so a run killed with SIGKILL never leaves a stale lock.
    """
    path = run_lock_path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockError(
            f"{path}: the cache is in use by a running save ({holder}); wait for it to finish"
        ) from None
    except OSError as error:  # e.g. Lustre without -o flock (ENOSYS), some NFS (ENOLCK)
        handle.close()
        raise RunLockError(
            f"{path}: this file system cannot lock files ({error.strerror}); put the cache on "
            "one that can (local disk, NFSv4, Lustre mounted with -o flock)"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def run_lock_holder(cache: str | Path) -> str | None:
    """Who holds the run lock on this cache (``pid N``), or None when it is free."""
    path = run_lock_path(cache)
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
