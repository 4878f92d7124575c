"""A large list on Slurm: submissions, wall time and what each job asked for and used.

    python bench/cluster_bench.py [--images 2000] [--profile profiles/slurm]

As root on Debian with slurm-wlm and munge (bash dev/setup.sh --tests): starts a registry on
127.0.0.1 with one tiny single-platform image tagged --images times, and a single-node Slurm
cluster with this machine's CPUs (tests/support/slurm.py), then saves the list with the shipped
profile as a cluster without accounting runs it (`--slurm-status-command squeue
--slurm-no-account`; `--profile profiles/cluster-generic` for the generic executor, whose own
scripts call sbatch). Prints the number of Slurm submissions, the wall time, each kind of job's
request (CPUs, memory, time limit from `scontrol show job`) and its peak memory (the summed RSS
of the job's processes, polled from /proc), writes bench/results/cluster.csv and removes its
temporary data.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from save_bench import add_tags, prepare  # noqa: E402
from support.images import push_image  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.slurm import SlurmCluster  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LAYER_BYTES = 4096


class JobMemory:
    """Peak summed RSS (MB) of the processes of each Slurm job, read from /proc."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def _job_of(pid: Path) -> str | None:
        try:
            environ = (pid / "environ").read_bytes().split(b"\0")
        except OSError:
            return None
        for entry in environ:
            if entry.startswith(b"SLURM_JOB_ID="):
                return entry.split(b"=", 1)[1].decode()
        return None

    def _poll(self) -> None:
        while not self._stop.is_set():
            totals: Counter[str] = Counter()
            for pid in Path("/proc").iterdir():
                if not pid.name.isdigit() or not (job := self._job_of(pid)):
                    continue
                try:
                    status = (pid / "status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        totals[job] += int(line.split()[1]) / 1024
            for job, mb in totals.items():
                self.peaks[job] = max(self.peaks.get(job, 0.0), mb)
            time.sleep(0.2)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def run(images: int, profile: Path, work: Path) -> list[dict[str, object]]:
    with Registry(work / "registry") as registry, SlurmCluster(work / "slurm") as slurm:
        image = push_image(
            registry.host, "bench/tiny", "1.0", None, kind="docker-single",
            base_seed="tiny", layer_size=LAYER_BYTES,
        )  # fmt: skip
        refs = add_tags(registry.host, image, images)
        workdir = work / "save"
        prepare(workdir, refs, retry_delay=0.1)
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), "--profile", str(profile),
            "--configfile", str(workdir / "config.yaml"),
        ]  # fmt: skip
        if "executor: slurm" in (profile / "config.yaml").read_text():
            command += ["--slurm-status-command", "squeue", "--slurm-no-account"]
        memory = JobMemory()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=slurm.environ())
        seconds = time.perf_counter() - start
        peaks = memory.stop()
        if done.returncode != 0:
            raise SystemExit(f"snakemake failed:\n{(done.stdout + done.stderr)[-4000:]}")
        log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
        job_ids = re.findall(r"(?:with SLURM jobid|with external jobid) '?(\d+)", log)
        saved = len(list((workdir / "saved-image-cache" / ".hangar" / "status").glob("*.json")))
        rows: list[dict[str, object]] = []
        for job_id in job_ids:
            job = slurm.job(job_id)
            rows.append(
                {
                    "job": job_id,
                    "kind": job.get("Comment", "(null)").removeprefix("rule_")
                    if job.get("Comment", "(null)") != "(null)"
                    else job.get("JobName", "?"),
                    "cpus": job.get("NumCPUs", "?"),
                    "mem": job.get("MinMemoryNode", "?"),
                    "time_limit": job.get("TimeLimit", "?"),
                    "run_time": job.get("RunTime", "?"),
                    "peak_rss_mb": round(peaks.get(job_id, 0.0)),
                }
            )
        print(f"{images} images ({saved} statuses), {len(job_ids)} Slurm submissions, ", end="")
        print(f"wall time {seconds:.0f} s, on {slurm.cpus} CPUs")
        kinds = sorted({str(row["kind"]) for row in rows})
        for kind in kinds:
            mine = [row for row in rows if row["kind"] == kind]
            requests = sorted({(r["cpus"], r["mem"], r["time_limit"]) for r in mine})
            peak = max(int(str(row["peak_rss_mb"])) for row in mine)
            print(f"  {kind}: {len(mine)} jobs; asked (CPUs, memory, time) {requests}; ", end="")
            print(f"peak RSS {peak} MB")
        summary = {
            "job": "total", "kind": f"{images} images", "cpus": slurm.cpus,
            "mem": "", "time_limit": "", "run_time": f"{seconds:.1f}",
            "peak_rss_mb": len(job_ids),
        }  # fmt: skip
        return [*rows, summary]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--profile", type=Path, default=ROOT / "profiles" / "slurm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hangar-cluster-bench-") as work:
        rows = run(args.images, args.profile.resolve(), Path(work))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "cluster.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {RESULTS / 'cluster.csv'} (last row: total wall seconds, submissions)")


if __name__ == "__main__":
    main()
