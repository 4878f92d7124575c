"""Where a load reads from: an archive file, the parts of a split archive, or a directory.

``-s`` names ``x.tar.gz``/``x.tar.zstd``, the first part or the base name of split parts
(``x.tar.gz.part0`` or ``x.tar.gz``), or a directory (``-c dir``). Parts are taken in numeric
order (never glob order); ``x.tar.gz.sha256`` is read when it is there. Everything that can be
checked without reading the stream (missing, extra or misnumbered parts, a wrong checksum file)
is checked here, before any push; the checksums themselves are compared while extracting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hangar.layout import saved_list_path
from hangar.verify import (
    GZIP_MAGIC,
    ZSTD_MAGIC,
    Findings,
    StreamPlan,
    locate,
    normalise_destination,
    plan_stream,
    read_checksums,
)

Format = Literal["gzip", "zstd", "dir"]


class LoadInputError(Exception):
    """The input cannot be loaded; the message names the file at fault."""


@dataclass(frozen=True)
class LoadInput:
    """The input of a load: its format, the files of its stream and their expected sha256."""

    path: Path  # the archive's base name, or the directory
    format: Format
    plan: StreamPlan | None  # None for a directory
    warnings: tuple[str, ...] = ()

    def identity(self) -> str:
        """What an extracted copy was made from: names, sizes and mtimes of the stream's files.
        An unchanged archive is not extracted again."""
        if self.plan is None:
            return f"dir:{self.path.absolute()}"
        files = []
        for path in self.plan.files:
            stat = path.stat()
            files.append([str(path.absolute()), stat.st_size, stat.st_mtime_ns])
        return json.dumps({"format": self.format, "files": files})


def magic_format(path: Path) -> Format | None:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError:
        return None
    if magic.startswith(GZIP_MAGIC):
        return "gzip"
    if magic == ZSTD_MAGIC:
        return "zstd"
    return None


def locate_input(source: str | Path, compress: str = "") -> LoadInput:
    """The input named by ``-s``; ``compress`` (gzip, zstd, dir or "" to detect) as ``-c``."""
    given = Path(source)
    if compress == "dir" or (not compress and given.is_dir()):
        if not given.is_dir():
            raise LoadInputError(f"{given}: not a directory (-c dir reads a directory)")
        if not saved_list_path(given).is_file():
            raise LoadInputError(f"{given}: no {saved_list_path(given).name} in the directory")
        return LoadInput(given, "dir", None)
    base = normalise_destination(given)
    try:
        target = locate(base)
    except FileNotFoundError as problem:
        raise LoadInputError(str(problem)) from None
    if target.kind == "dir":
        raise LoadInputError(f"{base}: a directory: use -c dir")
    findings = Findings()
    rows = read_checksums(target.checksums, findings)
    plan = plan_stream(target, rows, findings)
    if findings.errors:
        raise LoadInputError("\n".join(findings.errors))
    if not plan.complete:
        raise LoadInputError(f"{base}: no part to read")
    detected = magic_format(plan.files[0])
    if detected is None:
        raise LoadInputError(f"{plan.files[0]}: neither gzip nor zstd (by its first bytes)")
    warnings = list(findings.warnings)
    if compress and compress != detected:
        warnings.append(
            f"{plan.files[0].name} is {detected}, not {compress}: reading it as {detected}"
        )
    if rows is None:
        warnings.append(f"no {target.checksums.name}: parts are not checked against checksums")
    return LoadInput(base, detected, plan, tuple(warnings))


def default_cache(load_input: LoadInput, parent: Path) -> Path:
    """The load cache of an input: its own folder, never a save cache (saved-image-cache)."""
    key = hashlib.sha256(str(load_input.path.absolute()).encode()).hexdigest()[:12]
    stem = load_input.path.name.split(".")[0] or "archive"
    return parent / f"{stem}-{key}"
