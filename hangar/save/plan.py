"""Plan a save before downloading anything: what each image offers, what would be saved, how
many bytes that takes after deduplication, and whether it fits on the disk.

``python -m hangar.save.plan -f images.txt [flags]`` (or ``--config my.yaml``, the workflow's
config file). For every image of the list it reads the manifest (``skopeo inspect --raw``) and,
for each selected platform, the platform manifest, which lists the config and layer digests with
their compressed sizes; no layer is downloaded. Blobs are counted once across the whole list and
not at all when the cache already holds them (``hangar.layout.blob_path``), which is exactly what
the save will download. The table is printed and written as CSV (``save-plan.csv``), followed by
the totals, the estimated archive size and the free space where the cache and the archive go.

Exit status: 0 when the save fits, 3 when it will not fit on the disk (the plan is still
written), 1 on a bad config or image list or when no image can be read, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import sys
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hangar.imagelist import ImageListError, ImageRef, ListEntry, read_image_list
from hangar.layout import INDEX_NAME, blob_path
from hangar.platforms import Platform, is_index, is_schema1, manifest_digest, select
from hangar.resolve import Artifact, artifact_folder, resolve
from hangar.settings import ConfigError, Settings, complete_config
from hangar.skopeo import (
    ImageError,
    InfrastructureError,
    Skopeo,
    credentials_file,
    credentials_registry,
    stop_all,
)
from hangar.units import human_size

DEFAULT_CSV = "save-plan.csv"
DEFAULT_JOBS = 4
EXIT_OK, EXIT_ERROR, EXIT_NO_SPACE = 0, 1, 3
BLOCK = tarfile.BLOCKSIZE
FOLDER_OVERHEAD = 6 * BLOCK  # folder, blobs/, index.json, oci-layout: headers and contents
DIR_FOLDER_BYTES = 4 * 4096  # a dir destination's folder: 2 directories and 2 small files
DIR_ROOT_BYTES = 4 * 4096  # layout's SHARE_DIR, BLOB_DIR, LIST_NAME and the checksum file
CSV_COLUMNS = (
    "image",
    "digest",
    "platforms_available",
    "platforms_selected",
    "platforms_missing",
    "size_bytes",
    "download_bytes",
    "state",
    "note",
)

BlobKind = Literal["manifest", "config", "layer"]
State = Literal["save", "no-match", "error"]


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex>
    size: int
    kind: BlobKind
    folder: str  # cache folder of the platform that needs it


@dataclass
class ImagePlan:
    """What saving one image would do."""

    reference: str
    digest: str = ""
    available: list[Platform] = field(default_factory=list)
    selected: list[Platform] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # wanted architectures it does not offer
    blobs: list[Blob] = field(default_factory=list)
    problem: str = ""
    artifact: Artifact | None = None  # an OCI artifact (Helm chart, …): saved whole
    notes: list[str] = field(default_factory=list)
    size: int = 0  # compressed bytes of the selected platforms (each blob once)
    download: int = 0  # of those: not in the cache and not counted for an earlier image

    @property
    def saves(self) -> bool:
        """The save would copy something of it: platforms, or the artifact."""
        return bool(self.selected) or self.artifact is not None

    @property
    def state(self) -> State:
        if self.problem:
            return "error"
        return "save" if self.saves else "no-match"

    @property
    def note(self) -> str:
        if self.problem:
            return self.problem
        if self.artifact is not None:
            kind = self.artifact.artifact_type or self.artifact.media_type
            return "; ".join([f"OCI artifact ({kind}): saved whole", *self.notes])
        if not self.selected:
            return "no platform matches arch/os"
        return "; ".join(self.notes)


@dataclass(frozen=True)
class Space:
    """One file system the save writes to."""

    path: Path  # the existing directory where it was measured
    roles: tuple[str, ...]  # "cache", "archive"
    free: int
    need: int

    @property
    def fits(self) -> bool:
        return self.need <= self.free


@dataclass
class Plan:
    images: list[ImagePlan]
    settings: Settings
    unique_blobs: int = 0
    unique_bytes: int = 0
    cached_bytes: int = 0
    download_bytes: int = 0
    archive_bytes: int = 0
    spaces: list[Space] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(space.fits for space in self.spaces)


# --- resolving images -------------------------------------------------------------------------


def platform_name(platform: Platform) -> str:
    """``os/arch[/variant][:os.version]``: one word, for tables and CSV cells."""
    text = "/".join(part for part in (platform.os, platform.architecture, platform.variant) if part)
    return f"{text}:{platform.os_version}" if platform.os_version else text


def _descriptor(item: Any, where: str) -> tuple[str, int]:
    if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
        raise ImageError(f"{where}: malformed descriptor {item!r}")
    size = item.get("size")
    if not isinstance(size, int) or size < 0:
        raise ImageError(f"{where}: descriptor {item['digest']} has no size")
    return item["digest"], size


def platform_blobs(raw: bytes, folder: str, notes: list[str]) -> list[Blob]:
    """The manifest, config and layers of one platform manifest, with their sizes."""
    digest = manifest_digest(raw)
    blobs = [Blob(digest, len(raw), "manifest", folder)]
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ImageError(f"manifest {digest} is not JSON") from None
    if not isinstance(manifest, dict):
        raise ImageError(f"manifest {digest} is not a JSON object")
    if is_schema1(manifest):
        notes.append("schema 1 manifest: layer sizes unknown")
        return blobs
    if is_index(manifest):
        raise ImageError(f"platform manifest {digest} is itself an index")
    config_digest, config_size = _descriptor(manifest.get("config"), f"manifest {digest}")
    blobs.append(Blob(config_digest, config_size, "config", folder))
    for layer in manifest.get("layers") or []:
        layer_digest, layer_size = _descriptor(layer, f"manifest {digest}")
        blobs.append(Blob(layer_digest, layer_size, "layer", folder))
    return blobs


def plan_of(
    skopeo: Skopeo, ref: ImageRef, arch: Sequence[str], os_names: Sequence[str]
) -> ImagePlan:
    """Read the image's manifests (never its layers) and select its platforms, as the save will
    (same resolver: ``hangar.resolve``)."""
    plan = ImagePlan(reference=str(ref))
    resolved = resolve(skopeo, ref.pull_reference)
    plan.digest = resolved.digest
    if resolved.artifact is not None:
        plan.artifact = resolved.artifact
        folder = artifact_folder(ref.source, ref.tag)
        if resolved.artifact.is_index:
            plan.blobs = [Blob(resolved.digest, len(resolved.raw), "manifest", folder)]
            for child in json.loads(resolved.raw).get("manifests", []):
                raw_child = skopeo.inspect_raw(f"{ref.source}@{child['digest']}")
                plan.blobs += platform_blobs(raw_child, folder, plan.notes)
        else:
            plan.blobs = platform_blobs(resolved.raw, folder, plan.notes)
        return plan
    plan.available = resolved.platforms
    plan.selected = select(plan.available, arch, os_names)
    for platform in plan.selected:
        folder = platform.folder(ref.source, ref.tag)
        if resolved.single or platform.digest == resolved.digest:
            plan.blobs += platform_blobs(resolved.raw, folder, plan.notes)
        else:
            raw_platform = skopeo.inspect_raw(f"{ref.source}@{platform.digest}")
            plan.blobs += platform_blobs(raw_platform, folder, plan.notes)
    offered = {platform.architecture for platform in plan.selected}
    plan.missing = [name for name in arch if name not in offered]
    return plan


def plan_image(entry: ListEntry, settings: Settings, credentials: str = "") -> ImagePlan:
    """Resolve one list entry with its own skopeo (and credentials); errors become its problem."""
    ref = entry.ref
    try:
        with credentials_file(ref.registry, for_registry=credentials) as authfile:
            skopeo = Skopeo.from_settings(settings, authfile, log=lambda _text: None)
            return plan_of(skopeo, ref, settings.arch, settings.os)
    except (ImageError, OSError, ValueError) as problem:
        return ImagePlan(reference=str(ref), problem=str(problem) or type(problem).__name__)


# --- counting bytes ---------------------------------------------------------------------------


def _in_cache(blob: Blob, cache: Path) -> bool:
    """The save will not download this blob: skopeo reuses the cache's file of it."""
    path = blob_path(cache, blob.digest)
    try:
        if path.stat().st_size == blob.size:
            return True
    except OSError:
        pass
    # Caches saved before manifests were kept as served (and hangar v1.6's own) hold a
    # Docker-format manifest and its config converted to OCI, under other digests: the
    # platform's folder shows they were saved.
    return blob.kind != "layer" and (cache / blob.folder / INDEX_NAME).is_file()


def _tar_bytes(size: int) -> int:
    return BLOCK + -(-size // BLOCK) * BLOCK


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where its file system can be measured)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path if path.is_dir() else path.parent


def count(plan: Plan) -> None:
    """Deduplicate blobs across images and against the cache; estimate the archive and space."""
    settings = plan.settings
    seen: set[str] = set()
    sizes: dict[str, int] = {}
    folders: set[str] = set()
    tar_total = 3 * BLOCK  # layout's TOP_DIR, SHARE_DIR and BLOB_DIR
    for image in plan.images:
        own: set[str] = set()
        for blob in image.blobs:
            if blob.digest not in own:
                own.add(blob.digest)
                image.size += blob.size
            folders.add(blob.folder)
            if blob.digest in seen:
                continue
            seen.add(blob.digest)
            sizes[blob.digest] = blob.size
            plan.unique_bytes += blob.size
            tar_total += _tar_bytes(blob.size)
            if _in_cache(blob, settings.cache):
                plan.cached_bytes += blob.size
            else:
                image.download += blob.size
                plan.download_bytes += blob.size
    plan.unique_blobs = len(seen)
    saved = [image for image in plan.images if image.saves and not image.problem]
    tar_total += len(folders) * FOLDER_OVERHEAD + _tar_bytes(400 + 350 * len(folders))
    tar_total += 2 * BLOCK
    tar_total += -tar_total % (20 * BLOCK)
    if settings.compress == "dir":
        # dir hard-links the blobs from the cache when both are on one file system; its own
        # files are small (a block each)
        plan.archive_bytes = DIR_ROOT_BYTES + len(folders) * DIR_FOLDER_BYTES
        if _device(settings.cache) != _device(settings.destination.parent):
            plan.archive_bytes += sum(-(-size // 4096) * 4096 for size in sizes.values())
    else:
        # layers are compressed already: gzip and zstd keep them at about their size
        plan.archive_bytes = tar_total + tar_total // 1000
    if not saved:
        plan.archive_bytes = 0
    plan.spaces = measure_space(settings, plan.download_bytes, plan.archive_bytes)


def _device(path: Path) -> int:
    return existing_parent(path).stat().st_dev


def measure_space(settings: Settings, download: int, archive: int) -> list[Space]:
    """Free space where the cache grows and where the archive is written (one entry if shared)."""
    cache_dir = existing_parent(settings.cache)
    archive_dir = existing_parent(settings.destination.parent)
    if cache_dir.stat().st_dev == archive_dir.stat().st_dev:
        free = shutil.disk_usage(cache_dir).free
        return [Space(cache_dir, ("cache", "archive"), free, download + archive)]
    return [
        Space(cache_dir, ("cache",), shutil.disk_usage(cache_dir).free, download),
        Space(archive_dir, ("archive",), shutil.disk_usage(archive_dir).free, archive),
    ]


def make_plan(settings: Settings, entries: Sequence[ListEntry], jobs: int = DEFAULT_JOBS) -> Plan:
    """Resolve every image (``jobs`` at a time) and count the bytes."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        credentials = credentials_registry(settings.source, (e.ref.registry for e in entries))
        try:
            images = list(pool.map(lambda e: plan_image(e, settings, credentials), entries))
        except KeyboardInterrupt:  # Ctrl-C: no new skopeo, the running ones stopped
            stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    plan = Plan(images, settings)
    count(plan)
    return plan


# --- output -----------------------------------------------------------------------------------


def csv_rows(plan: Plan) -> list[dict[str, str | int]]:
    return [
        {
            "image": image.reference,
            "digest": image.digest,
            "platforms_available": " ".join(platform_name(p) for p in image.available),
            "platforms_selected": " ".join(platform_name(p) for p in image.selected),
            "platforms_missing": " ".join(image.missing) if not image.problem else "",
            "size_bytes": image.size,
            "download_bytes": image.download,
            "state": image.state,
            "note": image.note,
        }
        for image in plan.images
    ]


def write_csv(plan: Plan, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(plan))
    temp.replace(path)


def write_plan(
    settings: Settings,
    entries: Sequence[ListEntry],
    csv_path: str | Path,
    log_path: str | Path,
    jobs: int = DEFAULT_JOBS,
) -> Plan:
    """The workflow's plan target: the CSV, the table and totals in the log, totals on stderr."""
    plan = make_plan(settings, entries, jobs)
    write_csv(plan, Path(csv_path))
    Path(log_path).write_text("\n".join([*table_lines(plan), "", *summary_lines(plan)]) + "\n")
    for line in summary_lines(plan):
        print(line, file=sys.stderr)
    return plan


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def table_lines(plan: Plan) -> list[str]:
    header = ("IMAGE", "DIGEST", "AVAILABLE", "SELECTED", "MISSING", "SIZE", "DOWNLOAD", "NOTE")
    rows = []
    for image in plan.images:
        rows.append(
            (
                image.reference,
                image.digest[:19] or "-",
                " ".join(platform_name(p) for p in image.available) or "-",
                " ".join(platform_name(p) for p in image.selected)
                or ("artifact" if image.artifact else "-"),
                (" ".join(image.missing) if not image.problem else "") or "-",
                human_size(image.size) if image.saves else "-",
                human_size(image.download) if image.saves else "-",
                image.note,
            )
        )
    return _table(header, rows, {5, 6})


def summary_lines(plan: Plan) -> list[str]:
    settings = plan.settings
    images = plan.images
    saved = [i for i in images if i.state == "save"]
    errors = sum(1 for i in images if i.state == "error")
    no_match = sum(1 for i in images if i.state == "no-match")
    platforms = sum(len(i.selected) for i in saved)
    artifacts = sum(1 for i in saved if i.artifact is not None)
    lines = [
        f"images: {len(images)} in the list, {len(saved)} to save ({platforms} platforms"
        + (f", {artifacts} artifacts" if artifacts else "")
        + f"), {errors} cannot be read, {no_match} without a platform matching "
        f"arch {','.join(settings.arch)} and os {','.join(settings.os)}",
        f"blobs: {plan.unique_blobs} distinct, {human_size(plan.unique_bytes)}; "
        f"{human_size(plan.cached_bytes)} already in {settings.cache}; "
        f"to download: {human_size(plan.download_bytes)}",
        f"archive: about {human_size(plan.archive_bytes)} ({settings.compress}) "
        f"at {settings.destination}",
    ]
    for space in plan.spaces:
        roles = " and ".join(space.roles)
        parts = []
        if "cache" in space.roles:
            parts.append(f"download {human_size(plan.download_bytes)}")
        if "archive" in space.roles:
            parts.append(f"archive {human_size(plan.archive_bytes)}")
        lines.append(
            f"disk ({roles}): {space.path}: {human_size(space.free)} free, needs "
            f"{human_size(space.need)} ({' + '.join(parts)})"
        )
    for space in plan.spaces:
        if not space.fits:
            what = " and the ".join(space.roles)
            lines.append(
                f"WARNING: the save will not fit: no space on {space.path} for the {what}: "
                f"needs {human_size(space.need)}, {human_size(space.free)} free (short by "
                f"{human_size(space.need - space.free)})"
            )
    return lines


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hangar plan",
        description="Dry run of a save: resolve every image of the list without downloading "
        "layers; print and write as CSV what would be saved, the bytes to download after "
        "deduplication against the cache, and whether it fits on the disk.",
        epilog="exit status: 0 it fits; 3 it will not fit on the disk; 1 bad config or list, or "
        "no image could be read. Credentials: SOURCE_USERNAME/SOURCE_PASSWORD or "
        "REGISTRY_AUTH_FILE, as for the save.",
    )
    parser.add_argument("--config", type=Path, help="a workflow config file (config/config.yaml)")
    parser.add_argument("-f", "--file", help="image list (rancher-images.txt format)")
    parser.add_argument("-s", "--source", help="registry replacing the list's registries")
    parser.add_argument("-a", "--arch", help="architectures, comma-separated")
    parser.add_argument("--os", help="operating systems, comma-separated")
    parser.add_argument("--cache", help="cache folder (blobs already there are not counted)")
    parser.add_argument("-d", "--destination", help="archive path")
    parser.add_argument("-c", "--compress", choices=["gzip", "zstd", "dir"])
    parser.add_argument("--tls-verify", choices=["true", "false"])
    parser.add_argument("--cert-dir")
    parser.add_argument("--timeout", help="longest one registry operation may take (10m)")
    parser.add_argument(
        "-j", "--jobs", type=int, default=DEFAULT_JOBS, help="images resolved at once (default 4)"
    )
    parser.add_argument(
        "--csv", type=Path, default=Path(DEFAULT_CSV), help=f"CSV output (default {DEFAULT_CSV})"
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as problem:
            raise ConfigError(f"{args.config}: cannot read the config: {problem}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a mapping of config keys")
        config.update(loaded)
    keys = (
        "file",
        "source",
        "arch",
        "os",
        "cache",
        "destination",
        "compress",
        "cert_dir",
        "timeout",
    )
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    if args.tls_verify is not None:
        config["tls_verify"] = args.tls_verify == "true"
    if "source" not in config and environ.get("SOURCE_REGISTRY"):
        config["source"] = environ["SOURCE_REGISTRY"]
    if "file" not in config:
        raise ConfigError("file: give the image list with -f/--file (or in --config)")
    return config


def main(
    argv: Iterable[str] | None = None,
    out: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    args = parse_args(argv)
    write = out or (lambda text: print(text, flush=True))
    try:
        config = complete_config(config_from_args(args, os.environ if environ is None else environ))
        settings = Settings.from_config(config)
        entries = read_image_list(settings.file, settings.source)
    except (ConfigError, ImageListError) as problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    try:
        plan = make_plan(settings, entries, args.jobs)
    except InfrastructureError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 128 + signal.SIGINT
    for line in table_lines(plan) + [""] + summary_lines(plan):
        write(line)
    write_csv(plan, args.csv)
    write(f"plan written to {args.csv}")
    if all(image.problem for image in plan.images):
        print("error: no image of the list could be read", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK if plan.fits else EXIT_NO_SPACE


if __name__ == "__main__":
    sys.exit(main())
