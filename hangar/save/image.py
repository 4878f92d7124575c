"""Save one image: inspect it, select its platforms, copy each into its own OCI layout.

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
from hangar.layout import blob_path, ratelimit_dir
from hangar.platforms import (
    Platform,
    index_platforms,
    is_index,
    is_schema1,
    manifest_digest,
    schema1_platform,
    select,
    single_platform,
)
from hangar.ratelimit import RateGate
from hangar.save.claims import Claim, claim_all
from hangar.skopeo import ImageError, InfrastructureError, Skopeo, credentials_file
from hangar.status import ImageStatus, SavedPlatform, tmp_dir, write_atomic


def list_platforms(skopeo: Skopeo, reference: str) -> list[Platform]:
    """Every real platform the image offers, with their source manifest digests."""
    raw = skopeo.inspect_raw(reference)
    try:
        manifest = json.loads(raw)
        if is_index(manifest):
            return index_platforms(manifest)
        if is_schema1(manifest):
            return [schema1_platform(raw)]
        config = json.loads(skopeo.inspect_raw(reference, config=True))
        return [single_platform(raw, config)]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ImageError(
            f"the registry returned a malformed manifest or config ({error!r})"
        ) from None


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
    path = share / "sha256" / digest.removeprefix("sha256:")
    for _ in range(attempts):
        data = path.read_bytes()
        if manifest_digest(data) == digest:
            return data
        time.sleep(0.05)
    raise InfrastructureError(f"{path}: content does not match its digest")


def layout_manifest(layout: Path) -> str:
    """The digest of the manifest an OCI layout of one platform holds."""
    digest: str = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    return digest


def layout_blobs(layout: Path, share: Path) -> list[tuple[str, int]]:
    """(digest, size) of the manifest, config and layers the layout references."""
    index = json.loads((layout / "index.json").read_text())
    blobs = []
    for descriptor in index["manifests"]:
        blobs.append((descriptor["digest"], descriptor["size"]))
        manifest = json.loads(read_manifest_blob(share, descriptor["digest"]))
        blobs += [
            (item["digest"], item["size"]) for item in [manifest["config"], *manifest["layers"]]
        ]
    return blobs


def wrong_sized_blobs(blobs: list[tuple[str, int]], share: Path) -> list[Path]:
    """Blob files whose size is not their descriptor's: skopeo reuses any file of the right
    name without checking it, so a damaged one left by an earlier save would be handed over."""
    wrong = []
    for digest, size in blobs:
        path = blob_path(share.parent, digest)
        try:
            if path.stat().st_size != size:
                wrong.append(path)
        except FileNotFoundError:
            wrong.append(path)
    return wrong


def copy_platform(skopeo: Skopeo, source: str, platform: Platform, cache: Path, folder: str) -> int:
    """Copy one platform into ``<cache>/<folder>``, atomically: via a temporary layout."""
    share = cache / "share"
    tmp_dir(cache).mkdir(parents=True, exist_ok=True)
    share.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder}.", dir=tmp_dir(cache))) / "layout"
    try:
        skopeo.copy(f"{source}@{platform.digest}", staging, share)
        blobs = layout_blobs(staging, share)
        if wrong := wrong_sized_blobs(blobs, share):
            for path in wrong:  # damaged copies of earlier saves: fetch them again
                path.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            skopeo.copy(f"{source}@{platform.digest}", staging, share)
            blobs = layout_blobs(staging, share)
            if wrong := wrong_sized_blobs(blobs, share):
                raise ImageError(f"blob {wrong[0].name} has the wrong size after a fresh copy")
        size = sum(blob_size for _, blob_size in blobs)
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
) -> ImageStatus:
    reference = str(ref)
    status = ImageStatus(reference=reference, source=ref.source, tag=ref.tag, state="ok")
    started = time.monotonic()
    try:
        available = list_platforms(skopeo, ref.pull_reference)
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
        log(f"FAILED {reference}: {error}")
    status.seconds = round(time.monotonic() - started, 3)
    status.retries = skopeo.retries_used
    return status


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
            skopeo = Skopeo(
                tls_verify=options.tls_verify,
                cert_dir=options.cert_dir,
                authfile=authfile,
                retry_times=options.retry_times,
                retry_delay=options.retry_delay,
                timeout=options.timeout,
                gate=RateGate(ratelimit_dir(cache)),
                log=log,
            )
            lines = options.lines.get(ref.image_id, ())
            status = save_image(ref, cache, arch, os_names, no_arch_os_fail, skopeo, log, lines)
        write_atomic(status_path, status.to_json())
        saved = ", ".join(f"{p.OS}/{p.Arch}{p.Variant}" for p in status.saved) or "nothing"
        log(f"{status.state.upper()} {ref}: saved {saved} in {status.seconds:.1f}s")
    return status
