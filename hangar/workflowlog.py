"""Quieter Snakemake logs: drop messages that say nothing to the user of a save."""

from __future__ import annotations

import logging
import re

# Snakemake restores an update() output (the saved list, the archive record) when its job
# fails; when there was no earlier version (a first run) it warns that it found no backup.
_NO_BACKUP = re.compile(r"Cannot restore .*: no backup found\.?\Z")


class _DropMissingBackups(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _NO_BACKUP.match(record.getMessage())


def quiet_missing_backups(logger: logging.Logger) -> None:
    """Drop "Cannot restore …: no backup found" from ``logger``: nothing existed to restore."""
    if not any(isinstance(f, _DropMissingBackups) for f in logger.filters):
        logger.addFilter(_DropMissingBackups())
