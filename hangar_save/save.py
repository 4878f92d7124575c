"""Save one image: inspect it, select its platforms, copy each into its own OCI layout.

Run by the workflow as ``python -m hangar_save.save …`` (one job per image). Image-level
problems are recorded in the status file and the job exits 0; only infrastructure errors
(no skopeo, disk full, unwritable cache) make it exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from hangar_save.imagelist import parse_reference
from hangar_save.platforms import (
    Platform,
    index_platforms,
    is_index,
    is_schema1,
    schema1_platform,
    select,
    single_platform,
)
from hangar_save.skopeo import ImageError, InfrastructureError, Skopeo, credentials_file
from hangar_save.status import ImageStatus, SavedPlatform, tmp_dir, write_atomic


def log(message: str) -> None:
    print(message, flush=True)


def list_platforms(skopeo: Skopeo, reference: str) -> list[Platform]:
    """Every real platform the image offers, with their source manifest digests."""
    raw = skopeo.inspect_raw(reference)
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ImageError("the registry returned a manifest that is not JSON") from None
    if is_index(manifest):
        return index_platforms(manifest)
    if is_schema1(manifest):
        return [schema1_platform(raw)]
    config = json.loads(skopeo.inspect_raw(reference, config=True))
    return [single_platform(raw, config)]


def layout_size(layout: Path, share: Path) -> int:
    """Bytes of the manifest, config and layers the layout references."""
    index = json.loads((layout / "index.json").read_text())
    total = 0
    for descriptor in index["manifests"]:
        total += descriptor["size"]
        manifest = json.loads((share / "sha256" / descriptor["digest"][7:]).read_text())
        total += manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    return total


def copy_platform(skopeo: Skopeo, source: str, platform: Platform, cache: Path, folder: str) -> int:
    """Copy one platform into ``<cache>/<folder>``, atomically: via a temporary layout."""
    share = cache / "share"
    staging = tmp_dir(cache) / f"{folder}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    share.mkdir(parents=True, exist_ok=True)
    try:
        skopeo.copy(f"{source}@{platform.digest}", staging, share)
        size = layout_size(staging, share)
        final = cache / folder
        if final.exists():
            retired = staging.with_name(staging.name + ".old")
            final.rename(retired)
            shutil.rmtree(retired)
        staging.rename(final)
        return size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_image(
    reference: str,
    cache: Path,
    arch: list[str],
    os_names: list[str],
    no_arch_os_fail: bool,
    skopeo: Skopeo,
) -> ImageStatus:
    ref = parse_reference(reference)
    status = ImageStatus(reference=reference, source=ref.source, tag=ref.tag, state="ok")
    started = time.monotonic()
    try:
        available = list_platforms(skopeo, ref.pull_reference)
        chosen = select(available, arch, os_names)
        status.available = [str(p) for p in available]
        status.missing = [str(p) for p in available if p not in chosen]
        if not chosen:
            status.state = "failed" if no_arch_os_fail else "skipped"
            status.reason = (
                f"no platform matches arch {','.join(arch)} and os {','.join(os_names)} "
                f"(available: {', '.join(status.available) or 'none'})"
            )
            log(("FAILED: " if no_arch_os_fail else "WARNING: ") + status.reason)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reference", required=True, help="normalised registry/repo:tag")
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--status", required=True, type=Path)
    parser.add_argument("--arch", required=True, help="comma-separated architectures")
    parser.add_argument("--os", required=True, help="comma-separated operating systems")
    parser.add_argument("--no-arch-os-fail", action="store_true")
    parser.add_argument("--tls-verify", choices=["true", "false"], default="true")
    parser.add_argument("--cert-dir", default="")
    parser.add_argument("--retry-times", type=int, default=3)
    parser.add_argument("--retry-delay", type=float, default=1.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cache = args.cache.absolute()
    registry = parse_reference(args.reference).registry
    try:
        with credentials_file(registry) as authfile:
            skopeo = Skopeo(
                tls_verify=args.tls_verify == "true",
                cert_dir=args.cert_dir,
                authfile=authfile,
                retry_times=args.retry_times,
                retry_delay=args.retry_delay,
                log=log,
            )
            status = save_image(
                args.reference,
                cache,
                args.arch.split(","),
                args.os.split(","),
                args.no_arch_os_fail,
                skopeo,
            )
        write_atomic(args.status, status.to_json())
    except (InfrastructureError, OSError) as error:
        print(f"ERROR {args.reference}: {error}", file=sys.stderr, flush=True)
        return 2
    saved = ", ".join(f"{p.OS}/{p.Arch}{p.Variant}" for p in status.saved) or "nothing"
    log(f"{status.state.upper()} {args.reference}: saved {saved} in {status.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
