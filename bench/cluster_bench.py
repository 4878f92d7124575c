"""A large list on Slurm: submissions, wall time and what each job asked for and used.

    python bench/cluster_bench.py [--images 2000] [--profile profiles/slurm] [--local-cores 2]

As root on Debian with slurm-wlm and munge (bash dev/setup.sh --tests): starts a registry on
127.0.0.1 with one tiny single-platform image tagged --images times, and a single-node Slurm
cluster with this machine's CPUs (tests/support/slurm.py), then saves the list with the shipped
profile as a cluster without accounting runs it (`--slurm-status-command squeue
--slurm-no-account`; `--profile profiles/cluster-generic` for the generic executor, whose own
scripts call sbatch). Prints the number of Slurm submissions, the wall time, each kind of job's
request (CPUs, memory, time limit from `scontrol show job`), its run time per image and its peak
memory (the summed RSS of the job's processes, polled from /proc), and the load averages of the
machine before and after (other work on it inflates the wall time). With --local-cores N the
same list is then saved again without Slurm (`--cores N`, a fresh cache, the same registry) for
comparison. Writes bench/results/cluster-IMAGES.csv and removes its temporary data.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from save_bench import add_tags, prepare  # noqa: E402
from support.images import push_image  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.slurm import SlurmCluster  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LAYER_BYTES = 4096


class JobUsage:
    """Per Slurm job of one cluster, read from /proc: the peak summed RSS (MB) of its processes,
    and the CPU seconds they used (as last seen: a process's last 0.2 s, and processes shorter
    than that, are missed, so this is a lower bound). A process belongs to the cluster whose
    configuration its SLURM_CONF names: job ids of clusters side by side (tests) overlap."""

    TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, conf_file: str) -> None:
        self._conf = f"SLURM_CONF={conf_file}".encode()
        self.peaks: dict[str, float] = {}
        self._ticks: dict[tuple[str, str, str], int] = {}  # (job, pid, start time): CPU ticks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _job_of(self, pid: Path) -> str | None:
        try:
            environ = (pid / "environ").read_bytes().split(b"\0")
        except OSError:
            return None
        if self._conf not in environ:
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
                    fields = (pid / "stat").read_text().rpartition(")")[2].split()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        totals[job] += int(line.split()[1]) / 1024
                # utime, stime and starttime: fields 14, 15 and 22 of /proc/PID/stat
                self._ticks[(job, pid.name, fields[19])] = int(fields[11]) + int(fields[12])
            for job, mb in totals.items():
                self.peaks[job] = max(self.peaks.get(job, 0.0), mb)
            time.sleep(0.2)

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """Peak RSS (MB) and CPU seconds, per job id."""
        self._stop.set()
        self._thread.join()
        cpu: Counter[str] = Counter()
        for (job, _, _), ticks in self._ticks.items():
            cpu[job] += ticks / self.TICKS
        return self.peaks, dict(cpu)


def load_averages() -> str:
    return " ".join(f"{load:.1f}" for load in os.getloadavg())


def seconds_of(slurm_time: str) -> int:
    """Slurm's [D-]HH:MM:SS (or MM:SS) as seconds."""
    days, _, clock = slurm_time.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def local_save(refs: list[str], cores: int, work: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the same list saved without Slurm, with ``--cores``."""
    workdir = work / "local"
    prepare(workdir, refs, retry_delay=0.1)
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--cores", str(cores),
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"local snakemake failed:\n{(done.stdout + done.stderr)[-4000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu


def run(images: int, profile: Path, work: Path, local_cores: int | None) -> list[dict[str, object]]:
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
        load_before = load_averages()
        usage = JobUsage(slurm.env["SLURM_CONF"])
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=slurm.environ())
        seconds = time.perf_counter() - start
        peaks, cpu = usage.stop()
        load_after = load_averages()
        if done.returncode != 0:
            raise SystemExit(f"snakemake failed:\n{(done.stdout + done.stderr)[-4000:]}")
        log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text()
        job_ids = re.findall(r"(?:with SLURM jobid|with external jobid) '?(\d+)", log)
        saved = len(list((workdir / "saved-image-cache" / ".hangar" / "status").glob("*.json")))
        # A group job's time limit is the profile's runtime per image times its images.
        settings = yaml.safe_load((profile / "config.yaml").read_text())
        minutes_per_image = int(settings["set-resources"]["save_image"]["runtime"])
        rows: list[dict[str, object]] = []
        for job_id in job_ids:
            job = slurm.job(job_id)
            comment = job.get("Comment", "(null)")
            kind = comment.removeprefix("rule_") if comment != "(null)" else job["JobName"]
            limit, ran = seconds_of(job["TimeLimit"]), seconds_of(job["RunTime"])
            in_job = limit // (60 * minutes_per_image) if "image" in kind else 0
            rows.append(
                {
                    "job": job_id,
                    "kind": kind,
                    "cpus": job.get("NumCPUs", "?"),
                    "mem": job.get("MinMemoryNode", "?"),
                    "time_limit": job["TimeLimit"],
                    "run_time_s": ran,
                    "images": in_job,
                    "s_per_image": round(ran / in_job, 2) if in_job else "",
                    "cpu_s": round(cpu.get(job_id, 0.0), 1),
                    "peak_rss_mb": round(peaks.get(job_id, 0.0)),
                }
            )
        print(f"{images} images ({saved} statuses), {len(job_ids)} Slurm submissions, ", end="")
        print(f"wall time {seconds:.0f} s ({seconds / images:.2f} s per image), ", end="")
        print(f"on {slurm.cpus} CPUs; load averages {load_before} before, {load_after} after")
        for kind in sorted({str(row["kind"]) for row in rows}):
            mine = [row for row in rows if row["kind"] == kind]
            requests = sorted({(r["cpus"], r["mem"], r["time_limit"]) for r in mine})
            peak = max(int(str(row["peak_rss_mb"])) for row in mine)
            print(f"  {kind}: {len(mine)} jobs; asked (CPUs, memory, time) {requests}; ", end="")
            if in_groups := sum(int(str(row["images"])) for row in mine):
                busy = sum(int(str(row["run_time_s"])) for row in mine)
                used = sum(float(str(row["cpu_s"])) for row in mine)
                print(f"{busy / in_groups:.2f} s per image inside a job, ", end="")
                print(f"of which >= {used / in_groups:.2f} s of CPU; ", end="")
            print(f"peak RSS {peak} MB")
        summary: list[dict[str, object]] = [
            {
                "job": "total", "kind": f"{images} images", "cpus": slurm.cpus, "mem": "",
                "time_limit": f"load {load_before} / {load_after}",
                "run_time_s": round(seconds, 1), "images": images,
                "s_per_image": round(seconds / images, 2), "cpu_s": "",
                "peak_rss_mb": len(job_ids),
            }
        ]  # fmt: skip
        if local_cores:
            load_before = load_averages()
            local, local_cpu = local_save(refs, local_cores, work)
            load_after = load_averages()
            print(f"the same list without Slurm (--cores {local_cores}): {local:.0f} s ", end="")
            print(
                f"({local / images:.2f} s, {local_cpu / images:.2f} s of CPU per image); ", end=""
            )
            print(f"load averages {load_before} ", end="")
            print(f"before, {load_after} after")
            summary.append(
                {
                    "job": "local", "kind": f"--cores {local_cores}", "cpus": local_cores,
                    "mem": "", "time_limit": f"load {load_before} / {load_after}",
                    "run_time_s": round(local, 1), "images": images,
                    "s_per_image": round(local / images, 2), "cpu_s": round(local_cpu, 1),
                    "peak_rss_mb": "",
                }
            )  # fmt: skip
        return [*rows, *summary]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--profile", type=Path, default=ROOT / "profiles" / "slurm")
    parser.add_argument(
        "--local-cores", type=int, metavar="N", help="then save the same list locally, --cores N"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hangar-cluster-bench-") as work:
        rows = run(args.images, args.profile.resolve(), Path(work), args.local_cores)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = RESULTS / f"cluster-{args.images}.csv"
    with table.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {table} (row total: wall seconds, submissions in peak_rss_mb)")


if __name__ == "__main__":
    main()
