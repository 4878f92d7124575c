"""Synthetic container images: built as OCI layouts in pure Python, pushed with skopeo.

Layers are deterministic functions of a seed, so images built from the same `base_seed` share
their base-layer blobs byte for byte. Manifests are written in the requested format (OCI or
Docker v2 schema 2) and pushed with `--preserve-digests` (OCI kinds from an `oci:` layout, Docker
kinds from a `dir:` layout), so the digests computed here are the digests the registry serves.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .registry import clean_env

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO_LAYER = "application/vnd.in-toto+json"

ImageKind = Literal["oci-index", "docker-list", "docker-single", "oci-single"]
SMALL_LAYER_BYTES = 2048
STORE_LAYERS_ABOVE = 1 << 20
CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class PlatformSpec:
    """One image of an index. `in_index=False` writes the entry without a `platform` field."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    in_index: bool = True

    @classmethod
    def parse(cls, text: str, *, os_version: str | None = None) -> PlatformSpec:
        """`os/arch[/variant]`, e.g. `linux/arm64/v8`."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None, os_version)

    @property
    def is_attestation(self) -> bool:
        return self.os == "unknown" and self.architecture == "unknown"

    @property
    def key(self) -> str:
        """`os/arch[/variant]`, with `:os.version` when set; `none` for a platform-less entry."""
        if not self.in_index:
            return "none"
        text = "/".join(p for p in (self.os, self.architecture, self.variant) if p)
        return f"{text}:{self.os_version}" if self.os_version else text

    def index_platform(self) -> dict[str, str]:
        platform = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            platform["os.version"] = self.os_version
        if self.variant:
            platform["variant"] = self.variant
        return platform

    def __str__(self) -> str:
        return self.key


LINUX_AMD64 = PlatformSpec("linux", "amd64")
LINUX_ARM64_V8 = PlatformSpec("linux", "arm64", "v8")
LINUX_ARM_V7 = PlatformSpec("linux", "arm", "v7")
LINUX_S390X = PlatformSpec("linux", "s390x")
LINUX_PPC64LE = PlatformSpec("linux", "ppc64le")
WINDOWS_AMD64 = PlatformSpec("windows", "amd64", os_version="10.0.17763.2114")
ATTESTATION = PlatformSpec("unknown", "unknown")
"""A buildx-style attestation manifest (in-toto layer) referring to the first real image."""
NO_PLATFORM = PlatformSpec("linux", "amd64", in_index=False)
"""An index entry without `platform`; its config still says linux/amd64."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class PushedManifest:
    """One platform image as the registry serves it."""

    platform: PlatformSpec
    digest: str
    media_type: str
    size: int
    config_digest: str
    layer_digests: tuple[str, ...]  # compressed blobs, in manifest order
    diff_ids: tuple[str, ...]  # uncompressed tar digests, from the config

    @property
    def blobs(self) -> frozenset[str]:
        """Every blob this image needs besides its manifest: config and layers."""
        return frozenset((self.config_digest, *self.layer_digests))


@dataclass(frozen=True)
class PushedImage:
    host: str
    repo: str
    tag: str
    kind: ImageKind
    digest: str  # top-level manifest: the index/list, or the single manifest
    media_type: str
    manifests: tuple[PushedManifest, ...]  # index order; one entry for single manifests
    creds: str | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        """`host/repo:tag`, for `docker://` references."""
        return f"{self.host}/{self.repo}:{self.tag}"

    @property
    def is_list(self) -> bool:
        return self.kind in ("oci-index", "docker-list")

    @property
    def index_digest(self) -> str | None:
        return self.digest if self.is_list else None

    @property
    def platforms(self) -> list[str]:
        return [m.platform.key for m in self.manifests]

    @property
    def layer_digests(self) -> dict[str, tuple[str, ...]]:
        """Platform key → compressed layer digests."""
        return {m.platform.key: m.layer_digests for m in self.manifests}

    def manifest(self, platform: str | PlatformSpec) -> PushedManifest:
        key = platform.key if isinstance(platform, PlatformSpec) else platform
        for pushed in self.manifests:
            if pushed.platform.key == key:
                return pushed
        raise KeyError(f"{self.ref}: no platform {key!r} (has {self.platforms})")


class _HashingWriter(io.RawIOBase):
    """Passes bytes on to `target` while hashing and counting them."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sha256.update(chunk)
        self.size += len(chunk)
        self.target.write(chunk)
        return len(chunk)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


class _RandomReader(io.RawIOBase):
    """`size` deterministic, incompressible bytes derived from `seed`."""

    def __init__(self, seed: str, size: int) -> None:
        self.rng = random.Random(seed)
        self.remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.remaining, 1 << 20)
        buffer[:count] = self.rng.randbytes(count)
        self.remaining -= count
        return count


class OciLayout:
    """A minimal OCI image layout on disk, holding one tagged manifest or index."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        (self.blob_dir / digest).write_bytes(data)
        return Descriptor(media_type, f"sha256:{digest}", len(data))

    def add_json(self, document: dict[str, Any], media_type: str) -> Descriptor:
        return self.add_blob(json.dumps(document, indent=2).encode(), media_type)

    def add_layer(self, seed: str, size: int, media_type: str) -> tuple[Descriptor, str]:
        """A gzipped tar whose bytes depend only on `seed` and `size`; returns (blob, diff_id)."""
        partial = self.blob_dir / f".partial-{hashlib.sha256(seed.encode()).hexdigest()}"
        with partial.open("wb") as out:
            compressed = _HashingWriter(out)
            # Random data does not compress: big layers are stored, which keeps building fast.
            level = 1 if size <= STORE_LAYERS_ABOVE else 0
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=level, mtime=0) as gz:
                tar_stream = _HashingWriter(gz)
                with tarfile.open(fileobj=tar_stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
                    for name, reader, length in _layer_files(seed, size):
                        info = tarfile.TarInfo(name)
                        info.size, info.mode, info.mtime = length, 0o644, 0
                        tar.addfile(info, reader)
        partial.rename(self.blob_dir / compressed.digest.removeprefix("sha256:"))
        return Descriptor(media_type, compressed.digest, compressed.size), tar_stream.digest

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        entry = descriptor.as_json() | {"annotations": {"org.opencontainers.image.ref.name": tag}}
        index = {"schemaVersion": 2, "manifests": [entry]}
        (self.root / "index.json").write_text(json.dumps(index))

    def export_dir(self, top: Descriptor, instances: list[Descriptor], target: Path) -> None:
        """Hard-link the blobs into a skopeo `dir:` layout with `top` as its manifest.

        skopeo's `oci:` source only resolves OCI media types in index.json; `dir:` takes the
        Docker v2 schema 2 manifests and lists as they are.
        """
        target.mkdir(parents=True)
        (target / "version").write_text("Directory Transport Version: 1.1\n")
        for blob in self.blob_dir.iterdir():
            os.link(blob, target / blob.name)
        shutil.copyfile(self.blob_dir / top.digest[7:], target / "manifest.json")
        for instance in instances:
            shutil.copyfile(
                self.blob_dir / instance.digest[7:], target / f"{instance.digest[7:]}.manifest.json"
            )


def _layer_files(seed: str, size: int) -> Iterator[tuple[str, BinaryIO, int]]:
    name = hashlib.sha256(seed.encode()).hexdigest()[:12]
    text = f"layer seed {seed}\n".encode()
    yield f"etc/{name}.txt", io.BytesIO(text), len(text)
    yield f"opt/{name}.bin", io.BufferedReader(_RandomReader(seed, size)), size


def _build_platform_image(
    layout: OciLayout,
    platform: PlatformSpec,
    *,
    image_seed: str,
    base_seed: str,
    layer_size: int,
    docker: bool,
) -> tuple[Descriptor, PushedManifest]:
    config_type, layer_type, manifest_type = (
        (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST)
        if docker
        else (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST)
    )
    arch = "/".join(p for p in (platform.os, platform.architecture, platform.variant) if p)
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    # Base layer: shared by every image with the same base_seed and platform. Top: this image's.
    for seed in (f"base:{base_seed}:{arch}", f"image:{image_seed}:{platform.key}"):
        layer, diff_id = layout.add_layer(seed, layer_size, layer_type)
        layers.append(layer)
        diff_ids.append(diff_id)
    config: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    if platform.os_version:
        config["os.version"] = platform.os_version
    config |= {
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/bin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"seed": image_seed},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"synthetic layer {i}"} for i in range(2)],
    }
    config_blob = layout.add_json(config, config_type)
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_blob.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    descriptor = layout.add_json(manifest, manifest_type)
    pushed = PushedManifest(
        platform,
        descriptor.digest,
        manifest_type,
        descriptor.size,
        config_blob.digest,
        tuple(layer.digest for layer in layers),
        tuple(diff_ids),
    )
    return descriptor, pushed


def _build_attestation(
    layout: OciLayout, platform: PlatformSpec, subject: Descriptor, image_seed: str
) -> tuple[Descriptor, PushedManifest]:
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": image_seed, "digest": {"sha256": subject.digest[7:]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": image_seed},
    }
    layer = layout.add_json(statement, IN_TOTO_LAYER)
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    config_blob = layout.add_json(config, OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.as_json(),
        "layers": [
            layer.as_json()
            | {"annotations": {"in-toto.io/predicate-type": statement["predicateType"]}}
        ],
    }
    descriptor = layout.add_json(manifest, OCI_MANIFEST)
    pushed = PushedManifest(
        platform,
        descriptor.digest,
        OCI_MANIFEST,
        descriptor.size,
        config_blob.digest,
        (layer.digest,),
        (layer.digest,),
    )
    return descriptor, pushed


def build_image(
    root: Path,
    repo: str,
    tag: str,
    platforms: list[PlatformSpec] | None,
    *,
    kind: ImageKind,
    base_seed: str,
    layer_size: int = SMALL_LAYER_BYTES,
) -> tuple[str, Descriptor, tuple[PushedManifest, ...]]:
    """Write the image under `root`; returns (skopeo source reference, top, per-platform).

    OCI kinds become the OCI layout `root/oci` tagged `tag`; Docker kinds also `root/dir`.
    """
    platforms = platforms or [LINUX_AMD64]
    docker = kind.startswith("docker")
    if kind in ("docker-single", "oci-single") and len(platforms) != 1:
        raise ValueError(f"{repo}:{tag}: kind {kind} takes exactly one platform, got {platforms}")
    if docker and any(p.is_attestation or not p.in_index for p in platforms):
        raise ValueError(f"{repo}:{tag}: a Docker manifest list needs a real platform per entry")
    layout = OciLayout(root / "oci")
    image_seed = f"{repo}:{tag}"
    entries: list[dict[str, Any]] = []
    instances: list[Descriptor] = []
    pushed: list[PushedManifest] = []
    first_image: Descriptor | None = None
    for platform in platforms:
        if platform.is_attestation:
            if first_image is None:
                raise ValueError(f"{image_seed}: an attestation must follow an image entry")
            descriptor, manifest = _build_attestation(layout, platform, first_image, image_seed)
            annotations = {
                "vnd.docker.reference.digest": first_image.digest,
                "vnd.docker.reference.type": "attestation-manifest",
            }
        else:
            descriptor, manifest = _build_platform_image(
                layout,
                platform,
                image_seed=image_seed,
                base_seed=base_seed,
                layer_size=layer_size,
                docker=docker,
            )
            first_image = first_image or descriptor
            annotations = {}
        entry = descriptor.as_json()
        if platform.in_index:
            entry["platform"] = platform.index_platform()
        if annotations:
            entry["annotations"] = annotations
        entries.append(entry)
        instances.append(descriptor)
        pushed.append(manifest)
    if kind in ("docker-single", "oci-single"):
        top = Descriptor(pushed[0].media_type, pushed[0].digest, pushed[0].size)
    else:
        list_type = DOCKER_LIST if docker else OCI_INDEX
        top = layout.add_json(
            {"schemaVersion": 2, "mediaType": list_type, "manifests": entries}, list_type
        )
    layout.tag(top, tag)
    if not docker:
        return f"oci:{layout.root}:{tag}", top, tuple(pushed)
    layout.export_dir(top, instances if kind == "docker-list" else [], root / "dir")
    return f"dir:{root / 'dir'}", top, tuple(pushed)


def push_image(
    host: str,
    repo: str,
    tag: str,
    platforms: list[PlatformSpec] | None,
    *,
    kind: ImageKind,
    base_seed: str,
    creds: str | None = None,
    tls_verify: bool = False,
    cert_dir: Path | None = None,
    layer_size: int = SMALL_LAYER_BYTES,
) -> PushedImage:
    """Build the image and push it to `docker://host/repo:tag`; the digests are the registry's.

    `platforms` None means linux/amd64. Each platform image has two gzipped layers of about
    `layer_size` incompressible bytes each: a base layer determined by (`base_seed`, platform)
    and a top layer determined by (`repo:tag`, platform).
    """
    with tempfile.TemporaryDirectory(prefix="oci-image-") as tmp:
        source, top, manifests = build_image(
            Path(tmp),
            repo,
            tag,
            platforms,
            kind=kind,
            base_seed=base_seed,
            layer_size=layer_size,
        )
        digest_file = Path(tmp) / "digest"
        args = ["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests", "--quiet"]
        args += [f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
        args += ["--digestfile", str(digest_file)]
        if cert_dir:
            args += ["--dest-cert-dir", str(cert_dir)]
        if creds:
            args += ["--dest-creds", creds]
        args += [source, f"docker://{host}/{repo}:{tag}"]
        result = subprocess.run(args, capture_output=True, text=True, env=clean_env())
        if result.returncode != 0:
            raise RuntimeError(f"pushing {host}/{repo}:{tag} failed: {result.stderr.strip()}")
        pushed_digest = digest_file.read_text().strip()
    if pushed_digest != top.digest:
        raise RuntimeError(f"{host}/{repo}:{tag}: pushed {pushed_digest}, built {top.digest}")
    return PushedImage(host, repo, tag, kind, top.digest, top.media_type, manifests, creds)


def inspect_raw(
    ref: str, *, creds: str | None = None, tls_verify: bool = False, cert_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`skopeo inspect --raw docker://REF` (not checked: callers look at returncode)."""
    args = ["skopeo", "inspect", "--raw", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if cert_dir:
        args += ["--cert-dir", str(cert_dir)]
    args += ["--creds", creds] if creds else ["--no-creds"]
    return subprocess.run(
        [*args, f"docker://{ref}"], capture_output=True, text=True, env=clean_env()
    )


@dataclass(frozen=True)
class CatalogueEntry:
    repo: str
    tag: str
    kind: ImageKind
    platforms: tuple[PlatformSpec, ...]
    base_seed: str

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        "library/nginx",
        "1.25",
        "oci-index",
        (LINUX_AMD64, LINUX_ARM64_V8, LINUX_ARM_V7, ATTESTATION),
        "nginx-base",
    ),
    CatalogueEntry(
        "rancher/busybox",
        "1.36",
        "docker-list",
        (LINUX_AMD64, LINUX_ARM_V7, LINUX_S390X),
        "busybox",
    ),
    CatalogueEntry("library/alpine", "3.18", "docker-single", (LINUX_AMD64,), "alpine"),
    CatalogueEntry(
        "rancher/windows-app", "3.6", "oci-index", (LINUX_AMD64, WINDOWS_AMD64), "windows"
    ),
    CatalogueEntry("rancher/s390x-only", "1.0", "oci-single", (LINUX_S390X,), "s390x"),
    CatalogueEntry(
        "rancher/no-platform", "1.0", "oci-index", (LINUX_AMD64, LINUX_PPC64LE, NO_PLATFORM), "np"
    ),
    CatalogueEntry(
        "rancher/shared-a", "1", "oci-index", (LINUX_AMD64, LINUX_ARM64_V8), "nginx-base"
    ),
    CatalogueEntry(
        "rancher/shared-b", "1", "docker-list", (LINUX_AMD64, LINUX_ARM64_V8), "nginx-base"
    ),
)
"""The standard test images. shared-a and shared-b reuse nginx's base layer per platform."""


def push_catalogue(
    host: str,
    *,
    creds: str | None = None,
    tls_verify: bool = False,
    cert_dir: Path | None = None,
    entries: tuple[CatalogueEntry, ...] = CATALOGUE,
) -> dict[str, PushedImage]:
    """Push `entries` concurrently; returns `repo:tag` → PushedImage, in catalogue order."""

    def push(entry: CatalogueEntry) -> PushedImage:
        return push_image(
            host,
            entry.repo,
            entry.tag,
            list(entry.platforms),
            kind=entry.kind,
            base_seed=entry.base_seed,
            creds=creds,
            tls_verify=tls_verify,
            cert_dir=cert_dir,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((e.name for e in entries), pool.map(push, entries), strict=True))


HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def push_helm_chart(host: str, repo: str, version: str) -> str:
    """A Helm chart stored as an OCI artifact (as `helm push` stores it) at
    `docker://host/repo:version`; returns its manifest digest."""
    with tempfile.TemporaryDirectory(prefix="helm-chart-") as tmp:
        layout = OciLayout(Path(tmp))
        name = repo.rsplit("/", 1)[-1]
        config = layout.add_json(
            {"apiVersion": "v2", "name": name, "version": version}, HELM_CONFIG
        )
        chart = io.BytesIO()
        data = f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode()
        info = tarfile.TarInfo(f"{name}/Chart.yaml")
        info.size = len(data)
        with (
            gzip.GzipFile(fileobj=chart, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tar,
        ):
            tar.addfile(info, io.BytesIO(data))
        layer = layout.add_blob(chart.getvalue(), HELM_CHART)
        manifest = layout.add_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.as_json(),
                "layers": [layer.as_json()],
            },
            OCI_MANIFEST,
        )
        layout.tag(manifest, version)
        args = ["skopeo", "--insecure-policy", "copy", "--preserve-digests", "--quiet"]
        args += [
            "--dest-tls-verify=false",
            f"oci:{tmp}:{version}",
            f"docker://{host}/{repo}:{version}",
        ]
        result = subprocess.run(args, capture_output=True, text=True, env=clean_env())
        if result.returncode != 0:
            raise RuntimeError(f"pushing chart {host}/{repo}:{version}: {result.stderr.strip()}")
    return manifest.digest
