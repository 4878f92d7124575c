#!/usr/bin/env python3
"""Submit one Snakemake job script with sbatch and print its Slurm job id.

Called by snakemake-executor-plugin-cluster-generic as `submit.py JOBSCRIPT`. What the job needs
comes from the script's `# properties = {...}` line: threads (or the cpus_per_task resource),
mem_mb, runtime (minutes), slurm_partition, slurm_account and slurm_extra. Slurm's output goes
to logs/cluster/<job id>.log in the working directory.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

LOG_DIR = Path("logs/cluster")
NAME_PREFIX = "hangar-save"


def job_properties(jobscript: Path) -> dict[str, Any]:
    for line in jobscript.read_text().splitlines():
        if line.startswith("# properties = "):
            properties: dict[str, Any] = json.loads(line.split("=", 1)[1])
            return properties
    raise SystemExit(f"{jobscript}: no '# properties = ' line: not a Snakemake job script")


def sbatch_command(properties: dict[str, Any], jobscript: Path) -> list[str]:
    resources = properties.get("resources", {})
    name = properties.get("rule") or f"group-{properties.get('groupid', 'job')}"
    cpus = resources.get("cpus_per_task") or properties.get("threads") or 1
    command = [
        "sbatch",
        "--parsable",
        f"--job-name={NAME_PREFIX}-{name}",
        f"--cpus-per-task={int(cpus)}",
        f"--output={LOG_DIR.absolute()}/%j.log",
    ]
    if mem_mb := resources.get("mem_mb"):
        command.append(f"--mem={int(mem_mb)}")
    if runtime := resources.get("runtime"):
        command.append(f"--time={int(runtime)}")
    if partition := resources.get("slurm_partition"):
        command.append(f"--partition={partition}")
    if account := resources.get("slurm_account"):
        command.append(f"--account={account}")
    if extra := resources.get("slurm_extra"):
        command += shlex.split(str(extra))
    return [*command, str(jobscript)]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: submit.py JOBSCRIPT", file=sys.stderr)
        return 2
    jobscript = Path(argv[0])
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        sbatch_command(job_properties(jobscript), jobscript), capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"sbatch failed ({done.returncode}): {done.stderr.strip()}", file=sys.stderr)
        return 1
    print(done.stdout.strip().split(";")[0])  # --parsable: "id" or "id;cluster"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
