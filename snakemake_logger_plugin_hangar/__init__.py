"""Snakemake logger plugin of the hangar save workflow: the save's own short output.

Selected by the workflow profile (``logger: [hangar]`` in profiles/default/config.yaml), so a
plain ``snakemake --cores 10 --configfile my.yaml`` prints what ``hangar save`` prints: failed
and skipped images with their reasons, a progress line, the cause of a failed step and the
summary. Snakemake's full log is still written to ``.snakemake/log/``; ``--verbose``,
``--debug``, ``--debug-dag``, a dry run (``-n``), ``--logger-hangar-full-log`` or
``HANGAR_SNAKEMAKE_LOG=full`` show it on the terminal as Snakemake's default logger would.
"""
# No `from __future__ import annotations`: Snakemake reads the settings' field types.

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from hangar.cli.snakemake import FULL_LOG_VARIABLE

# Options whose output is Snakemake's own answer, not a save: shown unchanged.
_OTHER_MODES = frozenset(
    (
        "--debug",
        "--lint",
        "--summary",
        "-S",
        "--detailed-summary",
        "-D",
        "--list",
        "-l",
        "--list-rules",
        "--list-changes",
        "--lc",
        "--list-target-rules",
        "--lt",
        "--unlock",
        "--report",
        "--cleanup-metadata",
        "--dag",
        "--rulegraph",
        "--filegraph",
        "-n",
        "--dry-run",
        "--dryrun",
    )
)


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    full_log: bool = field(
        default=False,
        metadata={"help": "show Snakemake's full log instead of the save's summary"},
    )


def _wants_full_log(common: Any, settings: LogHandlerSettings | None) -> bool:
    return bool(
        getattr(common, "verbose", False)
        or getattr(common, "debug_dag", False)
        or getattr(common, "dryrun", False)
        or (settings is not None and settings.full_log)
        or os.environ.get(FULL_LOG_VARIABLE) == "full"
        or any(word.split("=")[0] in _OTHER_MODES for word in sys.argv)
    )


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        settings = self.settings if isinstance(self.settings, LogHandlerSettings) else None
        self.full: logging.Handler | None = None
        self.view: Any = None
        stream = sys.stdout if getattr(self.common_settings, "stdout", False) else sys.stderr
        if _wants_full_log(self.common_settings, settings):
            from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

            common = self.common_settings
            self.full = ColorizingTextHandler(nocolor=common.nocolor, stream=stream)
            self.full.addFilter(
                DefaultFilter(
                    common.quiet,
                    common.debug_dag,
                    common.verbose,
                    common.dryrun,
                    common.printshellcmds,
                )
            )
            self.full.setFormatter(DefaultFormatter(common.quiet, common.show_failed_logs))
        else:
            from hangar.cli.logview import SaveLogView

            self.view = SaveLogView(stream)

    def emit(self, record: logging.LogRecord) -> None:
        if self.full is not None:
            self.full.handle(record)
        else:
            self.view.handle(record)

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None
        super().close()

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
