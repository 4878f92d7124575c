"""Pack the saved images of a cache into a hangar v1.6 archive.

The selection is exactly what `saved-images-list.json` names: each listed folder (an OCI layout
whose blobs live in the cache's shared ``hangar.layout.BLOB_DIR``) and every blob its manifests
reference. Written as

* gzip / zstd: one streaming pass tar -> compressor -> part writer (hashes computed on the way), top
  directory `saved-image-cache/`, reproducible entries (sorted, uid/gid 0, fixed modes, mtime = the
  list's SavedTime). Blobs that are already gzip or zstd data are passed to the compressor as such
  (hangar.save.compressor: stored, not re-compressed); the part writer runs in a thread of its own;
* dir: a copy of the cache root built with hard links beside the destination.

`<dest>.sha256` (sha256sum format) is written last; its presence marks a complete archive.

The compressors and their measurements: hangar/save/compressor.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from hangar.layout import (
    BLOB_DIR,
    INDEX_NAME,
    LIST_NAME,
    SHARE_DIR,
    TOP_DIR,
    blob_path,
    checksum_path,
    part_path,
    parts_on_disk,
    saved_list_path,
    state_path,
)
from hangar.save.compressor import (
    GZIP_LEVEL,
    ZSTD_LEVEL,
    Pipeline,
    TarCompressor,
    is_compressed,
    open_compressor,
)
from hangar.save.space import check_archive_space

Compress = Literal["gzip", "zstd", "dir"]

STATE_NAME = "archive-state.json"
CHUNK = 1 << 20  # read and write unit of the stream
RECORD_SIZE = 20 * tarfile.BLOCKSIZE  # tar output is padded to a multiple of this
FORMAT_VERSION = 2  # bump when the archive bytes for the same input change

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")

log = logging.getLogger(__name__)


class ArchiveError(Exception):
    """The cache cannot be archived as it is (missing or malformed content)."""


class DamagedBlobError(ArchiveError):
    """A blob of the cache does not match its digest; it was removed, the archive refused."""


class _Writer(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


@dataclass(frozen=True)
class Entry:
    """One file or directory of the selection, named relative to the cache root."""

    name: str
    source: Path | None  # None for a directory
    size: int
    sha256: str  # hex content hash; "" for a directory


@dataclass(frozen=True)
class Selection:
    entries: tuple[Entry, ...]  # sorted, parents before children
    mtime: int


@dataclass(frozen=True)
class ArchiveResult:
    files: tuple[Path, ...]  # parts, the single file, or the directory
    bytes: int  # compressed stream size, or sum of file sizes for dir
    rebuilt: bool  # False when the existing archive was found up to date
    checksums: Path


# --- selection ---------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ArchiveError(f"{what}: {path} is missing") from None
    except ValueError as exc:
        raise ArchiveError(f"{what}: {path} is not valid JSON: {exc}") from None


def _saved_time(value: object, path: Path) -> int:
    """Parse SavedTime (RFC 3339) into a Unix time; a time without zone counts as UTC."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ArchiveError(f"{path}: invalid SavedTime {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0, int(moment.timestamp()))


def _listed_folders(cache: Path) -> tuple[list[str], int]:
    """Folders named by saved-images-list.json, images' then artifacts' (first-seen order, no
    duplicates), and its SavedTime."""
    path = saved_list_path(cache)
    data = _read_json(path, "saved images list")
    if not isinstance(data, dict) or not isinstance(data.get("List"), list):
        raise ArchiveError(f"{path}: expected an object with a 'List' array")
    folders: dict[str, None] = {}
    for item in data["List"]:
        images = item.get("Images") if isinstance(item, dict) else None
        for image in images if isinstance(images, list) else []:
            folder = image.get("Folder") if isinstance(image, dict) else None
            if not isinstance(folder, str) or not _HEX64.fullmatch(folder):
                raise ArchiveError(f"{path}: image {image!r} has an invalid Folder")
            folders[folder] = None
    artifacts = data.get("Artifacts", [])
    if not isinstance(artifacts, list):
        raise ArchiveError(f"{path}: 'Artifacts' is not an array")
    for artifact in artifacts:  # OCI artifacts: one layout each, blobs shared like images'
        folder = artifact.get("Folder") if isinstance(artifact, dict) else None
        if not isinstance(folder, str) or not _HEX64.fullmatch(folder):
            raise ArchiveError(f"{path}: artifact {artifact!r} has an invalid Folder")
        folders[folder] = None
    return list(folders), _saved_time(data.get("SavedTime"), path)


def _digest_hex(digest: object, where: str) -> str:
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise ArchiveError(f"{where}: unsupported digest {digest!r}")
    return match.group(1)


def _descriptor_digests(descriptors: object, where: str) -> list[str]:
    if not isinstance(descriptors, list):
        raise ArchiveError(f"{where}: expected a list of descriptors, got {descriptors!r}")
    return [_digest_hex(d.get("digest") if isinstance(d, dict) else d, where) for d in descriptors]


def _references(document: object, where: str) -> tuple[list[str], list[str]]:
    """(child manifests, config + layers) referenced by an OCI index or manifest document."""
    if not isinstance(document, dict):
        raise ArchiveError(f"{where}: not a JSON object")
    if "manifests" in document:
        return _descriptor_digests(document["manifests"], where), []
    config = document.get("config")
    blobs = _descriptor_digests([config], where)
    blobs += _descriptor_digests(document.get("layers", []), where)
    return [], blobs


def _folder_blobs(cache: Path, folder: str) -> set[str]:
    """Hex digests of every blob reachable from a folder's index.json."""
    index_path = cache / folder / INDEX_NAME
    pending, _ = _references(_read_json(index_path, f"folder {folder}"), str(index_path))
    blobs: set[str] = set()
    while pending:
        digest = pending.pop()
        if digest in blobs:
            continue
        blobs.add(digest)
        path = blob_path(cache, digest)
        where = f"folder {folder}: manifest sha256:{digest}"
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ArchiveError(
                f"folder {folder}: referenced blob sha256:{digest} is missing from {path.parent}"
            ) from None
        except ValueError as exc:
            raise ArchiveError(f"{where} is not valid JSON: {exc}") from None
        manifests, leaves = _references(document, where)
        pending += manifests
        blobs.update(leaves)
    return blobs


def _file_entry(cache: Path, name: str, folder: str, blob_hex: str = "") -> Entry:
    source = cache / name
    try:
        size = source.stat().st_size
    except FileNotFoundError:
        what = f"referenced blob sha256:{blob_hex}" if blob_hex else name
        raise ArchiveError(f"folder {folder}: {what} is missing ({source})") from None
    digest = blob_hex or hashlib.sha256(source.read_bytes()).hexdigest()
    return Entry(name, source, size, digest)


def select(cache: Path) -> Selection:
    """Everything the archive must hold, from saved-images-list.json; nothing else."""
    folders, mtime = _listed_folders(cache)
    entries = [
        Entry(SHARE_DIR, None, 0, ""),
        Entry(BLOB_DIR, None, 0, ""),
        _file_entry(cache, LIST_NAME, "(list)"),
    ]
    blobs: dict[str, str] = {}  # hex -> first folder referencing it
    for folder in folders:
        if not (cache / folder).is_dir():
            raise ArchiveError(f"folder {folder} is listed in {LIST_NAME} but missing in {cache}")
        entries.append(Entry(folder, None, 0, ""))
        entries.append(Entry(f"{folder}/blobs", None, 0, ""))
        entries.append(_file_entry(cache, f"{folder}/index.json", folder))
        entries.append(_file_entry(cache, f"{folder}/oci-layout", folder))
        for digest in _folder_blobs(cache, folder):
            blobs.setdefault(digest, folder)
    for digest, folder in blobs.items():
        entries.append(_file_entry(cache, f"{BLOB_DIR}/{digest}", folder, digest))
    entries.sort(key=lambda entry: entry.name.split("/"))
    return Selection(tuple(entries), mtime)


def fingerprint(selection: Selection, compress: Compress, part_size: int | None) -> str:
    """A cheap content hash: names, sizes and content digests plus the output settings."""
    listing = [[e.name, e.size, e.sha256] for e in selection.entries]
    settings = [FORMAT_VERSION, compress, part_size, selection.mtime, GZIP_LEVEL, ZSTD_LEVEL]
    text = json.dumps([settings, listing], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- tar stream --------------------------------------------------------------------------------


def _tar_header(name: str, size: int, is_dir: bool, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)  # tobuf() appends "/" to directory names
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


class _Coalescer:
    """Groups small writes (headers, padding, small files) into ~CHUNK-sized writes; contents of
    already-compressed blobs go to the compressor's write_stored."""

    def __init__(self, out: TarCompressor) -> None:
        self.out = out
        self.pending = bytearray()
        self.total = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.total += len(data)
        if len(self.pending) + len(data) < CHUNK:
            self.pending += data
            return
        self.flush()
        if len(data) >= CHUNK:
            self.out.write(data)
        else:
            self.pending += data

    def write_stored(self, data: bytes | bytearray | memoryview) -> None:
        self.total += len(data)
        self.flush()
        self.out.write_stored(data)

    def flush(self) -> None:
        if self.pending:
            self.out.write(self.pending)
            self.pending = bytearray()  # a new buffer: the writer may keep a reference


def _copy_file(entry: Entry, out: _Coalescer, buffer: bytearray) -> None:
    """Stream one file; a blob is hashed on the way and refused if it does not match its
    digest (skopeo reuses damaged blob files of earlier saves without looking at them)."""
    assert entry.source is not None
    view = memoryview(buffer)
    remaining = entry.size
    write = out.write
    blob = entry.name.startswith(BLOB_DIR + "/")
    content = hashlib.sha256() if blob else None
    with open(entry.source, "rb", buffering=0) as src:
        while remaining:
            count = src.readinto(view[: min(remaining, CHUNK)])
            if not count:
                raise ArchiveError(f"{entry.source} shrank while being archived")
            if remaining == entry.size and is_compressed(view[:count]):
                write = out.write_stored
            if content is not None:
                content.update(view[:count])
            write(view[:count])
            remaining -= count
    if entry.source.stat().st_size != entry.size:
        raise ArchiveError(f"{entry.source} changed size while being archived")
    if content is not None and content.hexdigest() != entry.sha256:
        entry.source.unlink(missing_ok=True)  # the next run's check sees it gone: fetched again
        raise DamagedBlobError(
            f"blob sha256:{entry.sha256} in the cache does not match its digest: removed it, "
            "and no archive was written; run the save again to fetch it again"
        )
    out.write(bytes(-entry.size % tarfile.BLOCKSIZE))


def write_tar(selection: Selection, out: TarCompressor) -> int:
    """Stream the selection as a ustar archive under TOP_DIR/; returns the tar size."""
    sink = _Coalescer(out)
    buffer = bytearray(CHUNK)
    sink.write(_tar_header(TOP_DIR, 0, True, selection.mtime))
    for entry in selection.entries:
        name = f"{TOP_DIR}/{entry.name}"
        sink.write(_tar_header(name, entry.size, entry.source is None, selection.mtime))
        if entry.source is not None:
            _copy_file(entry, sink, buffer)
    sink.write(bytes(2 * tarfile.BLOCKSIZE))
    sink.write(bytes(-sink.total % RECORD_SIZE))
    sink.flush()
    return sink.total


# --- output files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Written:
    temp: Path
    final: Path
    size: int
    sha256: str


def _temp_name(final: Path, token: str) -> Path:
    return final.with_name(f".{final.name}.tmp-{token}")


class _PartWriter:
    """Cuts the stream into temp files of part_size bytes (one file without parts), hashing each."""

    def __init__(self, dest: Path, part_size: int | None, token: str) -> None:
        self.dest = dest
        self.part_size = part_size
        self.token = token
        self.done: list[_Written] = []
        self.whole = hashlib.sha256()
        self.total = 0
        self._file: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._opened: list[Path] = []

    def _final(self) -> Path:
        if self.part_size is None:
            return self.dest
        return part_path(self.dest, len(self.done))

    def _open(self) -> BinaryIO:
        path = _temp_name(self._final(), self.token)
        self._opened.append(path)
        self._file = open(path, "xb")  # noqa: SIM115 - closed in _finish_part() or abort()
        self._hash = hashlib.sha256()
        self._size = 0
        return self._file

    def _finish_part(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        self.done.append(
            _Written(self._opened[-1], self._final(), self._size, self._hash.hexdigest())
        )

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        while view:
            file = self._file or self._open()
            room = len(view) if self.part_size is None else self.part_size - self._size
            piece = view[:room]
            file.write(piece)
            self._hash.update(piece)
            if self.part_size is not None:
                self.whole.update(piece)
            self._size += len(piece)
            view = view[len(piece) :]
            if self._size == self.part_size:
                self._finish_part()
        self.total += length
        return length

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> list[_Written]:
        if self._file is not None:
            self._finish_part()
        return self.done

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        for path in self._opened:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_text_atomically(path: Path, text: str, token: str) -> None:
    temp = _temp_name(path, token)
    try:
        temp.write_text(text, encoding="utf-8")
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_leftovers(dest: Path) -> None:
    """Temp files and directories of an earlier run that was killed."""
    pattern = re.compile(
        r"\." + re.escape(dest.name) + r"(\.part[0-9]+|\.sha256)?\.(tmp|old)-[0-9a-f]+"
    )
    for path in dest.parent.iterdir():
        if pattern.fullmatch(path.name):
            _remove(path)


def _checksum_lines(rows: list[tuple[str, str]]) -> str:
    return "".join(f"{digest}  {name}\n" for digest, name in rows)


# --- up-to-date state --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked_state(cache: Path) -> Iterator[dict[str, dict[str, object]]]:
    """The archive state of a cache, read and written back under an exclusive lock."""
    directory = state_path(cache)
    directory.mkdir(exist_ok=True)
    path = directory / STATE_NAME
    with open(directory / f"{STATE_NAME}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            state = {}
        if not isinstance(state, dict):
            state = {}
        yield state
        _write_text_atomically(path, json.dumps(state, indent=1, sort_keys=True), "state")


def _up_to_date_sizes(
    record: object, fp: str, checksums: Path, base: Path
) -> dict[str, int] | None:
    """The recorded output sizes when the archive on disk still matches `fp`, else None."""
    if not isinstance(record, dict) or record.get("fingerprint") != fp:
        return None
    try:
        content = checksums.read_bytes()
    except FileNotFoundError:
        return None
    sizes = record.get("sizes")
    if hashlib.sha256(content).hexdigest() != record.get("checksums_sha256") or not isinstance(
        sizes, dict
    ):
        return None
    for name, size in sizes.items():
        try:
            if (base / name).stat().st_size != size:
                return None
        except FileNotFoundError:
            return None
    return {str(name): int(size) for name, size in sizes.items()}


# --- builders ----------------------------------------------------------------------------------


def _build_tar(
    selection: Selection,
    dest: Path,
    compress: Compress,
    part_size: int | None,
    threads: int,
    token: str,
) -> tuple[list[Path], int, str, dict[str, int]]:
    """Write the compressed stream, then move it into place; returns checksum text and sizes."""
    if compress == "dir":
        raise ValueError("no compressor for 'dir'")
    writer = _PartWriter(dest, part_size, token)
    try:
        pipeline = Pipeline(writer) if threads > 1 else None  # the same bytes either way
        try:
            stream = open_compressor(compress, pipeline or writer)
            write_tar(selection, stream)
            stream.close()
        finally:
            if pipeline is not None:
                pipeline.close()  # waits for the writer thread; raises its error
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    rows = [(w.sha256, w.final.name) for w in written]
    if part_size is not None:
        rows.append((writer.whole.hexdigest(), dest.name))
    checksums = checksum_path(dest)
    _remove(checksums)
    for item in written:
        item.temp.replace(item.final)
    if part_size is None:
        stale = list(parts_on_disk(dest).values())
    else:
        stale = [path for number, path in parts_on_disk(dest).items() if number >= len(written)]
        stale.append(dest)
    for path in stale:
        _remove(path)
    sizes = {w.final.name: w.size for w in written}
    return [w.final for w in written], writer.total, _checksum_lines(rows), sizes


def _link_or_copy(source: Path, target: Path, allow_link: bool) -> bool:
    """Hard-link a blob (copy across file systems); returns whether linking still works."""
    if allow_link:
        try:
            os.link(source, target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copyfile(source, target)
    os.chmod(target, 0o644)
    return False


def _build_dir(
    selection: Selection, dest: Path, token: str
) -> tuple[list[Path], int, str, dict[str, int]]:
    """Build a copy of the selection beside dest, then swap it in."""
    temp = _temp_name(dest, token)
    allow_link = True
    try:
        temp.mkdir(mode=0o755)
        for entry in selection.entries:
            target = temp / entry.name
            if entry.source is None:
                target.mkdir(mode=0o755)
            elif entry.name.startswith(BLOB_DIR + "/"):
                allow_link = _link_or_copy(entry.source, target, allow_link)
            else:  # small metadata files may be rewritten in place in the cache: copy them
                shutil.copyfile(entry.source, target)
                os.chmod(target, 0o644)
    except BaseException:
        _remove(temp)
        raise
    files = [e for e in selection.entries if e.source is not None]
    checksums = checksum_path(dest)
    _remove(checksums)
    old = dest.with_name(f".{dest.name}.old-{token}")
    if dest.exists():
        dest.rename(old)
    temp.rename(dest)
    _remove(old)
    rows = [(e.sha256, e.name) for e in files]
    sizes = {e.name: e.size for e in files}
    return [dest], sum(sizes.values()), _checksum_lines(rows), sizes


def _check_paths(cache: Path, dest: Path, compress: Compress) -> None:
    real_cache, real_dest = cache.resolve(), dest.resolve()
    if real_dest == real_cache or real_cache in real_dest.parents:
        raise ValueError(f"destination {dest} is inside the cache {cache}: choose another path")
    if real_dest in real_cache.parents:
        raise ValueError(f"the cache {cache} is inside the destination {dest}: choose another path")
    if compress == "dir" and dest.exists() and not dest.is_dir():
        raise ValueError(f"destination {dest} exists and is not a directory (compress=dir)")
    if compress != "dir" and dest.is_dir():
        raise ValueError(f"destination {dest} is a directory; expected an archive file path")
    if not dest.parent.is_dir():
        raise ValueError(f"the directory of destination {dest} does not exist")


def build_archive(
    cache: Path,
    destination: Path,
    compress: Compress,
    part_size: int | None,
    threads: int,
    check_space: bool = True,
) -> ArchiveResult:
    """Archive the saved images of `cache` to `destination` (see the module docstring);
    ``check_space``: refuse first (NoSpaceError) when its file system will not hold it."""
    if compress not in ("gzip", "zstd", "dir"):
        raise ValueError(f"invalid compress format {compress!r}: expected gzip, zstd or dir")
    if part_size is not None and (compress == "dir" or part_size <= 0):
        raise ValueError(f"invalid part size {part_size!r} for compress={compress}")
    cache = Path(cache)
    dest = Path(os.path.abspath(destination))
    _check_paths(cache, dest, compress)
    selection = select(cache)
    fp = fingerprint(selection, compress, part_size)
    checksums = checksum_path(dest)
    base = dest if compress == "dir" else dest.parent
    with _locked_state(cache) as state:
        sizes = _up_to_date_sizes(state.get(str(dest)), fp, checksums, base)
        if sizes is not None:
            os.utime(checksums)
            names = sorted(sizes, key=_part_number)
            files = [dest] if compress == "dir" else [base / name for name in names]
            return ArchiveResult(tuple(files), sum(sizes.values()), False, checksums)
        _remove_leftovers(dest)
        if check_space:
            sizes_in = [entry.size for entry in selection.entries if entry.source is not None]
            check_archive_space(cache, dest, sizes_in, compress)
        token = secrets.token_hex(6)
        if compress == "dir":
            files, size, text, sizes = _build_dir(selection, dest, token)
        else:
            files, size, text, sizes = _build_tar(
                selection, dest, compress, part_size, threads, token
            )
        _write_text_atomically(checksums, text, token)
        state[str(dest)] = {
            "fingerprint": fp,
            "checksums_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "sizes": sizes,
        }
    log.info("archived %d entries to %s (%d bytes)", len(selection.entries), dest, size)
    return ArchiveResult(tuple(files), size, True, checksums)


def damaged_archive(cache: Path, destination: Path) -> str:
    """Why the archive on disk is not the one last written (a file missing or of the wrong
    size), or "" when it is, or when there is none to check. Cheap: one stat per file."""
    dest = Path(os.path.abspath(destination))
    checksums = checksum_path(dest)
    if not checksums.exists():
        return ""
    state_file = state_path(cache) / STATE_NAME
    try:
        record = json.loads(state_file.read_text(encoding="utf-8")).get(str(dest))
        sizes = record["sizes"]
        assert isinstance(sizes, dict)
    except (OSError, ValueError, AttributeError, KeyError, TypeError, AssertionError):
        return f"{checksums} has no record of the archive's files"
    base = dest if dest.is_dir() else dest.parent  # compress=dir: names inside the directory
    for name, size in sizes.items():
        try:
            actual = (base / name).stat().st_size
        except FileNotFoundError:
            return f"{base / name} is missing"
        if actual != size:
            return f"{base / name} has {actual} bytes, not {size}"
    return ""


def _part_number(name: str) -> tuple[int, str]:
    match = re.search(r"\.part([0-9]+)$", name)
    return (int(match.group(1)) if match else -1, name)
