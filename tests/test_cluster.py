"""The save on a cluster gives what a local save gives.

Through Slurm: a single-node cluster started on this machine (support.slurm) runs the save with
the profile of profiles/slurm (snakemake-executor-plugin-slurm), edited as a user edits it for
a cluster without accounting; and the profile of profiles/cluster-generic, whose own scripts
submit with sbatch. Without Slurm: profiles/cluster-generic with a stand-in batch system that
runs each job script detached on this machine, so the cluster path (jobs that re-parse the
workflow in other processes, files exchanged only through the shared directory) is covered
wherever the registry tests run.

Each cluster run is compared with one local run of the same list: the same saved-images-list
(but SavedTime), failed list, statuses and cache files, and the same archive bytes once the
local run's list carries the cluster run's SavedTime (the archive's mtimes come from it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.images import PushedImage
from support.registry import Registry
from support.slurm import SlurmCluster, SlurmUnavailable, unavailable_reason
from workflow import REPO, SNAKEFILE, run_workflow, saved_list, write_list

pytestmark = pytest.mark.slow

CONFIG = {"file": "images.txt", "tls_verify": False, "retry_delay": 0.1}
CACHE = "saved-image-cache"
ARCHIVE = "saved-images.tar.gz"
RUN_TIMEOUT_S = 300
# Pending reasons of a job that waits its turn; any other one fails the test at once.
WAITING_ITS_TURN = {"None", "Resources", "Priority", "BeginTime", "Dependency"}
# What a user of a cluster without accounting adds to the shipped Slurm profile (README).
NO_ACCOUNTING = ("--slurm-status-command", "squeue", "--slurm-no-account")

# A stand-in batch system for the generic cluster executor: each job script runs detached on
# this machine, its pid is the job id, its exit status lands in jobs/<pid>.exit.
LOCAL_SUBMIT = """\
#!/bin/sh
spool="$(dirname "$0")/jobs"
mkdir -p "$spool"
script="$(mktemp "$spool/job.XXXXXX")"
cp "$1" "$script"
sh -c 'sh "$1" > "$2/$$.log" 2>&1; echo $? > "$2/$$.exit.tmp"; mv "$2/$$.exit.tmp" "$2/$$.exit"' \\
    job "$script" "$spool" < /dev/null > /dev/null 2>&1 &
echo "$!"
"""
LOCAL_STATUS = """\
#!/bin/sh
exit_file="$(dirname "$0")/jobs/$1.exit"
if [ ! -f "$exit_file" ] && kill -0 "$1" 2>/dev/null; then echo running; exit 0; fi
sleep 0.2
if [ -f "$exit_file" ] && [ "$(cat "$exit_file")" = 0 ]; then echo success; else echo failed; fi
"""


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A single-node Slurm cluster for the session; its daemons are stopped at the end."""
    if reason := unavailable_reason():
        pytest.skip(f"no local Slurm cluster: {reason}")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except SlurmUnavailable as error:
        pytest.skip(str(error))
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.running()


@pytest.fixture(scope="module")
def image_lines(registry: Registry, sample_images: dict[str, PushedImage]) -> list[str]:
    """The catalogue and one image the registry does not have: 9 image jobs."""
    return [image.ref for image in sample_images.values()] + [f"{registry.host}/rancher/gone:1"]


@pytest.fixture(scope="module")
def local_save(tmp_path_factory: pytest.TempPathFactory, image_lines: list[str]) -> Path:
    workdir = tmp_path_factory.mktemp("local-save")
    write_list(workdir, image_lines)
    run_workflow(workdir, CONFIG)
    return workdir


# -- helpers ------------------------------------------------------------------------------------


def edited_profile(name: str, target: Path, **edits: Any) -> Path:
    """A copy of profiles/<name> with some keys changed, as a user adapts it to a cluster."""
    profile = target / f"profile-{name}"
    shutil.copytree(REPO / "profiles" / name, profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings.update({key.replace("_", "-"): value for key, value in edits.items()})
    (profile / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return profile


def run_with_profile(
    workdir: Path,
    lines: list[str],
    profile: Path,
    *options: str,
    env: dict[str, str] | None = None,
    stuck: Callable[[], str | None] | None = None,
) -> tuple[int, str]:
    """Run the save with ``--profile`` (and no --cores/--jobs: the profile sets them).

    ``stuck``, polled while the run goes on, names a job that will never start: the run is
    stopped and the test fails at once. Returns the pid of the main snakemake process and its
    output; fails with the output.
    """
    write_list(workdir, lines)
    config_file = workdir / "test-config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    command += ["--directory", str(workdir), "--profile", str(profile), *options]
    command += ["--configfile", str(config_file)]
    log = workdir / "snakemake-output.txt"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        problem = None
        while process.poll() is None and problem is None:
            if time.monotonic() > deadline:
                problem = f"snakemake did not finish in {RUN_TIMEOUT_S}s"
            elif stuck is not None:
                problem = stuck()
            time.sleep(1)
        if problem is not None:
            process.terminate()
            process.wait(timeout=60)
    output = log.read_text()
    if problem is not None:
        raise AssertionError(f"{problem}\n{output[-6000:]}")
    if process.returncode != 0:
        raise AssertionError(f"snakemake failed ({process.returncode}):\n{output[-6000:]}")
    return process.pid, output


def pending_for_good(slurm: SlurmCluster) -> Callable[[], str | None]:
    """A job pending for a reason other than waiting its turn never runs (PartitionConfig:
    it asks more than a node has; ReqNodeNotAvail, AssocMaxJobsLimit, …)."""

    def check() -> str | None:
        done = slurm.client("squeue", "--noheader", "--states=PENDING", "--format=%i %r")
        for line in done.stdout.splitlines():
            job_id, reason = line.split(maxsplit=1)
            if reason not in WAITING_ITS_TURN:
                job = slurm.client("scontrol", "show", "job", job_id).stdout
                return f"Slurm job {job_id} pends for good ({reason}):\n{job}"
        return None

    return check


def profile_settings(name: str) -> dict[str, Any]:
    settings: dict[str, Any] = yaml.safe_load(
        (REPO / "profiles" / name / "config.yaml").read_text()
    )
    return settings


def documented_requests(name: str, images: int) -> dict[str, dict[str, str]]:
    """What the profile says each job asks for, as `scontrol show job` prints it."""
    settings = profile_settings(name)
    image, archive = settings["set-resources"]["save_image"], settings["set-resources"]["archive"]
    assert settings["cores"] == 1  # one image per layer: the group's width is one image
    per_group = min(images, settings["group-components"]["images"])
    return {
        "rule_images_save_image": {
            "NumCPUs": "1",
            "MinMemoryNode": f"{image['mem_mb']}M",
            "TimeLimit": slurm_minutes(image["runtime"] * per_group),
        },
        "rule_archive": {
            "NumCPUs": str(archive["cpus_per_task"]),
            "MinMemoryNode": f"{archive['mem_mb']}M",
            "TimeLimit": slurm_minutes(archive["runtime"]),
        },
    }


def slurm_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def asked(job: dict[str, str]) -> dict[str, str]:
    return {key: job[key] for key in ("NumCPUs", "MinMemoryNode", "TimeLimit")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_files(workdir: Path) -> dict[str, str]:
    """Content hashes of the saved folders and blobs (the run's own state under .hangar aside)."""
    cache = workdir / CACHE
    return {
        str(path.relative_to(cache)): sha256(path)
        for path in sorted(cache.rglob("*"))
        if path.is_file()
        and path.relative_to(cache).parts[0] != ".hangar"
        and path.name != "saved-images-list.json"
    }


def statuses(workdir: Path) -> dict[str, dict[str, Any]]:
    """Per image: what its job found and saved (durations and retries aside)."""
    found = {}
    for path in sorted((workdir / CACHE / ".hangar" / "status").glob("*.json")):
        data = json.loads(path.read_text())
        found[path.name] = {key: data[key] for key in ("state", "saved", "available", "missing")}
    return found


def without_saved_time(workdir: Path) -> dict[str, Any]:
    document = saved_list(workdir / CACHE)
    del document["SavedTime"]
    return document


def archive_with_saved_time(local: Path, saved_time: str, target: Path) -> Path:
    """The local save, copied, its list given ``saved_time``, and its archive rebuilt locally."""
    copy = target / "local-with-same-time"
    shutil.copytree(local, copy, symlinks=True)
    listing = copy / CACHE / "saved-images-list.json"
    text = listing.read_text()
    own_time = json.loads(text)["SavedTime"]
    assert text.count(json.dumps(own_time)) == 1
    listing.write_text(text.replace(json.dumps(own_time), json.dumps(saved_time)))
    run_workflow(copy, CONFIG)
    return copy


def assert_same_save(local: Path, cluster: Path, tmp_path: Path) -> None:
    assert without_saved_time(cluster) == without_saved_time(local)
    assert (cluster / "save-failed.txt").read_text() == (local / "save-failed.txt").read_text()
    assert statuses(cluster) == statuses(local)
    assert cache_files(cluster) == cache_files(local)
    for blob in (cluster / CACHE / "share" / "sha256").iterdir():  # concurrent writers: whole
        assert sha256(blob) == blob.name
    assert sorted(p.name for p in (cluster / "logs" / "save").iterdir()) == sorted(
        p.name for p in (local / "logs" / "save").iterdir()
    )
    # The archive: byte for byte, once both lists carry the same SavedTime.
    same_time = archive_with_saved_time(local, saved_list(cluster / CACHE)["SavedTime"], tmp_path)
    assert (same_time / CACHE / "saved-images-list.json").read_bytes() == (
        cluster / CACHE / "saved-images-list.json"
    ).read_bytes()
    assert sha256(cluster / ARCHIVE) == sha256(same_time / ARCHIVE)
    assert (cluster / f"{ARCHIVE}.sha256").read_text() == (
        same_time / f"{ARCHIVE}.sha256"
    ).read_text()


def run_lock_holder(workdir: Path) -> str:
    return (workdir / CACHE / ".hangar" / "run.lock").read_text().strip()


def main_log(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1].read_text()


# -- Slurm --------------------------------------------------------------------------------------


@pytest.mark.slurm
def test_save_through_slurm_equals_a_local_save(
    slurm: SlurmCluster,
    local_save: Path,
    image_lines: list[str],
    tmp_path: Path,
) -> None:
    """The shipped profile as it is (its group size, its requests) on a node of this machine."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    profile = REPO / "profiles" / "slurm"
    pid, output = run_with_profile(
        workdir,
        image_lines,
        profile,
        *NO_ACCOUNTING,
        "--slurm-keep-successful-logs",  # to look at
        env=slurm.environ(),
        stuck=pending_for_good(slurm),
    )

    # The jobs went through Slurm: the log names their Slurm ids, the controller knows them
    # as this run's finished jobs, run in this working directory.
    log = main_log(workdir)
    run_id = re.search(r"SLURM run ID: (hangar-save_\S+)", log)  # the profile's prefix
    assert run_id, log[-3000:]
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    history = slurm.history()
    requests = documented_requests("slurm", len(image_lines))
    comments = []
    for job_id in job_ids:
        job = slurm.job(job_id)
        assert job["JobState"] == "COMPLETED", job
        assert job["ExitCode"] == "0:0", job
        assert job["JobName"] == run_id[1]
        assert Path(job["WorkDir"]) == workdir
        assert history[job_id]["JobState"] == "COMPLETED"
        # What sbatch asked for is what the profile documents.
        assert asked(job) == requests[job["Comment"]], job
        comments.append(job["Comment"])
        kept = list((workdir / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))
        assert len(kept) == 1, f"no Slurm log of job {job_id}"
        assert f"Host: {slurm.node}" in kept[0].read_text()
        if job["Comment"] == "rule_images_save_image":
            # How the plugin runs a group (README, "Slurm"), which the group's request rests
            # on: its snakemake runs one image at a time, each in a snakemake process of its own.
            group_log = kept[0].read_text()
            assert group_log.count("Provided remote nodes: 1\n") == 1, group_log[-3000:]
            members = re.findall(r"--target-jobs save_image:image=(\S+) --allowed-rules", group_log)
            assert len(members) == len(set(members)) == len(image_lines), group_log[-3000:]
    # 9 images, one group job; then the archive (the lists and the report are local rules).
    assert sorted(comments) == ["rule_archive", "rule_images_save_image"]
    assert slurm.queued() == []
    # Only the main process holds the run lock; the jobs (which re-parse the workflow in
    # other processes while it is held) neither take it nor fail for it.
    assert run_lock_holder(workdir) == f"pid {pid}"

    assert_same_save(local_save, workdir, tmp_path)


@pytest.mark.slurm
def test_cluster_generic_profile_submits_with_sbatch(
    slurm: SlurmCluster,
    local_save: Path,
    image_lines: list[str],
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    profile = REPO / "profiles" / "cluster-generic"
    run_with_profile(
        workdir,
        image_lines,
        profile,
        "--seconds-between-status-checks",
        "1",
        env=slurm.environ(),
        stuck=pending_for_good(slurm),
    )

    job_ids = re.findall(r"with external jobid '(\d+)'", main_log(workdir))
    assert len(job_ids) == 2  # one group job, the archive
    requests = documented_requests("cluster-generic", len(image_lines))
    names = {
        "hangar-save-group-images": "rule_images_save_image",
        "hangar-save-archive": "rule_archive",
    }
    seen = []
    for job_id in job_ids:
        job = slurm.job(job_id)
        assert slurm.history()[job_id]["JobState"] == "COMPLETED", job
        assert Path(job["WorkDir"]) == workdir
        assert asked(job) == requests[names[job["JobName"]]], job
        seen.append(job["JobName"])
        assert (workdir / "logs" / "cluster" / f"{job_id}.log").is_file()
    assert sorted(seen) == sorted(names)

    assert_same_save(local_save, workdir, tmp_path)


# -- generic cluster executor, no Slurm -------------------------------------------------------


def test_cluster_generic_with_a_stand_in_batch_system(
    local_save: Path, image_lines: list[str], tmp_path: Path
) -> None:
    if importlib.util.find_spec("snakemake_executor_plugin_cluster_generic") is None:
        pytest.skip("snakemake-executor-plugin-cluster-generic is not installed")
    workdir = tmp_path / "work"
    workdir.mkdir()
    profile = edited_profile(
        "cluster-generic",
        tmp_path,
        cluster_generic_submit_cmd="local-submit.sh",
        cluster_generic_status_cmd="local-status.sh",
        cluster_generic_cancel_cmd="kill",
        group_components={"images": 4},  # 9 images: 3 batch jobs
        seconds_between_status_checks=1,
    )
    for name, text in (("local-submit.sh", LOCAL_SUBMIT), ("local-status.sh", LOCAL_STATUS)):
        (profile / name).write_text(text)
        (profile / name).chmod(0o755)
    pid, _ = run_with_profile(workdir, image_lines, profile)

    # Each batch job ran the workflow in a process of its own, with its own log.
    job_ids = re.findall(r"with external jobid '(\d+)'", main_log(workdir))
    assert len(job_ids) == 3 + 1
    spool = profile / "jobs"
    for job_id in job_ids:
        assert (spool / f"{job_id}.exit").read_text().strip() == "0"
        assert "--mode remote" in (spool / f"{job_id}.log").read_text()
    assert run_lock_holder(workdir) == f"pid {pid}"

    assert_same_save(local_save, workdir, tmp_path)


# -- Kubernetes: as far as a machine without a Kubernetes cluster allows ---------------------


def test_kubernetes_profile_plans_the_save(image_lines: list[str], tmp_path: Path) -> None:
    """The profile loads with its plugins and plans the save with the cache at its own path."""
    for plugin in ("snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_fs"):
        if importlib.util.find_spec(plugin) is None:
            pytest.skip(f"{plugin} is not installed (pip install '.[kubernetes]')")
    volume = tmp_path / "data"  # stands for the claim's mount point
    write_list(tmp_path, image_lines)
    config_file = tmp_path / "k8s-config.yaml"
    settings = {"cache": f"{volume}/{CACHE}", "destination": f"{volume}/{ARCHIVE}"}
    config_file.write_text(yaml.safe_dump({**CONFIG, **settings}))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "-n"]
    command += ["--directory", str(tmp_path), "--profile", str(REPO / "profiles" / "kubernetes")]
    command += ["--configfile", str(config_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert re.search(r"save_image\s+9\b", output), output[-3000:]
    assert "Group job images" in output
    # Statuses and the archive record stay at their paths on the volume (prefix /).
    outputs = re.findall(r"output: (\S+)", output)
    statuses = [path for path in outputs if "/.hangar/status/" in path]
    assert len(statuses) == len(image_lines)
    assert all(path.startswith(f"{volume}/{CACHE}/.hangar/status/") for path in statuses)
    assert f"{volume}/{ARCHIVE}.sha256" in outputs
