#!/usr/bin/env python3
"""Print `running`, `success` or `failed` for a Slurm job id.

Called by snakemake-executor-plugin-cluster-generic as `status.py JOBID`, every few seconds for
every job in flight. Asks scontrol (which knows a job until MinJobAge seconds after its end),
then sacct (Slurm's accounting database, where there is one). A controller that does not answer
means `running`: Snakemake asks again later rather than failing the run.
"""

from __future__ import annotations

import subprocess
import sys

ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
}
TIMEOUT_S = 30


def verdict(state: str) -> str:
    state = state.split()[0].rstrip("+") if state.strip() else ""
    if state == "COMPLETED":
        return "success"
    return "running" if state in ACTIVE else "failed"


def scontrol_state(job_id: str) -> str | None:
    """JobState, "" when the controller no longer knows the job, None when it did not answer."""
    done = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if done.returncode != 0:
        return "" if "Invalid job id" in done.stderr else None
    for field in done.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return None


def sacct_state(job_id: str) -> str | None:
    try:
        done = subprocess.run(
            ["sacct", "--noheader", "--parsable2", "--allocations", "--format=State"]
            + ["--jobs", job_id],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    return lines[0] if done.returncode == 0 and lines else None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: status.py JOBID", file=sys.stderr)
        return 2
    job_id = argv[0]
    try:
        state = scontrol_state(job_id)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"scontrol: {error}", file=sys.stderr)
        state = None
    if state == "":  # past MinJobAge: only the accounting database still knows it
        state = sacct_state(job_id)
        if not state:
            print(f"job {job_id}: unknown to scontrol and sacct", file=sys.stderr)
            state = "UNKNOWN"
    if state is None:
        print(f"job {job_id}: the controller did not answer; asking again later", file=sys.stderr)
        print("running")
    else:
        print(verdict(state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
