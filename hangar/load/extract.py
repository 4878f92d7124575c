"""Extract an archive into a load cache in one streaming pass (parts joined in numeric order).

Every blob is hashed while it is written and every part (and the joined stream) is compared with
the checksum file; the cache is marked extracted only when all of that holds, and a cache marked
extracted from the same files is not extracted again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from hangar.layout import BLOB_DIR, saved_list_path, state_path
from hangar.load.source import LoadInput
from hangar.status import write_atomic
from hangar.verify import CHUNK, PartReader, members_under_top, open_decompressed

MARKER_NAME = "extracted.json"


class ExtractError(Exception):
    """The archive is damaged or unreadable; the message names the part or entry at fault."""


def marker_path(cache: Path) -> Path:
    return state_path(cache) / MARKER_NAME


def is_extracted(load_input: LoadInput, cache: Path) -> bool:
    try:
        marker = json.loads(marker_path(cache).read_text())
    except (OSError, ValueError):
        return False
    return (
        bool(marker.get("identity") == load_input.identity()) and saved_list_path(cache).is_file()
    )


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> str:
    """Write one file through a temporary name; returns its sha256 hex."""
    handle = tar.extractfile(member)
    assert handle is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    os.replace(partial, target)
    return digest.hexdigest()


def extract(load_input: LoadInput, cache: Path, log: Any = print) -> bool:
    """Extract into ``cache`` unless already done; returns whether it extracted."""
    plan = load_input.plan
    if plan is None:
        raise ValueError("a directory is loaded in place")
    if is_extracted(load_input, cache):
        log(f"{load_input.path}: already extracted in {cache}")
        return False
    marker_path(cache).unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    reader = PartReader(plan.files, hash_whole=bool(plan.whole))
    raw = io.BufferedReader(reader, CHUNK)
    problems: list[str] = []
    try:
        _, stream = open_decompressed(raw)

        def outside(name: str) -> None:
            problems.append(f"{name}: entry outside the archive's top directory")

        for tar, member, relative in members_under_top(stream, outside):
            if member.isdir() or not relative:
                (cache / relative).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                problems.append(f"{member.name}: links and special files are not allowed")
                continue
            actual = _write_member(tar, member, cache / relative)
            if relative.startswith(BLOB_DIR + "/") and actual != relative.rsplit("/", 1)[1]:
                problems.append(f"{member.name}: content hashes to sha256:{actual}")
    except (tarfile.TarError, EOFError, OSError, ValueError) as problem:
        if isinstance(problem, OSError) and problem.errno is not None:
            raise  # the disk, not the archive
        problems.append(
            f"{load_input.format} stream unreadable in {reader.current_file()}: "
            f"{problem or type(problem).__name__}"
        )
    except Exception as problem:  # zstandard.ZstdError and the like
        problems.append(
            f"{load_input.format} stream unreadable in {reader.current_file()}: {problem}"
        )
    reader.drain()
    damaged = [
        f"{path}: sha256 {reader.hashes.get(path)} does not match its checksum ({expected})"
        for path, expected in plan.expected.items()
        if reader.hashes.get(path) not in (None, expected)
    ]
    if not damaged and plan.whole and reader.whole.hexdigest() != plan.whole:
        damaged.append(f"{load_input.path}: the joined parts do not match their checksum")
    problems = damaged + reader.errors + problems  # a damaged part first: it explains the rest
    if problems:
        raise ExtractError("\n".join(problems))
    if not saved_list_path(cache).is_file():
        raise ExtractError(f"{load_input.path}: no {saved_list_path(cache).name} in the archive")
    write_atomic(marker_path(cache), json.dumps({"identity": load_input.identity()}) + "\n")
    log(f"{load_input.path}: extracted into {cache}")
    return True


def run_job(load_input: LoadInput, cache: Path, log_path: str | Path) -> None:
    """The extract step: extract an archive (once), or check that a directory has its list;
    writes the marker the load jobs wait for."""
    with open(log_path, "w") as log_file:

        def log(message: str) -> None:
            print(message, file=log_file, flush=True)

        if load_input.plan is not None:
            try:
                extract(load_input, cache, log)
            except ExtractError as problem:  # one line, first the damaged part: nothing pushed
                log(f"ERROR: {'; '.join(str(problem).splitlines())}")
                raise
            return
        if not saved_list_path(load_input.path).is_file():
            raise ExtractError(f"{load_input.path}: no {saved_list_path(cache).name}")
        write_atomic(marker_path(cache), json.dumps({"identity": load_input.identity()}) + "\n")
        log(f"{load_input.path}: a directory, loaded in place")
