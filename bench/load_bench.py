"""Load performance against the raw skopeo loop it wraps, in one run.

    python bench/load_bench.py [--images 150] [--jobs 10]

Starts a source registry with save_bench's synthetic images (2-3 platforms, shared base
layers), saves them with `hangar save` into a gzip archive, then loads that archive into a fresh
registry twice: with `hangar load -j N`, and with plain processes doing the same work under
`xargs -P N` (`tar -xzf`, then per platform `skopeo copy --preserve-digests
--src-shared-blob-dir` into its copied tag). hangar also reads each destination tag and writes
the merged index, which the raw loop does not. Prints the ratio, writes bench/results/load.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from save_bench import push_catalogue  # noqa: E402
from support.registry import Registry  # noqa: E402

from hangar.platforms import Platform  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def hangar(cwd: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hangar.cli.main", *args, "--tls-verify=false"],
        cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def raw_loop(archive: Path, work: Path, host: str, jobs: int) -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(work)], check=True)
    cache = work / "saved-image-cache"
    listing = json.loads((cache / "saved-images-list.json").read_text())
    commands = []
    for image in listing["List"]:
        repository = f"{host}/{image['Source'].split('/', 1)[1]}"
        for saved in image["Images"]:
            platform = Platform(
                saved["Digest"], saved["OS"], saved["Arch"], saved.get("Variant", "")
            )
            commands.append(
                "skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false "
                f"--src-shared-blob-dir {cache / 'share'} oci:{cache / saved['Folder']} "
                f"docker://{repository}:{platform.copied_tag(image['Tag'])}"
            )
    jobs_file = work / "jobs.txt"
    jobs_file.write_text("".join(f"{command}\n" for command in commands))
    with jobs_file.open() as stdin:
        subprocess.run(
            ["xargs", "-d", "\n", "-P", str(jobs), "-n", "1", "sh", "-c"], stdin=stdin, check=True
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--layer-size", type=int, default=256 << 10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-bench-") as name:
        work = Path(name)
        with (
            Registry(work / "source") as source,
            Registry(work / "a") as ours,
            Registry(work / "b") as raw,
        ):
            images = push_catalogue(source.host, args.images, args.layer_size)
            (work / "list.txt").write_text("".join(f"{image.ref}\n" for image in images))
            hangar(work, "save", "-f", "list.txt", "-j", str(args.jobs), "-d", "bench.tar.gz")
            archive = work / "bench.tar.gz"
            size = archive.stat().st_size
            load_seconds = hangar(
                work, "load", "-s", str(archive), "-d", ours.host, "-j", str(args.jobs)
            )
            (work / "raw").mkdir()
            raw_seconds = raw_loop(archive, work / "raw", raw.host, args.jobs)
            rerun = hangar(work, "load", "-s", str(archive), "-d", ours.host, "-j", str(args.jobs))
    rows = [
        ("load, extraction included", load_seconds, raw_seconds),
        ("load again (extracted; blobs present)", rerun, raw_seconds),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "load.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["measurement", "images", "archive_bytes", "jobs", "seconds", "raw_seconds", "ratio"]
        )
        for label, seconds, baseline in rows:
            writer.writerow(
                [
                    label,
                    args.images,
                    size,
                    args.jobs,
                    f"{seconds:.2f}",
                    f"{baseline:.2f}",
                    f"{seconds / baseline:.2f}",
                ]
            )
    for label, seconds, baseline in rows:
        ratio = seconds / baseline
        print(f"{label:40} {seconds:7.1f} s  raw skopeo loop {baseline:7.1f} s  ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
