"""Cost of a large list: dry run and no-op rerun at several sizes, against Snakemake's own floor.

    python bench/scale_bench.py [--sizes 1000,3000,10000] [--cores 20] [--work DIR]

For each size N, side by side with a trivial Snakefile of N jobs (one rule, one output per
wildcard, a `run:` block; what Snakemake itself costs for N jobs):

* `snakemake -n` of an N-line list that nothing was saved of, and of the trivial Snakefile;
* a no-op rerun of a real saved cache of N images (every image saved by the workflow, the
  archive written), and a rerun of the trivial Snakefile whose N outputs all exist.

The saved caches are real: one tiny one-platform image in a local registry, tagged N times,
saved by the workflow; sizes are run in increasing order, each list extending the previous one
(the larger save resumes the smaller). With ``--work DIR`` the registry data and the caches are
kept there and reused by the next run (only the missing images are saved). Prints seconds and
peak RSS (of the snakemake process, from wait4) of every run, the ratio to the floor, and the
growth per line against the smallest size (1.00 is linear).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from save_bench import add_tags, prepare  # noqa: E402
from support.images import LINUX_AMD64, push_image  # noqa: E402
from support.registry import Registry  # noqa: E402

from hangar.imagelist import parse_reference  # noqa: E402

TRIVIAL = """\
N = int(config["n"])


rule all:
    input:
        expand("out/{i}.txt", i=range(N)),


rule one:
    output:
        "out/{i}.txt",
    run:
        open(output[0], "w").close()
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float  # user + system seconds: what the run costs, whatever else loads the machine
    peak_mb: float


def timed(command: list[str], cwd: Path) -> Run:
    """Wall seconds and peak RSS of one snakemake process (its own, from wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed in {cwd}:\n{output.decode()[-4000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


WORKFLOW = ROOT  # the checkout measured (--workflow)


def ours(workdir: Path, cores: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(WORKFLOW / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), *extra,
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip


def trivial(workdir: Path, lines: int, cores: int, *extra: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(TRIVIAL)
    (workdir / "config.yaml").write_text(json.dumps({"n": lines}))
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores), *extra,
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip


def measure(args: argparse.Namespace, work: Path) -> list[tuple[int, dict[str, Run]]]:
    sizes = sorted(int(size) for size in args.sizes.split(","))
    results = []
    port_file = work / "registry-port"  # the same port again: the saved references stay valid
    port = int(port_file.read_text()) if port_file.exists() else None
    with Registry(work / "registry", port=port) as registry:
        host = registry.host
        port_file.write_text(str(registry.port))
        tags_file = work / "tags.json"
        tags: list[str] = json.loads(tags_file.read_text()) if tags_file.exists() else []
        small = push_image(host, "bench/scale", "1", [LINUX_AMD64], kind="oci-single",
                           base_seed="scale", layer_size=256)  # fmt: skip
        if len(tags) < sizes[-1]:
            print(f"tagging {sizes[-1]} images ...", file=sys.stderr)
            # the registry keeps the tags: only the list of references is rebuilt
            tags = add_tags(host, small, sizes[-1])
            tags_file.write_text(json.dumps(tags))
        saved = work / "saved"
        real = min(sizes[0], args.real)
        for lines in sizes:
            row: dict[str, Run] = {}
            dry_dir = work / f"dry{lines}"
            prepare(dry_dir, [f"127.0.0.1:9/bench/dry{i}:1.0" for i in range(lines)])
            print(f"{lines}: dry run ...", file=sys.stderr)
            row["dry run"] = timed(ours(dry_dir, args.cores, "-n"), work)
            floor_dir = work / f"floor{lines}"
            shutil.rmtree(floor_dir / "out", ignore_errors=True)  # nothing made yet
            row["floor dry run"] = timed(trivial(floor_dir, lines, args.cores, "-n"), work)
            # the trivial workflow, all outputs present: its no-op rerun (no metadata records
            # to read, unlike a real no-op: the floor is a little low)
            (floor_dir / "out").mkdir(exist_ok=True)
            for i in range(lines):
                (floor_dir / "out" / f"{i}.txt").touch()
            row["floor no-op"] = timed(trivial(floor_dir, lines, args.cores), work)

            if not (saved / "images.txt").exists():
                prepare(saved, tags[:real])
                print(f"saving {real} images ...", file=sys.stderr)
                save = timed(ours(saved, args.cores), work)
                print(f"{real} images saved in {save.seconds:.0f} s", file=sys.stderr)
            clone_saves(saved, tags[:lines])
            prepare(saved, tags[:lines])
            jobs = len(list((saved / "logs" / "save").iterdir()))
            print(f"{lines}: saved list, archive and report ...", file=sys.stderr)
            timed(ours(saved, args.cores), work)
            listed = json.loads(
                (saved / "saved-image-cache" / "saved-images-list.json").read_text()
            )
            assert len(listed["List"]) == lines, "not every image was saved"
            assert not (saved / "save-failed.txt").exists(), "some images failed"
            assert len(list((saved / "logs" / "save").iterdir())) == jobs, "images saved again"
            row["no-op rerun"] = timed(ours(saved, args.cores), work)
            results.append((lines, row))
            report([(lines, row)], header=lines == sizes[0])
    return results


def clone_saves(workdir: Path, tags: list[str]) -> None:
    """What the image jobs would have written for ``tags`` (all of them one image, tagged
    again), copied from the save of the first tag: status file, folder, claim and Snakemake's
    metadata record. The next run checks every one of them as it checks any save (a save it
    does not trust is redone, which the caller asserts does not happen)."""
    cache = workdir / "saved-image-cache"
    template_id = parse_reference(tags[0]).image_id
    status = json.loads((cache / ".hangar" / "status" / f"{template_id}.json").read_text())
    folder = status["saved"][0]["Folder"]
    meta_dir = workdir / ".snakemake" / "metadata"
    meta = json.loads((meta_dir / _meta_name(template_id)).read_text())
    for line, tag in enumerate(tags, 1):
        ref = parse_reference(tag)
        image_id = ref.image_id
        status_path = cache / ".hangar" / "status" / f"{image_id}.json"
        if status_path.exists():
            continue
        new_folder = hashlib.sha256(f"{ref.source}:{ref.tag}-amd64".encode()).hexdigest()
        (cache / new_folder).mkdir(exist_ok=True)
        (cache / new_folder / "blobs").mkdir(exist_ok=True)
        for name in ("index.json", "oci-layout"):
            shutil.copyfile(cache / folder / name, cache / new_folder / name)
        claim = {"image_id": image_id, "reference": str(ref), "lines": [line]}
        (cache / ".hangar" / "claims" / new_folder).write_text(json.dumps(claim))
        saved = [{**status["saved"][0], "Folder": new_folder}]
        status_path.write_text(json.dumps(
            {**status, "reference": str(ref), "source": ref.source, "tag": ref.tag, "saved": saved},
            indent=1,
        ))  # fmt: skip
        record = {**meta, "params": [repr(str(ref)), *meta["params"][1:]],
                  "log": [f"logs/save/{image_id}.log"]}  # fmt: skip
        (meta_dir / _meta_name(image_id)).write_text(json.dumps(record))


def _meta_name(image_id: str) -> str:
    path = f"saved-image-cache/.hangar/status/{image_id}.json"
    return base64.b64encode(path.encode()).decode()


PAIRS = [("dry run", "floor dry run"), ("no-op rerun", "floor no-op")]


def report(results: list[tuple[int, dict[str, Run]]], header: bool = True) -> None:
    if header:
        print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f};"
              " wall s / CPU s (user+system) / peak RSS; ratio = ours / floor")  # fmt: skip
    for lines, row in results:
        for ours_name, floor_name in PAIRS:
            mine, floor = row[ours_name], row[floor_name]
            print(f"{lines:6} {ours_name:12} {mine.seconds:6.2f} s {mine.cpu:6.2f} s CPU"
                  f" {mine.peak_mb:4.0f} MB | floor {floor.seconds:6.2f} s {floor.cpu:6.2f} s CPU"
                  f" {floor.peak_mb:4.0f} MB | {mine.cpu / floor.cpu:.2f}x CPU,"
                  f" +{mine.cpu - floor.cpu:.2f} s", flush=True)  # fmt: skip


def growth(results: list[tuple[int, dict[str, Run]]]) -> None:
    first_lines, first = results[0]
    print(f"CPU seconds per line against the {first_lines}-line run (1.00 = linear):")
    for lines, row in results[1:]:
        cells = "  ".join(
            f"{name} {(row[name].cpu / lines) / (first[name].cpu / first_lines):.2f}"
            for pair in PAIRS
            for name in pair
        )
        print(f"{lines:6}  {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--cores", type=int, default=20, help="for the saves and the runs")
    parser.add_argument(
        "--real",
        type=int,
        default=1000,
        help="images saved by the workflow; the others are copies of those saves",
    )
    parser.add_argument(
        "--workflow",
        type=Path,
        default=ROOT,
        help="checkout whose Snakefile is measured (another version)",
    )
    parser.add_argument("--work", type=Path, help="keep registry and caches here, reuse them")
    args = parser.parse_args()
    global WORKFLOW
    WORKFLOW = args.workflow.resolve()
    os.environ["PYTHONPATH"] = str(WORKFLOW)  # its package, not the installed one
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        results = measure(args, args.work.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as temp:
            results = measure(args, Path(temp))
    growth(results)


if __name__ == "__main__":
    os.environ.pop("SOURCE_USERNAME", None)
    os.environ.pop("SOURCE_PASSWORD", None)
    main()
