"""Save performance, side by side with the raw engine and the disk, in one run.

    python bench/save_bench.py [--images 300] [--noop-images 1000] [--dry-lines 10000] [--cores 10]

Starts its own registry on 127.0.0.1 with synthetic images (shared base layers), then measures:
the full save against plain `skopeo copy` processes run 10 at a time by `xargs -P`; the archive
step against `tar | cat`, `tar | pigz` and `tar | zstd -T0`; a no-op rerun of a 1,000-image save
against `snakemake -n`; a resume after half the images were saved; a dry run of a 10,000-line
list; peak memory of the main process and of each job. Prints a table, writes
bench/results/save.csv and bench/results/save.png, and removes its temporary data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from archive_bench import measure as measure_archive  # noqa: E402
from support.images import (  # noqa: E402
    LINUX_AMD64,
    LINUX_ARM64_V8,
    LINUX_ARM_V7,
    PushedImage,
    push_image,
)
from support.registry import Registry  # noqa: E402

MB = 1_000_000
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Row:
    measurement: str
    seconds: float
    baseline: str
    baseline_seconds: float
    target: str
    extra: str = ""

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline_seconds if self.baseline_seconds else float("nan")


class PeakMemory:
    """Polls /proc for the peak RSS (VmHWM) of a process tree, grouped by kind of process."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _kind(self, pid: int) -> str | None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        text = b" ".join(cmdline).decode(errors="replace")
        if pid == self.root_pid:
            return "snakemake main process"
        if "hangar.save.image" in text:
            return "image job (python)"
        if text.startswith("skopeo"):
            return "image job (skopeo)"
        if "scripts" in text or "snakemake" in text:
            return "script job (python)"
        return None

    def _poll(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                pid = int(entry.name)
                if not self._descends(pid):
                    continue
                kind = self._kind(pid)
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:") and kind:
                        kb = int(line.split()[1])
                        self.peaks[kind] = max(self.peaks.get(kind, 0), kb)
            time.sleep(0.05)

    def _descends(self, pid: int) -> bool:
        while pid > 1:
            if pid == self.root_pid:
                return True
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        return False

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def snakemake(workdir: Path, cores: int, *extra: str, memory: bool = False) -> tuple[float, dict]:
    """Run the workflow in ``workdir``; wall seconds (and peak memory by process kind)."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "--quiet", "all", *extra,
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    monitor = PeakMemory(process.pid) if memory else None
    output, _ = process.communicate()
    seconds = time.perf_counter() - start
    peaks = monitor.stop() if monitor else {}
    if process.returncode != 0:
        raise RuntimeError(f"snakemake failed in {workdir}:\n{output.decode()[-4000:]}")
    return seconds, peaks


def prepare(workdir: Path, refs: list[str], **config: object) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "images.txt").write_text("".join(f"{ref}\n" for ref in refs))
    settings = {"file": "images.txt", "tls_verify": False, **config}
    (workdir / "config.yaml").write_text(json.dumps(settings))


def push_catalogue(host: str, count: int, layer_size: int) -> list[PushedImage]:
    """``count`` images of 2 or 3 platforms; every 10 images share a base layer per platform."""

    def push(number: int) -> PushedImage:
        platforms = [LINUX_AMD64, LINUX_ARM64_V8]
        if number % 2:
            platforms.append(LINUX_ARM_V7)
        return push_image(
            host, f"bench/app{number}", "1.0", platforms, kind="oci-index",
            base_seed=f"base{number % 10}", layer_size=layer_size,
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(push, range(count)))


def add_tags(host: str, image: PushedImage, count: int) -> list[str]:
    """Tag one image ``count`` times by re-putting its manifest (no blob upload)."""
    url = f"http://{host}/v2/{image.repo}/manifests/{image.tag}"
    request = urllib.request.Request(url, headers={"Accept": image.media_type})
    with urllib.request.urlopen(request) as response:
        body = response.read()

    def put(number: int) -> str:
        tag = f"t{number}"
        put_url = f"http://{host}/v2/{image.repo}/manifests/{tag}"
        req = urllib.request.Request(
            put_url, data=body, method="PUT", headers={"Content-Type": image.media_type}
        )
        urllib.request.urlopen(req).close()
        return f"{host}/{image.repo}:{tag}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(put, range(count)))


def skopeo_baseline(
    images: list[PushedImage], cache: Path, parallel: int, inspect: bool = False
) -> float:
    """The same platform copies as the workflow, by plain skopeo processes under xargs -P.

    With ``inspect``, each image is first inspected, as hangar (and this workflow) does to
    choose its platforms: one ``sh`` per image, platforms copied one after the other.
    """
    cache.mkdir(parents=True)
    share = cache / "share"
    share.mkdir()
    tls = "--src-tls-verify=false"
    commands = []
    for image in images:
        source = f"{image.host}/{image.repo}"
        steps = [f"skopeo inspect --raw --tls-verify=false docker://{image.ref} >/dev/null"]
        for manifest in image.manifests:
            if manifest.platform.architecture not in ("amd64", "arm64"):
                continue
            tag = f"{image.tag}-{manifest.platform.architecture}"
            folder = hashlib.sha256(f"{source}:{tag}".encode()).hexdigest()
            steps.append(
                f"skopeo --insecure-policy copy --quiet {tls} --preserve-digests"
                f" docker://{source}@{manifest.digest}"
                f" oci:{cache / folder} --dest-shared-blob-dir {share}"
            )
        commands += [" && ".join(steps)] if inspect else steps[1:]
    jobs = cache.parent / "baseline-jobs.txt"
    jobs.write_text("".join(f"{command}\n" for command in commands))
    start = time.perf_counter()
    with jobs.open() as stdin:
        subprocess.run(
            ["xargs", "-d", "\n", "-P", str(parallel), "-n", "1", "sh", "-c"],
            stdin=stdin,
            check=True,
        )
    return time.perf_counter() - start


def dry_run(workdir: Path, cores: int) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of ``snakemake -n`` in ``workdir``."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), "-n", "--quiet", "all",
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, (peak_kb if peak_kb > before else before) // 1024


def run(args: argparse.Namespace, work: Path) -> list[Row]:
    rows: list[Row] = []
    with Registry(work / "registry") as registry:
        host = registry.host
        print(f"pushing {args.images} images to {host} ...", file=sys.stderr)
        images = push_catalogue(host, args.images, args.layer_kb * 1024)
        refs = [image.ref for image in images]

        print("baseline: skopeo copies under xargs -P ...", file=sys.stderr)
        baseline = skopeo_baseline(images, work / "baseline" / "saved-image-cache", args.cores)
        with_inspect = skopeo_baseline(
            images, work / "baseline-inspect" / "saved-image-cache", args.cores, inspect=True
        )
        full_dir = work / "full"
        prepare(full_dir, refs)
        print("full save ...", file=sys.stderr)
        full, _ = snakemake(full_dir, args.cores, "--omit-from", "archive")
        cache = full_dir / "saved-image-cache"
        size = sum(p.stat().st_size for p in (cache / "share").rglob("*") if p.is_file())
        # the same skopeo work as the image jobs: one inspect per image, one copy per platform
        rows.append(
            Row(
                f"full save, {len(refs)} images, {size / MB:.0f} MB",
                full,
                f"xargs -P {args.cores}: skopeo inspect, then the copies, per image",
                with_inspect,
                "<= 1.10x",
            )  # fmt: skip
        )
        rows.append(
            Row(
                "  same, against the copies alone (no inspect)",
                full,
                f"xargs -P {args.cores} skopeo copy",
                baseline,
                "",
            )
        )

        print("resume after half ...", file=sys.stderr)
        half_dir = work / "half"
        prepare(half_dir, refs[: len(refs) // 2])
        snakemake(half_dir, args.cores, "--omit-from", "archive")
        prepare(half_dir, refs)
        resume, _ = snakemake(half_dir, args.cores, "--omit-from", "archive")
        rows.append(Row("resume after half saved", resume, "full save", full, "<= 0.6x"))

        print("archive step ...", file=sys.stderr)
        archive_work = work / "archive"
        archive_work.mkdir()
        threads = len(os.sched_getaffinity(0))  # the machine's cores, not --cores
        timings = {t.method: t for t in measure_archive(cache, archive_work, threads, 1)}
        for ours, other, target in [
            ("build_archive gzip", f"tar | pigz -p{threads}", "speed >= pigz"),
            ("build_archive zstd", "tar | zstd -T0 -3", "speed >= 0.9x zstd CLI"),
            ("build_archive gzip", "tar | cat (disk limit)", "speed >= 0.5x disk"),
            ("build_archive zstd", "tar | cat (disk limit)", "speed >= 0.5x disk"),
            ("build_archive gzip", "tar | cat > file", ""),
            ("build_archive zstd", "tar | cat > file", ""),
        ]:
            mine, theirs = timings[ours], timings[other]
            rows.append(
                Row(
                    f"archive {ours.split()[-1]} ({mine.mb_per_s:.0f} MB/s) vs {other}",
                    mine.seconds,
                    f"{other} ({theirs.mb_per_s:.0f} MB/s)",
                    theirs.seconds,
                    target,
                )
            )

        rows += archive_job(full_dir, args.cores, timings["tar | cat > file"].seconds)

        print(f"{args.noop_images}-image save, no-op rerun ...", file=sys.stderr)
        small = push_image(host, "bench/small", "1", [LINUX_AMD64], kind="oci-single",
                           base_seed="small")  # fmt: skip
        many = add_tags(host, small, args.noop_images)
        many_dir = work / "many"
        prepare(many_dir, many)
        many_seconds, peaks = snakemake(many_dir, args.cores, memory=True)
        noop, _ = snakemake(many_dir, args.cores)
        dry, _ = dry_run(many_dir, args.cores)
        rows.append(Row(f"no-op rerun, {len(many)} saved images", noop,
                        "snakemake -n, same workdir", dry, "<= 5 s and <= 2x"))  # fmt: skip
        for kind, kb in sorted(peaks.items()):
            rows.append(Row(f"peak RSS, {len(many)}-image save: {kind}", kb / 1024, "MB", 0,
                            "<= 400 MB", extra=f"{kb / 1024:.0f} MB"))  # fmt: skip
        rows.append(Row(f"save of {len(many)} small images", many_seconds, "", 0, ""))

    first: tuple[int, float] | None = None
    for lines in sorted({args.dry_lines // 10, args.dry_lines * 3 // 10, args.dry_lines}):
        print(f"dry run of {lines} lines ...", file=sys.stderr)
        dry_dir = work / f"dry{lines}"
        prepare(dry_dir, [f"127.0.0.1:9/bench/dry{i}:1.0" for i in range(lines)])
        seconds, peak_mb = dry_run(dry_dir, args.cores)
        first = first or (lines, seconds)
        per_line = (seconds / lines) / (first[1] / first[0])  # 1.0 is linear growth
        extra = f"peak RSS {peak_mb} MB; per line {per_line:.2f}x the {first[0]}-line run"
        rows.append(Row(f"dry run, {lines} lines", seconds, "", 0,
                        "<= 8 s, <= 400 MB at 10,000", extra=extra))  # fmt: skip
    return rows


def archive_job(workdir: Path, cores: int, tar_seconds: float) -> list[Row]:
    """The archive job as users meet it: a rerun with another `compress`, minus a no-op rerun,
    against `tar | cat > file` of the same cache (throughput ratio: tar's seconds / ours)."""
    config = json.loads((workdir / "config.yaml").read_text())
    rows = []
    snakemake(workdir, cores)  # the first archive (gzip), so that the next run is a no-op
    noop, _ = snakemake(workdir, cores)
    for compress in ("zstd", "gzip"):
        for old in workdir.glob("saved-images.tar.*"):
            old.unlink()  # so that the gzip rerun rebuilds
        (workdir / "config.yaml").write_text(json.dumps({**config, "compress": compress}))
        seconds, _ = snakemake(workdir, cores)
        job = max(seconds - noop, 1e-3)
        rows.append(Row(f"archive job {compress} through Snakemake, speed vs tar | cat > file",
                        tar_seconds, "seconds of the job (rerun minus no-op rerun)", job,
                        ">= 0.5x, aim 0.8x", extra=f"no-op rerun {noop:.2f} s"))  # fmt: skip
    (workdir / "config.yaml").write_text(json.dumps(config))
    return rows


def write_results(rows: list[Row]) -> None:
    print(f"\n{len(os.sched_getaffinity(0))} cores; ratio = value / baseline, same data, same run")
    print(f"{'measurement':58} {'value':>9} {'baseline':>9} {'ratio':>6}  target")
    for row in rows:
        if row.baseline == "MB":
            value = f"{row.seconds:.0f} MB"
            print(f"{row.measurement:58} {value:>9} {'':>9} {'':>6}  {row.target}")
            continue
        ratio = f"{row.ratio:.2f}x" if row.baseline_seconds else ""
        base = f"{row.baseline_seconds:.2f}s" if row.baseline_seconds else ""
        print(f"{row.measurement:58} {row.seconds:8.2f}s {base:>9} {ratio:>6}  {row.target}"
              f"{'  ' + row.extra if row.extra else ''}")  # fmt: skip
        if row.baseline_seconds:
            print(f"{'':60}baseline: {row.baseline}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "save.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["measurement", "value", "baseline", "baseline_value", "ratio", "target"])
        for row in rows:
            ratio = f"{row.ratio:.3f}" if row.baseline_seconds else ""
            writer.writerow([row.measurement, f"{row.seconds:.3f}", row.baseline,
                             f"{row.baseline_seconds:.3f}", ratio, row.target])  # fmt: skip
    plot(rows)


def plot(rows: list[Row]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    timed = [r for r in rows if r.baseline != "MB"]
    labels = [r.measurement[:48] for r in timed]
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(timed) + 1.5))
    positions = range(len(timed))
    ax.barh([p + 0.2 for p in positions], [r.seconds for r in timed], 0.4, label="this workflow")
    ax.barh([p - 0.2 for p in positions], [r.baseline_seconds for r in timed], 0.4,
            label="baseline")  # fmt: skip
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "save.png", dpi=100)
    print(f"plot written to {RESULTS / 'save.png'}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--layer-kb", type=int, default=1300, help="size of each layer")
    parser.add_argument("--noop-images", type=int, default=1000)
    parser.add_argument("--dry-lines", type=int, default=10_000)
    parser.add_argument("--cores", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="save-bench-") as temp:
        rows = run(args, Path(temp))
    write_results(rows)
    print(f"CSV written to {RESULTS / 'save.csv'}")


if __name__ == "__main__":
    os.environ.pop("SOURCE_USERNAME", None)
    os.environ.pop("SOURCE_PASSWORD", None)
    main()
