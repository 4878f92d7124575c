"""Save one image: inspect it, select its platforms, copy each into its own OCI layout.
An OCI artifact (a Helm chart, …) has no platforms: it is copied whole, by digest, into one
layout named like an image's (sha256 of ``<source>:<tag>``).

The workflow runs ``run_job`` once per image, in a thread of Snakemake's own process (no
interpreter start per image; on a cluster, in the job's Snakemake). Image-level problems are
recorded in the status file and the job succeeds; only infrastructure errors (no skopeo, disk
full, unwritable cache) make it fail.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hangar.imagelist import ImageRef
from hangar.layout import INDEX_NAME, blob_path, ratelimit_dir, share_path, tmp_dir
from hangar.platforms import Platform, manifest_digest, select
from hangar.ratelimit import RateGate
from hangar.resolve import Artifact, artifact_folder, resolve
from hangar.save.claims import Claim, claim_all
from hangar.save.expected import expected_of, write_expected
from hangar.save.space import check_image_space
from hangar.skopeo import ImageError, InfrastructureError, Skopeo, credentials_file
from hangar.status import ImageStatus, SavedArtifact, SavedPlatform, write_atomic


def one_per_folder(
    platforms: list[Platform], source: str, tag: str, log: Callable[[str], None]
) -> list[Platform]:
    """Platforms whose copied tags collide (amd64 and arm64 drop their variant) share a folder:
    keep the first, as the folder can hold only one."""
    kept: dict[str, Platform] = {}
    for platform in platforms:
        folder = platform.folder(source, tag)
        if folder in kept:
            log(f"WARNING: {platform} has the same copied tag as {kept[folder]}: not saved")
            continue
        kept[folder] = platform
    return list(kept.values())


def read_manifest_blob(share: Path, digest: str, attempts: int = 100) -> bytes:
    """A manifest from the shared blob dir, checked against its digest.

    skopeo writes manifests in place (configs and layers go through a temporary file), so
    another job saving the same manifest can leave it briefly truncated: wait for it.
    """
    path = blob_path(share.parent, digest)
    for _ in range(attempts):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # another job is fetching a damaged copy again
            data = b""
        if manifest_digest(data) == digest:
            return data
        time.sleep(0.05)
    raise InfrastructureError(f"{path}: content does not match its digest")


def layout_manifest(layout: Path) -> str:
    """The digest of the manifest an OCI layout of one platform holds."""
    digest: str = json.loads((layout / INDEX_NAME).read_text())["manifests"][0]["digest"]
    return digest


@dataclass(frozen=True)
class LayoutBlobs:
    """What an OCI layout references: manifests (an index's too), and configs and layers."""

    manifests: list[tuple[str, int]]
    content: list[tuple[str, int]]

    @property
    def size(self) -> int:
        return sum(size for _, size in self.manifests + self.content)


def layout_blobs(layout: Path, share: Path) -> LayoutBlobs:
    """The blobs the layout references, each manifest read back and checked by digest."""
    pending = list(json.loads((layout / INDEX_NAME).read_text())["manifests"])
    blobs = LayoutBlobs([], [])
    while pending:
        descriptor = pending.pop()
        blobs.manifests.append((descriptor["digest"], descriptor["size"]))
        manifest = json.loads(read_manifest_blob(share, descriptor["digest"]))
        if "manifests" in manifest:
            pending += manifest["manifests"]
            continue
        config = [manifest["config"]] if "config" in manifest else []
        items = [*config, *manifest.get("layers", [])]
        blobs.content.extend((item["digest"], item["size"]) for item in items)
    return blobs


def wrong_sized_blobs(blobs: list[tuple[str, int]], share: Path) -> dict[Path, int | None]:
    """Config and layer files whose size is not their descriptor's, with their inode (None when
    missing): skopeo reuses any file of the right name without checking it, so a damaged one left
    by an earlier save would be handed over. Manifests are not checked by size: skopeo rewrites
    them in place on every copy, so another job's write may be seen half done; their digest is."""
    wrong: dict[Path, int | None] = {}
    for digest, size in blobs:
        path = blob_path(share.parent, digest)
        try:
            found = path.stat()
        except FileNotFoundError:
            wrong[path] = None
            continue
        if found.st_size != size:
            wrong[path] = found.st_ino
    return wrong


def remove_damaged(wrong: dict[Path, int | None]) -> None:
    """Remove the damaged files found, unless another job has replaced one meanwhile (configs
    and layers are renamed into place, so a new inode is a complete copy)."""
    for path, inode in wrong.items():
        try:
            if inode is not None and path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass


def copy_platform(skopeo: Skopeo, source: str, platform: Platform, cache: Path, folder: str) -> int:
    """Copy one platform into ``<cache>/<folder>``, atomically: via a temporary layout."""
    return copy_into(skopeo, f"{source}@{platform.digest}", cache, folder)


def copy_into(skopeo: Skopeo, reference: str, cache: Path, folder: str, exact: bool = False) -> int:
    """Copy ``reference`` into ``<cache>/<folder>``, atomically: via a temporary layout."""
    share = share_path(cache)
    tmp_dir(cache).mkdir(parents=True, exist_ok=True)
    share.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder}.", dir=tmp_dir(cache))) / "layout"
    try:
        skopeo.copy(reference, staging, share, exact=exact)
        blobs = layout_blobs(staging, share)
        if wrong := wrong_sized_blobs(blobs.content, share):
            remove_damaged(wrong)  # damaged copies of earlier saves: fetch them again
            shutil.rmtree(staging, ignore_errors=True)
            skopeo.copy(reference, staging, share, exact=exact)
            blobs = layout_blobs(staging, share)
            if wrong := wrong_sized_blobs(blobs.content, share):
                name = next(iter(wrong)).name
                raise ImageError(f"blob {name} has the wrong size after a fresh copy")
        size = blobs.size
        final = cache / folder
        if final.exists():
            retired = staging.with_name("retired")
            final.rename(retired)
            shutil.rmtree(retired)
        staging.rename(final)
        return size
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


def save_image(
    ref: ImageRef,
    cache: Path,
    arch: list[str],
    os_names: list[str],
    no_arch_os_fail: bool,
    skopeo: Skopeo,
    log: Callable[[str], None],
    lines: tuple[int, ...] = (),
    check_space: bool = True,
) -> ImageStatus:
    reference = str(ref)
    status = ImageStatus(reference=reference, source=ref.source, tag=ref.tag, state="ok")
    started = time.monotonic()
    try:
        resolved = resolve(skopeo, ref.pull_reference, cache)
        if resolved.artifact is not None:
            if check_space:
                check_image_space(cache, reference, resolved, [], log)
            write_expected(cache, ref.image_id, expected_of(resolved, []))
            status.artifact = save_artifact(skopeo, ref, resolved.artifact, cache, log)
            status.available = [f"artifact {resolved.artifact.artifact_type}"]
            return _finished(status, skopeo, started)
        available = resolved.platforms
        chosen = one_per_folder(select(available, arch, os_names), ref.source, ref.tag, log)
        status.available = [str(p) for p in available]
        status.missing = [str(p) for p in available if p not in chosen]
        if not chosen:
            status.state = "failed" if no_arch_os_fail else "skipped"
            status.reason = (
                f"no platform matches arch {','.join(arch)} and os {','.join(os_names)} "
                f"(available: {', '.join(status.available) or 'none'})"
            )
            log(("FAILED: " if no_arch_os_fail else "WARNING: ") + status.reason)
        folders = [platform.folder(ref.source, ref.tag) for platform in chosen]
        if clash := claim_all(cache, folders, Claim(ref.image_id, reference, lines)):
            folder, holder = clash
            platform = chosen[folders.index(folder)]
            where = f" (line {', '.join(map(str, lines))})" if lines else ""
            raise ImageError(
                f"{platform} would be saved as {ref.source}:{platform.copied_tag(ref.tag)}, "
                f"the folder {holder.describe()} already holds: not saved; {reference}{where} "
                "and that image need different tags"
            )
        if check_space and chosen:
            check_image_space(cache, reference, resolved, chosen, log)
        write_expected(cache, ref.image_id, expected_of(resolved, chosen))
        for platform in chosen:
            folder = platform.folder(ref.source, ref.tag)
            log(f"copying {platform} as {ref.source}:{platform.copied_tag(ref.tag)} -> {folder}")
            size = copy_platform(skopeo, ref.source, platform, cache, folder)
            status.saved.append(
                SavedPlatform(
                    Digest=platform.digest,
                    Arch=platform.architecture,
                    OS=platform.os,
                    Folder=folder,
                    Variant=platform.variant,
                    OsVersion=platform.os_version,
                    Size=size,
                    Layout=layout_manifest(cache / folder),
                )
            )
    except ImageError as error:
        status.state = "failed"
        status.reason = str(error)
        status.saved = []
        status.artifact = None
        log(f"FAILED {reference}: {error}")
    return _finished(status, skopeo, started)


def _finished(status: ImageStatus, skopeo: Skopeo, started: float) -> ImageStatus:
    status.seconds = round(time.monotonic() - started, 3)
    status.retries = skopeo.retries_used
    return status


def save_artifact(
    skopeo: Skopeo, ref: ImageRef, artifact: Artifact, cache: Path, log: Callable[[str], None]
) -> SavedArtifact:
    """Copy an artifact whole, by its source digest (arch/os filters do not apply)."""
    folder = artifact_folder(ref.source, ref.tag)
    log(f"copying artifact {artifact.artifact_type or artifact.media_type} as {ref} -> {folder}")
    size = copy_into(skopeo, f"{ref.source}@{artifact.digest}", cache, folder, exact=True)
    index = json.loads((cache / folder / INDEX_NAME).read_text())
    copied = [descriptor["digest"] for descriptor in index["manifests"]]
    if copied != [artifact.digest]:
        raise ImageError(f"artifact {artifact.digest} was stored as {', '.join(copied)}")
    return SavedArtifact(
        Digest=artifact.digest,
        MediaType=artifact.media_type,
        ArtifactType=artifact.artifact_type,
        Folder=folder,
        Size=size,
    )


@dataclass(frozen=True)
class JobOptions:
    """How image jobs reach the registry; unlike arch/os, changing these re-saves nothing."""

    cache: Path
    credentials_registry: str = "docker.io"  # the registry SOURCE_USERNAME/PASSWORD are for
    tls_verify: bool = True
    cert_dir: str = ""
    retry_times: int = 3
    retry_delay: float = 1.0
    timeout: float = 600.0
    ignore_free_space: bool = False  # copy even when the cache's disk looks too small
    # list line numbers by image id, for errors that name two images
    lines: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


def run_job(
    ref: ImageRef,
    arch: list[str],
    os_names: list[str],
    no_arch_os_fail: bool,
    status_path: str | Path,
    log_path: str | Path,
    options: JobOptions,
) -> ImageStatus:
    """The image job: save one image, log to ``log_path``, write its status atomically.

    Image-level problems end up in the status; InfrastructureError (and OSError) propagate so
    the job fails and the run stops.
    """
    cache = options.cache.absolute()
    with open(log_path, "w") as log_file:

        def log(message: str) -> None:
            print(message, file=log_file, flush=True)

        with credentials_file(ref.registry, for_registry=options.credentials_registry) as authfile:
            skopeo = Skopeo.from_settings(options, authfile, log, RateGate(ratelimit_dir(cache)))
            lines = options.lines.get(ref.image_id, ())
            status = save_image(
                ref,
                cache,
                arch,
                os_names,
                no_arch_os_fail,
                skopeo,
                log,
                lines,
                check_space=not options.ignore_free_space,
            )
        write_atomic(status_path, status.to_json())
        saved = ", ".join(f"{p.OS}/{p.Arch}{p.Variant}" for p in status.saved)
        saved = saved or ("the artifact" if status.artifact else "nothing")
        log(f"{status.state.upper()} {ref}: saved {saved} in {status.seconds:.1f}s")
    return status
