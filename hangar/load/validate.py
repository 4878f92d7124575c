"""``hangar load-validate``: is every saved platform in the destination, with its saved digest?

For an image, the destination tag must be a manifest list or OCI index that lists each saved
platform with the digest of the manifest in the archive (hangar v1.6.1 only looks for the
platform, in a Docker list only); for an artifact, the tag must hold its digest. Nothing is
pushed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hangar.load.destination import destination_repository
from hangar.load.index import platform_key
from hangar.load.items import LoadItem, SavedListError, folder_manifest
from hangar.load.push import PushOptions, read_remote
from hangar.platforms import is_index, manifest_digest
from hangar.skopeo import DEST_CREDENTIALS, ImageError, Skopeo, credentials_file
from hangar.status import write_atomic


def item_problems(item: LoadItem, options: PushOptions, skopeo: Skopeo) -> list[str]:
    repository = destination_repository(item.source, options.registry, options.default_project)
    target = f"{repository}:{item.tag}"
    raw = read_remote(skopeo, target)
    if raw is None:
        return [f"{target}: not in the destination"]
    if item.kind == "artifact":
        digest = manifest_digest(raw)
        return [] if digest == item.digest else [f"{target}: {digest}, saved {item.digest}"]
    document = json.loads(raw)
    if not isinstance(document, dict) or not is_index(document):
        return [f"{target}: not a manifest list or OCI index"]
    listed = {entry.get("digest"): entry for entry in document.get("manifests", [])}
    problems = []
    for saved in item.platforms:
        platform = saved.platform
        try:
            expected = folder_manifest(options.root, saved.folder)["digest"]
        except (OSError, ValueError, KeyError) as problem:
            problems.append(f"{target}: {platform}: saved folder unreadable: {problem}")
            continue
        entry = listed.get(expected)
        wanted = (platform.architecture, platform.os, platform.variant, platform.os_version)
        if entry is None:
            others = [d for d, e in listed.items() if platform_key(e) == wanted]
            found = f"listed as {others[0]}" if others else "not listed"
            problems.append(f"{target}: {platform} {found}, saved {expected}")
        elif platform_key(entry) != wanted:
            problems.append(f"{target}: {expected} is listed for another platform")
    return problems


def validate(
    items: Sequence[LoadItem], options: PushOptions, jobs: int, log: Callable[[str], None]
) -> list[tuple[LoadItem, list[str]]]:
    """The items with problems, in list order."""
    with credentials_file(options.registry, variables=DEST_CREDENTIALS) as authfile:

        def check(item: LoadItem) -> list[str]:
            skopeo = Skopeo.from_settings(options, authfile, lambda _text: None)
            try:
                problems = item_problems(item, options, skopeo)
            except (ImageError, SavedListError, ValueError) as problem:
                problems = [str(problem)]  # the caller names the item
            log(
                f"{'FAILED' if problems else 'ok'} {item.line}"
                + "".join(f"\n  {p}" for p in problems)
            )
            return problems

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(check, items))
    return [(item, problems) for item, problems in zip(items, results, strict=True) if problems]


def write_failed(path: Path, failures: Sequence[tuple[LoadItem, list[str]]]) -> None:
    if failures:
        write_atomic(path, "".join(f"{item.line}\n" for item, _ in failures))
    else:
        path.unlink(missing_ok=True)
