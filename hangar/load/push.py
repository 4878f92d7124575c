"""Load one image: push each saved platform unchanged, then write the tag's merged index.

The workflow runs ``run_job`` once per image (or artifact) of saved-images-list.json, in a
thread of Snakemake's process, as the save jobs run. A problem of the image (the registry
refuses it, a folder is damaged) is recorded in the status file and the job succeeds; only
infrastructure errors make it fail.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hangar.layout import share_path, tmp_dir
from hangar.load.destination import destination_repository, project_of
from hangar.load.harbor import HarborError, ensure_project, projects_url
from hangar.load.index import (
    DOCKER_MANIFEST,
    existing_entries,
    index_entry,
    merged_index,
    write_index_layout,
)
from hangar.load.items import LoadItem, SavedListError, folder_manifest
from hangar.skopeo import DEST_CREDENTIALS, ImageError, Skopeo, credentials_file
from hangar.status import write_atomic

State = Literal["ok", "failed"]
_ABSENT_MARKERS = ("manifest unknown", "name unknown", "not found")


@dataclass
class LoadStatus:
    line: str  # Source:Tag, as the failed list names it
    destination: str  # repository:tag written
    state: State
    reason: str = ""
    pushed: list[dict[str, str]] = field(default_factory=list)  # platform, digest
    index_digest: str = ""
    seconds: float = 0.0
    retries: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, path: str | Path) -> LoadStatus:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return cls(**data)


@dataclass(frozen=True)
class PushOptions:
    """Where and how the jobs push; changing these re-pushes nothing by itself."""

    root: Path  # the extracted (or directory) archive
    state: Path  # the load cache, for staging
    registry: str
    default_project: str = "library"
    manifest_format: str = ""  # "" keeps manifests as saved; "v2s2" converts, as hangar
    tls_verify: bool = True
    cert_dir: str = ""
    retry_times: int = 3
    retry_delay: float = 1.0
    timeout: float = 600.0  # seconds one skopeo call may take
    repo_type: str = ""
    harbor_https: bool = True


def read_remote(skopeo: Skopeo, reference: str) -> bytes | None:
    """The raw manifest at ``reference``, None when there is none."""
    try:
        return skopeo.inspect_raw(reference)
    except ImageError as problem:
        if any(marker in str(problem).lower() for marker in _ABSENT_MARKERS):
            return None
        raise


def _pushed_digest(digestfile: Path, expected: str, manifest_format: str) -> str:
    digest = digestfile.read_text().strip()
    if not manifest_format and digest != expected:
        raise ImageError(f"the destination stored {digest}, not the saved manifest {expected}")
    return digest


@dataclass(frozen=True)
class ItemPush:
    """What pushing one item takes: its destination repository, the skopeo to push with, a
    staging folder of its own, its log, and the status its pushes are recorded in."""

    repository: str
    options: PushOptions
    skopeo: Skopeo
    staging: Path
    log: Callable[[str], None]
    status: LoadStatus

    def push_folder(
        self, folder: str, tag: str, what: str, digest: str, manifest_format: str
    ) -> str:
        """Push the saved OCI layout ``folder`` (blobs from the archive's share) as ``tag``;
        the digest the destination stored, which is the saved ``digest`` unless a
        ``manifest_format`` converts it."""
        target = f"{self.repository}:{tag}"
        self.log(f"pushing {what} ({digest}) -> {target}")
        digestfile = self.staging / f"{folder}.digest"
        self.skopeo.push(
            self.options.root / folder,
            share_path(self.options.root),
            target,
            manifest_format=manifest_format,
            digestfile=digestfile,
        )
        return _pushed_digest(digestfile, digest, manifest_format)


def push_platforms(item: LoadItem, push: ItemPush) -> list[dict[str, Any]]:
    entries = []
    manifest_format = push.options.manifest_format
    for saved in item.platforms:
        platform = saved.platform
        try:
            descriptor = folder_manifest(push.options.root, saved.folder)
        except (OSError, ValueError, KeyError) as problem:
            raise ImageError(
                f"{platform}: saved folder {saved.folder} unreadable: {problem}"
            ) from None
        digest = push.push_folder(
            saved.folder,
            platform.copied_tag(item.tag),
            str(platform),
            descriptor["digest"],
            manifest_format,
        )
        if manifest_format:
            raw = push.skopeo.inspect_raw(f"{push.repository}@{digest}")
            descriptor = {"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(raw)}
        fields = {
            "architecture": platform.architecture,
            "os": platform.os,
            "variant": platform.variant,
            "os.version": platform.os_version,
        }
        entries.append(index_entry(descriptor, fields))
        push.status.pushed.append({"platform": str(platform), "digest": digest})
    return entries


def push_tag_index(push: ItemPush, tag: str, entries: list[dict[str, Any]]) -> str:
    target = f"{push.repository}:{tag}"
    existing = existing_entries(read_remote(push.skopeo, target))
    index = merged_index(entries, existing)
    kept = len(json.loads(index)["manifests"]) - len(entries)
    layout = push.staging / "index"
    digest = write_index_layout(layout, index)
    push.log(
        f"writing {target} ({digest}): {len(entries)} pushed, {kept} kept from the destination"
    )
    push.skopeo.push(layout, None, target, index_only=True)
    return digest


def push_artifact(item: LoadItem, push: ItemPush) -> None:
    """An artifact (a Helm chart, ...) keeps its digest even when images are converted."""
    digest = push.push_folder(item.folder, item.tag, "artifact", item.digest, "")
    push.status.pushed.append({"platform": "artifact", "digest": digest})


def create_harbor_project(item: LoadItem, options: PushOptions, log: Callable[[str], None]) -> None:
    project = project_of(
        destination_repository(item.source, options.registry, options.default_project)
    )
    if not project:
        return
    url = projects_url(options.registry, options.harbor_https)
    user, password = (os.environ.get(name, "") for name in DEST_CREDENTIALS)
    try:
        if ensure_project(
            url,
            project,
            username=user,
            password=password,
            tls_verify=options.tls_verify,
            cert_dir=options.cert_dir,
        ):
            log(f"created Harbor project {project!r}")
    except HarborError as problem:
        log(f"WARNING: {problem}")  # as hangar: the push says whether it matters


def load_item(
    item: LoadItem, options: PushOptions, skopeo: Skopeo, log: Callable[[str], None]
) -> LoadStatus:
    repository = destination_repository(item.source, options.registry, options.default_project)
    status = LoadStatus(line=item.line, destination=f"{repository}:{item.tag}", state="ok")
    started = time.monotonic()
    tmp_dir(options.state).mkdir(parents=True, exist_ok=True)
    try:
        if options.repo_type == "harbor":
            create_harbor_project(item, options, log)
        with tempfile.TemporaryDirectory(dir=tmp_dir(options.state)) as staging_name:
            push = ItemPush(repository, options, skopeo, Path(staging_name), log, status)
            if item.kind == "artifact":
                push_artifact(item, push)
            elif not item.platforms:
                raise ImageError("no saved platform")
            else:
                status.index_digest = push_tag_index(push, item.tag, push_platforms(item, push))
    except (ImageError, SavedListError) as problem:
        status.state = "failed"
        status.reason = str(problem)
        log(f"FAILED {item.line}: {problem}")
    status.seconds = round(time.monotonic() - started, 3)
    status.retries = skopeo.retries_used
    return status


def run_job(
    item: LoadItem, status_path: str | Path, log_path: str | Path, options: PushOptions
) -> LoadStatus:
    """The load job: push one item, log to ``log_path``, write its status atomically."""
    with open(log_path, "w") as log_file:

        def log(message: str) -> None:
            print(message, file=log_file, flush=True)

        with credentials_file(options.registry, variables=DEST_CREDENTIALS) as authfile:
            skopeo = Skopeo.from_settings(options, authfile, log)
            status = load_item(item, options, skopeo, log)
        write_atomic(status_path, status.to_json())
        log(f"{status.state.upper()} {item.line} -> {status.destination} in {status.seconds:.1f}s")
    return status
