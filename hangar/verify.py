"""Check a saved-images archive on the receiving side, offline, without extracting it to disk.

``python -m hangar.verify DEST`` where DEST is what the save produced: a single
``.tar.gz``/``.tar.zstd`` file, the base name of a split archive (``DEST.part0``, ``DEST.part1``,
…), or a ``dir`` destination. ``DEST.sha256`` (sha256sum format) is read beside it. Checked:

* the files: every part listed in the checksum file, in order, none missing and none extra (hangar
  load reads ``.part0``, ``.part1``, … until one is missing, so a stray part would corrupt the
  stream), each part's sha256 and the sha256 of the whole stream;
* the stream: parts concatenated in numeric order, decompressed (gzip or zstd, told apart by their
  magic bytes) and read as a tar in one pass; every entry lies under ``saved-image-cache/``;
* the blobs: every ``share/sha256/<hex>`` hashes to its name;
* the layouts: every folder of saved-images-list.json has ``index.json`` and ``oci-layout``, and
  every manifest, config and layer they reference is in the archive with the recorded size;
* the list: ``Version`` v1.1.0, a valid ``SavedTime``, ``ArchList``/``OsList`` matching
  ``Images``, and each ``Folder`` named as hangar names it (sha256 of ``repo:copied-tag``);
  each of its ``Artifacts`` (Helm charts, …) like a folder, holding the manifest by its ``Digest``.

Everything is read once, in a streaming pass; only small JSON documents are kept in memory.
Exit status 0 when the archive is sound, 1 naming each problem, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import queue
import re
import sys
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

import zstandard
from isal import igzip

from hangar.layout import (
    BLOB_DIR,
    INDEX_NAME,
    LIST_NAME,
    LIST_VERSION,
    OCI_LAYOUT_NAME,
    TOP_DIR,
    checksum_path,
    part_number,
    part_path,
    parts_on_disk,
    split_checksum,
    split_part,
)
from hangar.platforms import Platform
from hangar.units import human_size

CHUNK = 1 << 20
QUEUE_CHUNKS = 8  # read-ahead of the part reader, in CHUNKs
TAR_BUFFER = 64 << 10  # small reads: a damaged block is reported before a later CRC failure
JSON_BLOB_LIMIT = 4 << 20  # blobs up to this size that look like JSON are kept (manifests)
METADATA_LIMIT = 256 << 20  # saved-images-list.json, index.json, oci-layout
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_CHECKSUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")

Kind = Literal["split", "single", "dir"]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class Findings:
    """What the checks found: errors make the archive unusable, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- the archive's files and their checksums ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The archive to check: its kind, its files in stream order and its checksum file."""

    dest: Path
    kind: Kind
    checksums: Path


def normalise_destination(path: Path) -> Path:
    """Accept ``DEST``, ``DEST.sha256`` or ``DEST.partN`` and return ``DEST``."""
    checksummed = split_checksum(path)
    if checksummed is not None and not path.is_dir():
        return checksummed
    part = split_part(path)
    if part is not None and not path.is_dir():
        return part[0]
    return path


def read_checksums(path: Path, findings: Findings) -> list[tuple[str, str]] | None:
    """(hex digest, name) rows of a sha256sum file, or None when it is missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as problem:
        findings.error(f"{path}: cannot read the checksum file: {problem}")
        return None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _CHECKSUM_LINE.fullmatch(line)
        if match is None:
            findings.error(f"{path}:{number}: not a sha256sum line: {line[:120]!r}")
            continue
        rows.append((match.group(1).lower(), match.group(2)))
    return rows


def locate(dest: Path, checksums: Path | None = None) -> Target:
    """Decide what kind of archive ``dest`` is; raises FileNotFoundError when there is none."""
    record = checksums or checksum_path(dest)
    if dest.is_dir():
        return Target(dest, "dir", record)
    if parts_on_disk(dest):
        return Target(dest, "split", record)
    if dest.is_file():
        return Target(dest, "single", record)
    if record.is_file() and any(
        split_part(line.split()[-1]) for line in record.read_text().splitlines() if line.strip()
    ):
        return Target(dest, "split", record)  # every part is missing: reported by the checks
    raise FileNotFoundError(
        f"{dest}: no archive here (no file, no {part_path(dest, 0).name}, no directory)"
    )


@dataclass
class StreamPlan:
    """The files to read as one stream and what their checksums must be."""

    files: list[Path]
    expected: dict[Path, str]  # file -> hex sha256 from the checksum file
    whole: str  # expected hex sha256 of the whole stream ("" when unknown)
    complete: bool  # False when a part is missing: the stream cannot be read


def plan_stream(
    target: Target, rows: list[tuple[str, str]] | None, findings: Findings
) -> StreamPlan:
    """Check the part files against the checksum file; returns what to read and expect."""
    dest = target.dest
    on_disk = parts_on_disk(dest)
    if target.kind == "single":
        expected: dict[Path, str] = {}
        whole = ""
        if rows is not None:
            named = {name: digest for digest, name in rows}
            if dest.name not in named:
                findings.error(f"{target.checksums}: no line for {dest.name}")
            whole = named.get(dest.name, "")
            extra = sorted(name for name in named if name != dest.name)
            if extra:
                findings.error(
                    f"{target.checksums}: lists {', '.join(extra)} but {dest.name} is a single "
                    "file (parts and checksum file do not belong together)"
                )
        if on_disk:
            findings.warn(
                f"{dest.name}: leftover part files beside the archive: "
                + ", ".join(p.name for p in on_disk.values())
            )
        if whole:
            expected[dest] = whole
        return StreamPlan([dest], expected, "", True)

    listed: list[tuple[int, str]] = []  # (part number, digest) in checksum-file order
    whole = ""
    if rows is not None:
        for digest, name in rows:
            if name == dest.name:
                whole = digest
                continue
            number = part_number(dest, name)
            if number is None:
                findings.error(f"{target.checksums}: line for {name!r}, not a part of {dest.name}")
                continue
            listed.append((number, digest))
        numbers = [number for number, _ in listed]
        if numbers != list(range(len(numbers))):
            findings.error(
                f"{target.checksums}: parts are not listed in order 0..{len(numbers) - 1}: "
                f"{', '.join(str(n) for n in numbers)}"
            )
        if not whole:
            findings.error(f"{target.checksums}: no line for the whole stream ({dest.name})")
        count = max(numbers, default=-1) + 1
    else:
        count = max(on_disk, default=-1) + 1
    by_number = dict(listed)
    missing = [n for n in range(count) if n not in on_disk]
    for number in missing:
        findings.error(f"{part_path(dest, number).name}: part {number} of {count} is missing")
    for number, path in on_disk.items():
        if number >= count:
            findings.error(
                f"{path.name}: extra part not in {target.checksums.name} "
                "(hangar load would append it to the stream): remove it"
            )
    files = [on_disk[n] for n in range(count) if n in on_disk]
    sizes = [path.stat().st_size for path in files]
    if not missing and len(sizes) > 1:
        first = sizes[0]
        for path, size in zip(files[1:-1], sizes[1:-1], strict=True):
            if size != first:
                findings.error(f"{path.name}: {size} bytes, but parts are cut at {first} bytes")
        if sizes[-1] > first:
            findings.error(f"{files[-1].name}: last part is larger than part 0")
        if sizes[-1] == 0:
            findings.error(f"{files[-1].name}: empty part")
    if dest.is_file():
        findings.warn(f"{dest.name}: a single-file archive lies beside the parts")
    expected = {on_disk[n]: by_number[n] for n in range(count) if n in on_disk and n in by_number}
    return StreamPlan(files, expected, whole, not missing and count > 0)


class PartReader(io.RawIOBase):
    """The parts as one stream, hashing each part and the whole while they are read.

    A background thread reads and hashes the files (hashlib releases the GIL), so checksums
    are computed while the reading side decompresses and hashes the blobs.
    """

    def __init__(self, files: list[Path], hash_whole: bool = True) -> None:
        self.files = files
        self.hashes: dict[Path, str] = {}
        self.whole = hashlib.sha256()
        self.position = 0  # bytes handed to the reading side
        self.errors: list[str] = []
        self._hash_whole = hash_whole
        self._queue: queue.Queue[tuple[int, bytes]] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._pending = memoryview(b"")
        self._pending_file = 0
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="read-parts", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        for number, path in enumerate(self.files):
            digest = hashlib.sha256()
            try:
                with open(path, "rb", buffering=0) as handle:
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
                        if self._hash_whole:
                            self.whole.update(chunk)
                        self._queue.put((number, chunk))
            except OSError as problem:
                self.errors.append(f"{path.name}: cannot read: {problem}")
                continue
            self.hashes[path] = digest.hexdigest()
        self._queue.put((len(self.files), b""))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending:
            if self._done:
                return 0
            self._pending_file, chunk = self._queue.get()
            if not chunk:
                self._done = True
                self._thread.join()
                return 0
            self._pending = memoryview(chunk)
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self.position += count
        return count

    def current_file(self) -> str:
        index = min(self._pending_file, len(self.files) - 1)
        return self.files[index].name if self.files else "?"

    def drain(self) -> None:
        """Read to the end, so every file is hashed."""
        while not self._done:
            self.position += len(self._pending)
            self._pending = memoryview(b"")
            _, chunk = self._queue.get()
            if not chunk:
                self._done = True
                self._thread.join()
            self._pending = memoryview(chunk)


# --- what the archive holds ---------------------------------------------------------------------


@dataclass
class Folder:
    index: bytes | None = None
    layout: bytes | None = None


@dataclass
class Contents:
    """The entries of the cache root, gathered from a tar stream or a directory."""

    blobs: dict[str, int] = field(default_factory=dict)  # hex -> size (content hash verified)
    bad_blobs: set[str] = field(default_factory=set)
    json_blobs: dict[str, bytes] = field(default_factory=dict)
    folders: dict[str, Folder] = field(default_factory=dict)
    saved_list: bytes | None = None
    entries: int = 0
    blob_bytes: int = 0


def _hash_blob(
    name: str, hex_digest: str, stream: Readable, size: int, contents: Contents, findings: Findings
) -> None:
    digest = hashlib.sha256()
    keep = size <= JSON_BLOB_LIMIT
    kept = bytearray()
    read = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        read += len(chunk)
        if keep:
            if not kept and not chunk.lstrip().startswith(b"{"):
                keep = False
            else:
                kept += chunk
    if read != size:
        findings.error(f"{name}: {read} bytes read, {size} expected (truncated)")
    actual = digest.hexdigest()
    if actual != hex_digest:
        findings.error(f"{name}: content hashes to sha256:{actual}, not to its name")
        contents.bad_blobs.add(hex_digest)
    contents.blobs[hex_digest] = read
    contents.blob_bytes += read
    if keep and kept:
        contents.json_blobs[hex_digest] = bytes(kept)


def _read_small(name: str, stream: Readable, size: int, findings: Findings) -> bytes | None:
    if size > METADATA_LIMIT:
        findings.error(f"{name}: {size} bytes, too large for a metadata file")
        return None
    return stream.read()


def take_file(
    name: str, stream: Readable, size: int, contents: Contents, findings: Findings
) -> None:
    """Record one regular file, named relative to the cache root."""
    contents.entries += 1
    parts = name.split("/")
    if name == LIST_NAME:
        contents.saved_list = _read_small(name, stream, size, findings)
    elif len(parts) == 3 and f"{parts[0]}/{parts[1]}" == BLOB_DIR:
        if _HEX64.fullmatch(parts[2]):
            _hash_blob(name, parts[2], stream, size, contents, findings)
        else:
            findings.warn(f"{name}: not a sha256 blob name; ignored")
    elif (
        len(parts) == 2 and _HEX64.fullmatch(parts[0]) and parts[1] in (INDEX_NAME, OCI_LAYOUT_NAME)
    ):
        folder = contents.folders.setdefault(parts[0], Folder())
        data = _read_small(name, stream, size, findings)
        if parts[1] == INDEX_NAME:
            folder.index = data
        else:
            folder.layout = data
    else:
        findings.warn(f"{name}: unexpected file (hangar load ignores it)")


def take_dir(name: str, contents: Contents) -> None:
    """Record a directory: a hex top-level name is a folder (maybe with no file inside)."""
    first = name.split("/", 1)[0]
    if _HEX64.fullmatch(first):
        contents.folders.setdefault(first, Folder())


def relative_to_top(name: str) -> str | None:
    """``name`` under the top directory, relative to it; None when it is outside or unsafe."""
    name = name.rstrip("/")
    if name.startswith("/") or ".." in name.split("/"):
        return None
    if name == TOP_DIR:
        return ""
    if not name.startswith(TOP_DIR + "/"):
        return None
    return name[len(TOP_DIR) + 1 :]


def members_under_top(
    stream: IO[bytes], outside: Callable[[str], None]
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """The entries of a tar stream, read in one pass, each with its name relative to the top
    directory; the name of an entry outside it (or unsafe) goes to ``outside``, not further."""
    with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFFER) as tar:
        for member in tar:
            relative = relative_to_top(member.name)
            if relative is None:
                outside(member.name)
                continue
            yield tar, member, relative


def open_decompressed(raw: io.BufferedReader[Any]) -> tuple[str, IO[bytes]]:
    magic = raw.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        return "gzip", cast(IO[bytes], igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    if magic == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True, closefd=False
        )
        return "zstd", cast(IO[bytes], io.BufferedReader(reader, CHUNK))
    if not magic:
        raise ValueError("the archive is empty")
    raise ValueError(f"neither gzip nor zstd (the stream starts with {magic.hex()})")


def read_tar_stream(
    plan: StreamPlan, contents: Contents, findings: Findings
) -> tuple[str, PartReader, bool]:
    """Decompress and read the tar in one pass.

    Returns the compression, the (drained) part reader and whether the stream was read to its
    end without error.
    """
    reader = PartReader(plan.files, hash_whole=len(plan.files) > 1 or bool(plan.whole))
    raw: io.BufferedReader[Any] = io.BufferedReader(reader, CHUNK)
    compression = "?"
    complete = False
    try:
        compression, stream = open_decompressed(raw)
        seen: set[str] = set()

        def outside(name: str) -> None:
            findings.error(f"{name}: entry outside {TOP_DIR}/ (unsafe or misplaced)")

        for tar, member, relative in members_under_top(stream, outside):
            if relative in seen:
                findings.warn(f"{member.name}: appears twice in the archive")
            seen.add(relative)
            if member.isdir():
                if relative:
                    take_dir(relative, contents)
            elif member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                take_file(relative, handle, member.size, contents, findings)
            else:
                findings.error(f"{member.name}: links and special files are not allowed")
        if not seen:
            findings.error("the tar stream holds no entry")
        tail = 0
        while chunk := stream.read(CHUNK):  # end-of-archive padding, then the gzip/zstd trailer
            if chunk.count(0) != len(chunk):
                findings.error("data after the end of the tar archive")
                break
            tail += len(chunk)
        complete = True
    except (tarfile.TarError, EOFError, OSError, ValueError, zstandard.ZstdError) as problem:
        where = f"in {reader.current_file()}, near compressed byte {reader.position}"
        text = str(problem) or type(problem).__name__
        if isinstance(problem, EOFError):
            text = f"stream ends too early ({text})"
        findings.error(f"{compression} stream unreadable {where}: {text}")
    reader.drain()
    for message in reader.errors:
        findings.error(message)
    return compression, reader, complete


def read_directory(
    root: Path, contents: Contents, findings: Findings, hash_sink: dict[str, str]
) -> None:
    """Walk a ``dir`` destination; records each file's sha256 (relative name) in hash_sink."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        relative_dir = base.relative_to(root).as_posix()
        for dirname in dirnames:
            name = dirname if relative_dir == "." else f"{relative_dir}/{dirname}"
            take_dir(name, contents)
        for filename in sorted(filenames):
            path = base / filename
            name = filename if relative_dir == "." else f"{relative_dir}/{filename}"
            if path.is_symlink() or not path.is_file():
                findings.error(f"{name}: links and special files are not allowed")
                continue
            size = path.stat().st_size
            with open(path, "rb") as handle:
                tee = _HashingReader(handle)
                take_file(name, tee, size, contents, findings)
                tee.drain()
            hash_sink[name] = tee.hexdigest()


class _HashingReader(io.RawIOBase):
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


# --- consistency of the list, the layouts and the blobs ----------------------------------------


def _parse_json(data: bytes | None, what: str, findings: Findings) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as problem:
        findings.error(f"{what}: not valid JSON: {problem}")
        return None


def _descriptors(document: Any, key: str, where: str, findings: Findings) -> list[tuple[str, int]]:
    items = document.get(key) if isinstance(document, dict) else None
    if not isinstance(items, list):
        findings.error(f"{where}: no '{key}' list")
        return []
    found = []
    for item in items:
        digest = item.get("digest") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
        if match is None or not isinstance(size, int):
            findings.error(f"{where}: malformed descriptor {item!r}")
            continue
        found.append((match.group(1), size))
    return found


def check_folder(folder: str, contents: Contents, findings: Findings, used: set[str]) -> None:
    """The layout of one listed folder and every blob it references."""
    where = f"folder {folder}"
    entry = contents.folders.get(folder)
    if entry is None:
        findings.error(f"{where}: listed in {LIST_NAME} but not in the archive")
        return
    if entry.layout is None:
        findings.error(f"{where}: oci-layout is missing")
    else:
        layout = _parse_json(entry.layout, f"{where}/oci-layout", findings)
        if layout is not None and (
            not isinstance(layout, dict) or "imageLayoutVersion" not in layout
        ):
            findings.error(f"{where}/oci-layout: no imageLayoutVersion")
    if entry.index is None:
        findings.error(f"{where}: index.json is missing")
        return
    index = _parse_json(entry.index, f"{where}/index.json", findings)
    if index is None:
        return
    pending = [
        (d, s, f"{where}/index.json") for d, s in _descriptors(index, "manifests", where, findings)
    ]
    if not pending and isinstance(index, dict) and isinstance(index.get("manifests"), list):
        findings.error(f"{where}/index.json: lists no manifest")
    visited: set[str] = set()
    while pending:
        digest, size, referrer = pending.pop()
        if digest in visited:
            continue
        visited.add(digest)
        if not _blob_ok(digest, size, f"{where}: manifest", contents, findings, used):
            continue
        manifest = _parse_json(
            contents.json_blobs.get(digest, b"-"), f"{where}: manifest sha256:{digest}", findings
        )
        if manifest is None:
            continue
        if isinstance(manifest, dict) and "manifests" in manifest:
            label = f"{where}: index sha256:{digest}"
            pending += [
                (d, s, label) for d, s in _descriptors(manifest, "manifests", label, findings)
            ]
            continue
        label = f"{where}: manifest sha256:{digest}"
        config = manifest.get("config") if isinstance(manifest, dict) else None
        if not isinstance(config, dict):
            findings.error(f"{label}: no config")
        else:
            for blob, blob_size in _descriptors({"c": [config]}, "c", label, findings):
                _blob_ok(blob, blob_size, f"{where}: config", contents, findings, used)
        for blob, blob_size in _descriptors(manifest, "layers", label, findings):
            _blob_ok(blob, blob_size, f"{where}: layer", contents, findings, used)


def _blob_ok(
    digest: str, size: int, what: str, contents: Contents, findings: Findings, used: set[str]
) -> bool:
    used.add(digest)
    actual = contents.blobs.get(digest)
    if actual is None:
        findings.error(f"{what} sha256:{digest} is missing from {BLOB_DIR}/")
        return False
    if actual != size:
        findings.error(f"{what} sha256:{digest}: {actual} bytes, the manifest says {size}")
        return False
    return digest not in contents.bad_blobs


def _copied_tag_folder(entry: dict[str, Any], image: dict[str, Any]) -> str:
    platform = Platform(
        digest=str(image.get("Digest", "")),
        os=str(image.get("OS", "")),
        architecture=str(image.get("Arch", "")),
        variant=str(image.get("Variant", "")),
        os_version=str(image.get("OsVersion", "")),
    )
    return platform.folder(str(entry.get("Source", "")), str(entry.get("Tag", "")))


def check_saved_list(contents: Contents, findings: Findings) -> tuple[int, int, int]:
    """saved-images-list.json against the folders and blobs: (images, platforms, artifacts)."""
    if contents.saved_list is None:
        findings.error(f"{LIST_NAME} is missing")
        return 0, 0, 0
    document = _parse_json(contents.saved_list, LIST_NAME, findings)
    if not isinstance(document, dict):
        if document is not None:
            findings.error(f"{LIST_NAME}: not a JSON object")
        return 0, 0, 0
    if document.get("Version") != LIST_VERSION:
        findings.error(
            f"{LIST_NAME}: Version is {document.get('Version')!r}; "
            f"hangar load needs {LIST_VERSION!r}"
        )
    try:
        datetime.fromisoformat(str(document.get("SavedTime")))
    except ValueError:
        findings.error(f"{LIST_NAME}: SavedTime {document.get('SavedTime')!r} is not RFC 3339")
    listing = document.get("List")
    if not isinstance(listing, list):
        findings.error(f"{LIST_NAME}: no 'List' array")
        return 0, 0, 0
    listed: dict[str, str] = {}
    used: set[str] = set()
    platforms = 0
    for where, name, entry in _list_entries(listing, "List", findings):
        if not entry.get("Source") or not entry.get("Tag"):
            findings.error(f"{where}: Source and Tag are required")
        images = entry.get("Images")
        if not isinstance(images, list) or not images:
            findings.error(f"{where}: no Images")
            continue
        good = [image for image in images if isinstance(image, dict)]
        if len(good) != len(images):
            findings.error(f"{where}: an element of Images is not an object")
        for key, field_name in (("ArchList", "Arch"), ("OsList", "OS")):
            distinct = list(dict.fromkeys(image.get(field_name) for image in good))
            if entry.get(key) != distinct:
                findings.error(
                    f"{where}: {key} {entry.get(key)!r} does not match Images {distinct!r}"
                )
        for image in good:
            platforms += 1
            folder = image.get("Folder")
            if not isinstance(folder, str) or not _HEX64.fullmatch(folder):
                findings.error(f"{where}: invalid Folder {folder!r}")
                continue
            missing = [key for key in ("Digest", "Arch", "OS") if not image.get(key)]
            if missing:
                findings.error(f"{where}: folder {folder} lacks {', '.join(missing)}")
            elif not _DIGEST.fullmatch(str(image["Digest"])):
                findings.error(
                    f"{where}: folder {folder} has an invalid Digest {image['Digest']!r}"
                )
            expected = _copied_tag_folder(entry, image)
            if folder != expected:  # hangar load finds it by the listed name all the same
                findings.warn(
                    f"{where}: Folder {folder} is not hangar's name for this platform ({expected})"
                )
            if folder in listed:
                findings.warn(f"{where}: folder {folder} is also listed by {listed[folder]}")
                continue
            listed[folder] = name
            check_folder(folder, contents, findings, used)
    artifacts = check_artifacts(document.get("Artifacts", []), contents, findings, listed, used)
    for folder in sorted(set(contents.folders) - set(listed)):
        findings.warn(f"folder {folder} is in the archive but not in {LIST_NAME}")
    unused = set(contents.blobs) - used
    if unused:
        findings.warn(f"{len(unused)} blob(s) in {BLOB_DIR}/ are referenced by no listed folder")
    return len(listing), platforms, artifacts


def _list_entries(
    entries: list[Any], key: str, findings: Findings
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(where, "Source:Tag", entry)`` for each object of the list's ``key`` array; any other
    element is reported and left out."""
    for number, entry in enumerate(entries):
        where = f"{LIST_NAME}: {key}[{number}]"
        if not isinstance(entry, dict):
            findings.error(f"{where}: not an object")
            continue
        name = f"{entry.get('Source')}:{entry.get('Tag')}"
        yield f"{where} ({name})", name, entry


def check_artifacts(
    artifacts: Any, contents: Contents, findings: Findings, listed: dict[str, str], used: set[str]
) -> int:
    """The ``Artifacts`` of the list (Helm charts, …): each a layout holding its manifest, by
    the digest it had in the source registry, and every blob that manifest references."""
    if not isinstance(artifacts, list):
        findings.error(f"{LIST_NAME}: 'Artifacts' is not an array")
        return 0
    for where, name, entry in _list_entries(artifacts, "Artifacts", findings):
        missing = [key for key in ("Source", "Tag", "Digest", "MediaType") if not entry.get(key)]
        if missing:
            findings.error(f"{where}: lacks {', '.join(missing)}")
        digest = str(entry.get("Digest", ""))
        if digest and not _DIGEST.fullmatch(digest):
            findings.error(f"{where}: invalid Digest {digest!r}")
        folder = entry.get("Folder")
        if not isinstance(folder, str) or not _HEX64.fullmatch(folder):
            findings.error(f"{where}: invalid Folder {folder!r}")
            continue
        expected = hashlib.sha256(name.encode()).hexdigest()
        if folder != expected:
            findings.warn(f"{where}: Folder {folder} is not sha256 of {name} ({expected})")
        if folder in listed:
            findings.error(f"{where}: folder {folder} is also listed by {listed[folder]}")
            continue
        listed[folder] = name
        check_folder(folder, contents, findings, used)
        layout = contents.folders.get(folder)
        index = _parse_json(layout.index, f"{folder}/index.json", Findings()) if layout else None
        manifests = index.get("manifests") if isinstance(index, dict) else None
        digests = [m.get("digest") for m in manifests if isinstance(m, dict)] if manifests else []
        if layout is not None and layout.index is not None and digests != [digest]:
            findings.error(f"{where}: folder {folder} holds {digests}, not {digest}")
    return len(artifacts)


# --- the whole check ---------------------------------------------------------------------------


@dataclass
class Result:
    target: Target
    findings: Findings
    compression: str = ""
    files: int = 0
    stream_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    images: int = 0
    platforms: int = 0
    artifacts: int = 0


def verify(dest: Path, checksums: Path | None = None, require_checksums: bool = True) -> Result:
    """Check the archive at ``dest`` (see the module docstring); never raises for bad archives."""
    dest = normalise_destination(Path(dest))
    findings = Findings()
    try:
        target = locate(dest, checksums)
    except FileNotFoundError as problem:
        findings.error(str(problem))
        return Result(Target(dest, "single", dest), findings)
    result = Result(target, findings)
    rows = read_checksums(target.checksums, findings)
    if rows is None and not target.checksums.exists():
        if require_checksums:
            findings.error(
                f"{target.checksums}: checksum file is missing "
                "(--no-checksums checks the content alone)"
            )
        else:
            findings.notes.append(
                f"no checksum file {target.checksums.name}: content checked alone"
            )
    contents = Contents()
    if target.kind == "dir":
        hashes: dict[str, str] = {}
        read_directory(dest, contents, findings, hashes)
        _check_dir_checksums(target, rows, hashes, findings)
        result.files = len(hashes)
        result.compression = "dir"
    else:
        plan = plan_stream(target, rows, findings)
        result.files = len(plan.files)
        if not plan.complete:
            findings.notes.append("content not checked: the stream is incomplete")
            return result
        before = len(findings.errors)
        result.compression, reader, complete = read_tar_stream(plan, contents, findings)
        result.stream_bytes = reader.position
        causes = []  # damaged files: listed before what they broke in the content
        for path, digest in plan.expected.items():
            actual = reader.hashes.get(path)
            if actual is not None and actual != digest:
                causes.append(
                    f"{path.name}: sha256 {actual} does not match "
                    f"{target.checksums.name} ({digest})"
                )
        whole = reader.whole.hexdigest()
        if plan.whole and len(plan.files) == len(reader.hashes) and whole != plan.whole:
            causes.append(
                f"{dest.name}: sha256 of the joined parts {whole} does not match "
                f"{target.checksums.name} ({plan.whole})"
            )
        findings.errors[before:before] = causes
        suffix = {"gzip": ".gz", "zstd": ".zstd"}.get(result.compression)
        if suffix and dest.name.endswith((".gz", ".zstd")) and not dest.name.endswith(suffix):
            findings.warn(
                f"{dest.name}: the content is {result.compression}, the name says otherwise"
            )
        if not complete:
            findings.notes.append(
                "the list and the layouts were not checked: the stream cannot be read to its end"
            )
            result.blobs, result.blob_bytes = len(contents.blobs), contents.blob_bytes
            return result
    result.images, result.platforms, result.artifacts = check_saved_list(contents, findings)
    result.blobs = len(contents.blobs)
    result.blob_bytes = contents.blob_bytes
    return result


def _check_dir_checksums(
    target: Target, rows: list[tuple[str, str]] | None, hashes: dict[str, str], findings: Findings
) -> None:
    if rows is None:
        return
    listed = dict((name, digest) for digest, name in rows)
    for name, digest in listed.items():
        actual = hashes.get(name)
        if actual is None:
            findings.error(f"{target.dest.name}/{name}: listed in {target.checksums.name}, missing")
        elif actual != digest:
            findings.error(
                f"{target.dest.name}/{name}: sha256 {actual} does not match "
                f"{target.checksums.name} ({digest})"
            )
    extra = sorted(set(hashes) - set(listed))
    if extra:
        findings.warn(
            f"{len(extra)} file(s) in {target.dest.name}/ are not in {target.checksums.name}, "
            f"e.g. {extra[0]}"
        )


def summary(result: Result) -> str:
    target = result.target
    if target.kind == "dir":
        what = f"directory, {result.files} files"
    else:
        pieces = [f"{result.files} parts"] if target.kind == "split" else []
        if result.compression:
            pieces += [result.compression, human_size(result.stream_bytes)]
        what = ", ".join(pieces) or "not read"
    return (
        f"{target.dest} ({what}): {result.images} images, {result.platforms} platforms, "
        + (f"{result.artifacts} artifacts, " if result.artifacts else "")
        + f"{result.blobs} blobs ({human_size(result.blob_bytes)})"
    )


def report_lines(result: Result) -> Iterator[str]:
    for text in result.findings.errors:
        yield f"ERROR: {text}"
    for text in result.findings.warnings:
        yield f"warning: {text}"
    for text in result.findings.notes:
        yield f"note: {text}"
    count = len(result.findings.errors)
    if count:
        yield f"FAILED: {count} problem(s) in {summary(result)}"
    else:
        yield f"OK: {summary(result)}"


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hangar verify",
        description="Check a saved-images archive (single file, .partN parts or dir) offline, "
        "without extracting it: checksums, parts, stream, blob digests, layouts and the list.",
    )
    parser.add_argument(
        "destination",
        type=Path,
        help="the archive: saved-images.tar.gz, the name of its .partN files, or a dir "
        "destination (DEST.sha256 and DEST.partN are accepted too)",
    )
    parser.add_argument(
        "--checksums", type=Path, help="the sha256sum file (default: DESTINATION.sha256)"
    )
    parser.add_argument(
        "--no-checksums",
        action="store_true",
        help="accept an archive without a checksum file (e.g. one written by hangar itself)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None, out: Callable[[str], None] | None = None) -> int:
    args = parse_args(argv)
    write = out or (lambda text: print(text, flush=True))
    result = verify(args.destination, args.checksums, require_checksums=not args.no_checksums)
    for line in report_lines(result):
        if args.quiet and line.startswith(("note:", "OK:")):
            continue
        write(line)
    return 0 if result.findings.ok else 1


if __name__ == "__main__":
    sys.exit(main())
