"""Per-image cost of the save workflow over the skopeo work it does, on a local registry.

    python bench/overhead_bench.py serve WORK [--images 150] [--tiny 1000] [--layer-kb 1300]
    python bench/overhead_bench.py workflow WORK/SET [--cores 8]
    python bench/overhead_bench.py raw WORK/SET [--cores 8]
    python bench/overhead_bench.py compare WORK/SET [--cores 8] [--runs 5]

``serve`` starts a registry on 127.0.0.1 under WORK, pushes two sets of images and stays up
until it is stopped (Ctrl-C, SIGTERM): ``WORK/multi`` (``--images`` images of 2 or 3 platforms,
amd64 and arm64 selected, shared base layers) and ``WORK/tiny`` (``--tiny`` tags of one
single-platform image of two small layers). Each set is a directory with the list and a config.

``workflow SET`` saves the set with Snakemake into a fresh cache (the archive left out: the
image jobs, the saved list and the report); ``raw SET`` runs the same skopeo commands the image
jobs run (per image one ``skopeo inspect --raw``, the config inspect a single-manifest image
needs when its config is not in the cache yet, one copy per selected platform), from a plain
thread pool of ``--cores`` threads, into a fresh cache. Both print their wall seconds. Time the
two side by side with any whole-process timer (``/usr/bin/time``, hyperfine), or run
``compare SET``, which alternates them ``--runs`` times and prints the median ratio and the
per-image overhead ((workflow - raw) / images, in ms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

SELECTED = ("amd64", "arm64")  # the config's default arch
CONFIG_FROM_CACHE = os.environ.get("BENCH_CONFIG_INSPECT", "") != "always"
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


def serve(work: Path, images: int, tiny: int, layer_kb: int) -> None:
    from save_bench import add_tags, prepare, push_catalogue
    from support.images import LINUX_AMD64, push_image
    from support.registry import Registry

    work.mkdir(parents=True, exist_ok=True)
    with Registry(work / "registry") as registry:
        host = registry.host
        print(f"pushing {images} images to {host} ...", file=sys.stderr, flush=True)
        refs = [image.ref for image in push_catalogue(host, images, layer_kb * 1024)]
        prepare(work / "multi", refs)
        small = push_image(host, "bench/small", "1", [LINUX_AMD64], kind="oci-single",
                           base_seed="small")  # fmt: skip
        prepare(work / "tiny", add_tags(host, small, tiny))
        print(f"ready: {work}/multi, {work}/tiny", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


def _fresh(workdir: Path) -> None:
    for name in ("saved-image-cache", ".snakemake", "logs"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for path in workdir.glob("save-*"):
        path.unlink()


def workflow(workdir: Path, cores: int, snakefile: Path = ROOT / "Snakefile") -> float:
    _fresh(workdir)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
        "--directory", str(workdir), "--cores", str(cores), "--quiet", "all",
        "--omit-from", "archive", "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"snakemake failed:\n{done.stdout.decode()[-3000:]}")
    return seconds


def _skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True).stdout


def _save_raw(ref: str, cache: Path) -> None:
    source, tag = ref.rsplit(":", 1)
    tls = "--tls-verify=false"
    raw = _skopeo("inspect", "--raw", tls, f"docker://{ref}")
    manifest = json.loads(raw)
    if manifest.get("mediaType") in INDEX_TYPES:
        platforms = [
            (m["platform"]["architecture"], m["digest"])
            for m in manifest["manifests"]
            if m["platform"]["architecture"] in SELECTED
        ]
    else:
        config = manifest["config"]["digest"]
        blob = cache / "share" / "sha256" / config.removeprefix("sha256:")
        if blob.is_file() and CONFIG_FROM_CACHE:
            data = blob.read_bytes()
        else:
            data = _skopeo("inspect", "--raw", "--config", tls, f"docker://{ref}")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        platforms = [(json.loads(data)["architecture"], digest)]
    for arch, digest in platforms:
        folder = hashlib.sha256(f"{source}:{tag}-{arch}".encode()).hexdigest()
        _skopeo("--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests",
                f"docker://{source}@{digest}", f"oci:{cache / folder}",
                "--dest-shared-blob-dir", str(cache / "share"))  # fmt: skip


def raw(workdir: Path, cores: int) -> float:
    _fresh(workdir)
    cache = workdir / "saved-image-cache"
    (cache / "share").mkdir(parents=True)
    refs = (workdir / "images.txt").read_text().split()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores) as pool:
        list(pool.map(lambda ref: _save_raw(ref, cache), refs))
    return time.perf_counter() - start


def compare(workdir: Path, cores: int, runs: int, snakefile: Path) -> None:
    images = len((workdir / "images.txt").read_text().split())
    pairs = []
    for _ in range(runs):
        pairs.append((workflow(workdir, cores, snakefile), raw(workdir, cores)))
        print(f"workflow {pairs[-1][0]:.2f}s  raw {pairs[-1][1]:.2f}s", flush=True)
    ratio = statistics.median(w / r for w, r in pairs)
    overhead = statistics.median((w - r) / images * 1000 for w, r in pairs)
    print(f"{images} images, {cores} jobs: workflow/raw {ratio:.3f}x (median of {runs} pairs), "
          f"overhead {overhead:.1f} ms per image")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["serve", "workflow", "raw", "compare"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--tiny", type=int, default=1000)
    parser.add_argument("--layer-kb", type=int, default=1300)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--snakefile", type=Path, default=ROOT / "Snakefile")
    args = parser.parse_args()
    workdir = args.dir.absolute()
    if args.what == "serve":
        serve(workdir, args.images, args.tiny, args.layer_kb)
    elif args.what == "compare":
        compare(workdir, args.cores, args.runs, args.snakefile)
    elif args.what == "workflow":
        print(f"workflow {workflow(workdir, args.cores, args.snakefile):.2f}s")
    else:
        seconds = raw(workdir, args.cores)
        print(f"{args.what} {seconds:.2f}s")


if __name__ == "__main__":
    os.environ.pop("SOURCE_USERNAME", None)
    os.environ.pop("SOURCE_PASSWORD", None)
    main()
